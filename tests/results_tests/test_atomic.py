"""Atomic writes: new content replaces old, failures and SIGKILL never tear the target."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sfprompt
from sfprompt.platform.errors import SfpromptError
from sfprompt.results import atomic
from sfprompt.results.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    read_parquet,
    write_json,
    write_parquet,
)

REPO_ROOT = Path(sfprompt.__file__).resolve().parent.parent


def test_writes_replace_content_and_leave_no_temp_files(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"

    text = tmp_path / "t.txt"
    atomic_write_text(text, "héllo\n")
    assert text.read_bytes() == "héllo\n".encode("utf-8")

    js = tmp_path / "r.json"
    write_json(js, {"a": [1, 2], "b": None})
    write_json(js, {"a": 3})
    assert json.loads(js.read_text()) == {"a": 3}

    pq = tmp_path / "t.parquet"
    df = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    write_parquet(pq, df.iloc[:1])
    write_parquet(pq, df)
    pd.testing.assert_frame_equal(read_parquet(pq), df, check_dtype=False)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "r.json", "t.parquet", "t.txt"]


def test_written_file_gets_umask_mode_not_private_temp_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    write_json(target, {"version": 1})

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_unserialisable_parquet_fails_mid_write_and_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "rounds.parquet"
    good = pd.DataFrame({"round": [0, 1]})
    write_parquet(target, good)
    opened = []
    real_fdopen = os.fdopen

    def spy_fdopen(*args, **kwargs):
        opened.append(args)
        return real_fdopen(*args, **kwargs)

    monkeypatch.setattr(os, "fdopen", spy_fdopen)

    bad = pd.DataFrame({"round": [2], "obj": [object()]})
    with pytest.raises(Exception):  # pyarrow's own type error; the kind is not ours
        write_parquet(target, bad)
    assert opened, "the failure must happen after the temp file exists, or this proves nothing"
    pd.testing.assert_frame_equal(read_parquet(target), good)
    assert [p.name for p in tmp_path.iterdir()] == ["rounds.parquet"]


def test_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {"a": object()})
    with pytest.raises(Exception):
        write_parquet(tmp_path / "x.parquet", pd.DataFrame({"obj": [object()]}))
    assert list(tmp_path.iterdir()) == []


def test_read_parquet_names_missing_file(tmp_path):
    with pytest.raises(SfpromptError, match="nope.parquet"):
        read_parquet(tmp_path / "nope.parquet")


def test_temp_names_are_unique_and_beside_target(tmp_path):
    target = tmp_path / "a.parquet"
    names = {atomic._temp_path(target) for _ in range(100)}
    assert len(names) == 100
    assert all(p.parent == tmp_path and p.name.startswith(".a.parquet.") for p in names)


# The child rewrites one file over and over; every version is N rows whose content
# depends on (writer, version), so a torn or mixed file cannot pass the check below.
N_ROWS = 300_000
_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd
    from sfprompt.results.atomic import write_parquet
    target, writer, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x = np.arange(n, dtype=np.int64)
    version = 0
    while True:
        df = pd.DataFrame({"writer": writer, "version": version, "x": x + version,
                           "y": (x * 7 + writer).astype(np.float64)})
        write_parquet(target, df)
        if version == 0:
            print("wrote", flush=True)
        version += 1
    """
)


def _check_complete(path: Path) -> tuple[int, int]:
    df = pd.read_parquet(path)
    assert len(df) == N_ROWS
    writer, version = int(df["writer"].iloc[0]), int(df["version"].iloc[0])
    x = np.arange(N_ROWS)
    assert (df["writer"] == writer).all() and (df["version"] == version).all()
    np.testing.assert_array_equal(df["x"].to_numpy(), x + version)
    np.testing.assert_array_equal(df["y"].to_numpy(), (x * 7 + writer).astype(np.float64))
    return writer, version


def test_sigkill_mid_write_never_tears_target(tmp_path):
    """Several processes rewrite one file; each is SIGKILLed at a random moment."""
    target = tmp_path / "big.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), str(w), str(N_ROWS)],
            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env,
        )
        for w in range(4)
    ]
    rng = random.Random(0)
    seen = set()
    try:
        for child in children:  # every writer has completed one version before any kill
            assert child.stdout.readline().strip() == "wrote"
        for child in children:
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            assert child.returncode == -signal.SIGKILL
            seen.add(_check_complete(target))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
    # Killed writers may leave their temp file, but only hidden `.big.parquet.*.tmp` ones.
    others = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(n.startswith(".big.parquet.") and n.endswith(".tmp") for n in others)
    assert len(seen) >= 2, "the writers were killed before rewriting anything"
