"""Atomic writes of result files: new content replaces old, failures and SIGKILL never
tear the target, and every file the project writes goes through platform/atomic.py (its
own tests: tests/platform_tests/test_atomic.py)."""

import json
import os
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
    df = read_parquet(path)  # the project's reader: it must not tear either (atomic.py)
    assert len(df) == N_ROWS
    writer, version = int(df["writer"].iloc[0]), int(df["version"].iloc[0])
    x = np.arange(N_ROWS)
    assert (df["writer"] == writer).all() and (df["version"] == version).all()
    np.testing.assert_array_equal(df["x"].to_numpy(), x + version)
    np.testing.assert_array_equal(df["y"].to_numpy(), (x * 7 + writer).astype(np.float64))
    return writer, version


def _kill_mid_write(child: subprocess.Popen, directory: Path) -> Path:
    """SIGKILL `child` while it is inside a write, and return its unfinished temp file.

    The child is SIGSTOPped (and waited for, so it really is stopped) and killed only if
    its temp file exists, i.e. between creating it and the rename; otherwise it runs on
    a moment and is caught again. So every kill lands mid-write, whatever the load,
    where sleeping a random time and hoping could not promise it.
    """
    deadline = time.monotonic() + 60
    while True:
        os.kill(child.pid, signal.SIGSTOP)
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        temps = list(directory.glob(f".big.parquet.{child.pid}.*.tmp"))
        if temps:
            break
        os.kill(child.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the writer never got inside a write"
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    return temps[0]


def test_sigkill_mid_write_never_tears_target(tmp_path):
    """Several processes rewrite one file; each is SIGKILLed in the middle of a write
    while the others keep replacing the file and this process reads it."""
    target = tmp_path / "big.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), str(w), str(N_ROWS)],
            stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env,
        )
        for w in range(4)
    ]
    leftovers = []
    try:
        # Every writer has replaced the target once, so each kill interrupts a rewrite.
        for child in children:
            assert child.stdout.readline().strip() == "wrote"
        for child in children:
            leftovers.append(_kill_mid_write(child, tmp_path))
            _check_complete(target)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
    # A killed writer cannot clean up: its hidden temp file stays, the target is whole.
    assert sorted(p for p in tmp_path.iterdir() if p != target) == sorted(leftovers)
    _check_complete(target)


# ---------------------------------------------------------------- every writer goes through atomic.py

CODE_FOLDERS = ("sfprompt", "platform", "actors", "studies", "results")
# The one module that writes files itself; everything else writes through it.
ATOMIC = "platform/atomic.py"
# Methods that write a file when given a path (`df.to_parquet`, `torch.save`, ...): only
# atomic.py may call them, or code that hands them the file of `with atomic_open() as f`.
WRITER_CALLS = {"to_parquet", "to_csv", "to_json", "write_table", "write_text", "write_bytes",
                "savefig", "dump", "save_file", "save"}
# Calls named like a writer that write nothing: they return the bytes (which then go
# through atomic_write_bytes).
SERIALISERS = {"safetensors.torch.save"}
# Files written some other way on purpose, with the reason.
NOT_RESULTS = {
    ("studies/storage.py", "open"): "study.lock: an flock'ed lock holding the owner's pid",
}


def _direct_writes(path: Path) -> list[tuple[str, int]]:
    """(call, line) of every file write in `path` that bypasses atomic.py."""
    import ast

    tree = ast.parse(path.read_text())
    atomic_files = {item.optional_vars.id for node in ast.walk(tree) if isinstance(node, ast.With)
                    for item in node.items
                    if isinstance(item.context_expr, ast.Call)
                    and getattr(item.context_expr.func, "id", None) == "atomic_open"
                    and isinstance(item.optional_vars, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        if name == "open" and isinstance(node.func, ast.Name):
            modes = [a.value for a in node.args[1:2] + [k.value for k in node.keywords
                                                         if k.arg == "mode"]
                     if isinstance(a, ast.Constant)]
            if any(set(m) & set("wax+") for m in modes):
                found.append((name, node.lineno))
        elif (name in WRITER_CALLS and isinstance(node.func, ast.Attribute)
              and ast.unparse(node.func) not in SERIALISERS):
            if not any(isinstance(a, ast.Name) and a.id in atomic_files for a in node.args):
                found.append((name, node.lineno))
    return found


def test_every_file_the_project_writes_goes_through_atomic():
    bypasses = []
    for folder in CODE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative == ATOMIC:
                continue
            bypasses += [f"{relative}:{line} {call}" for call, line in _direct_writes(path)
                         if (relative, call) not in NOT_RESULTS]
    assert bypasses == [], "write these through sfprompt.platform.atomic (or results.atomic)"


def test_the_writer_scan_sees_direct_writes(tmp_path):
    # The scan itself: a planted bypass is caught, an in-memory serialiser or a write
    # into atomic_open's file is not.
    assert (REPO_ROOT / ATOMIC).is_file()
    planted = tmp_path / "planted.py"
    planted.write_text(textwrap.dedent("""
        import safetensors.torch, torch
        torch.save(state, "model.pt")
        data = safetensors.torch.save(state)
        with atomic_open(path) as f:
            torch.save(state, f)
        safetensors.torch.save_file(state, "cache.safetensors")
        open("x.txt", "w")
    """))
    assert sorted(_direct_writes(planted), key=lambda c: c[1]) == [
        ("save", 3), ("save_file", 7), ("open", 8)]
