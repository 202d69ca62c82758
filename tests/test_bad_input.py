"""Bad input through the real `sfprompt` command: one line naming the culprit, exit 2,
and nothing left behind (no run directory, no stray file).

Each case builds its inputs in a fresh folder and runs `sfprompt run` in this process
(`sfprompt.cli.main`); two run as real subprocesses to check the exit code and that
stderr holds no traceback. Everything on top of a tiny base run (random vit_tiny at
32 px, digits, in-process backend, one round), so an input that is wrongly accepted
costs seconds, not minutes; the rejected ones fail before any model is built, except
where the model itself is the problem.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import sfprompt
from sfprompt.cli import main

REPO_ROOT = Path(sfprompt.__file__).resolve().parent.parent
BASE = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "data.name=digits", "data.max_samples=40", "fed.num_clients=2",
        "fed.clients_per_round=2", "fed.rounds=1", "fed.partition=iid", "train.batch_size=8",
        "prompt.length=2", "profiles.sigma=0", "run.backend=local"]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Case:
    """`make(tmp)` writes the case's files under `tmp` and returns its CLI arguments
    (`--config FILE` first; overrides go after the base ones, so they win); the one-line
    error must contain every `names` item (`{tmp}` stands for the case's folder)."""

    id: str
    make: Callable[[Path], list[str]]
    names: tuple[str, ...]
    marks: tuple = field(default=())


def overrides(*items: str, names: tuple[str, ...] | None = None, id: str | None = None) -> Case:
    """A case that is only command-line overrides; by default the error names the key
    of the first one."""
    key = items[0].partition("=")[0]
    return Case(id or "-".join(items), lambda tmp: list(items), names or (key,))


# ---------------------------------------------------------------- files the cases write


def toml_file(text: str | bytes, name: str = "bad.toml"):
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--config", str(path)]
    return make


TRACE_ROW = dict(flops_per_s=2e10, uplink_bps=1e7, downlink_bps=5e7, latency_s=0.02,
                 jitter_s=0.005, availability=0.9, memory_bytes=8 * 2**30)


def trace_file(rows: int = 2, name: str = "trace.csv", drop: str | None = None,
               bad: dict | None = None, raw: bytes | None = None):
    """A trace of `rows` good clients, minus column `drop`, with row 1 changed by `bad`,
    or the bytes `raw` as they are."""
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        if raw is not None:
            path.write_bytes(raw)
        else:
            table = [dict(TRACE_ROW) for _ in range(rows)]
            if bad:
                table[1].update(bad)
            df = pd.DataFrame(table).drop(columns=[drop] if drop else [])
            if path.suffix == ".parquet":
                df.to_parquet(path)
            else:
                df.to_csv(path, index=False)
        return ["profiles.source=trace", f"profiles.trace={path}"]
    return make


def online_file(tmp: Path, text: str) -> list[str]:
    """An availability trace with `text` as its contents."""
    (tmp / "online.csv").write_text(text)
    return ["availability.model=trace", f"availability.trace={tmp / 'online.csv'}"]


def png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def image_folder(classes: dict[str, int], extra: Callable[[Path], None] = lambda root: None):
    """`root/<class>/<i>.png` with the given number of images per class, then `extra(root)`."""
    def make(tmp: Path) -> list[str]:
        root = tmp / "images"
        root.mkdir()
        for name, count in classes.items():
            (root / name).mkdir()
            for i in range(count):
                png(root / name / f"{i}.png", 10 * i)
        extra(root)
        return ["data.name=imagefolder", f"data.root={root}"]
    return make


def good_images(extra: Callable[[Path], None]):
    """Two classes of four good images, then `extra(root)`."""
    return image_folder({"cat": 4, "dog": 4}, extra)


def write(relative: str, data: bytes) -> Callable[[Path], None]:
    def add(root: Path) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return add


def truncated_png(root: Path) -> None:
    png(root / "dog" / "cut.png")
    whole = (root / "dog" / "cut.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])


def unreadable(relative: str) -> Callable[[Path], None]:
    """Turn `relative` into a file whose every read fails: a link to /proc/self/mem
    (offset 0 is never mapped), which even root cannot read, unlike a chmod 0 file."""
    def add(root: Path) -> None:
        (root / relative).unlink()
        (root / relative).symlink_to("/proc/self/mem")
    return add


def unlistable(root: Path) -> None:
    os.chmod(root, 0)


def then(make: Callable[[Path], list[str]], action: Callable[[Path], None]):
    """`make`, then `action` on the same folder."""
    def both(tmp: Path) -> list[str]:
        args = make(tmp)
        action(tmp)
        return args
    return both


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
needs_non_root = pytest.mark.skipif(AS_ROOT, reason="root lists folders whatever their mode")


def arg_file(name: str, text: str = ""):
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_text(text)
        return []
    return make


def taken_run_id(tmp: Path) -> list[str]:
    """An earlier run's directory in the output folder (beside `tmp`), and its id."""
    (tmp.parent / "runs" / "taken").mkdir()
    return ["run.run_id=taken"]


# ---------------------------------------------------------------- the cases

CONFIG_CASES = [
    # wrong types
    overrides("fed.rounds=ten"),
    overrides("prune.keep=half"),
    overrides("data.download=maybe"),
    overrides("fed.rounds=", id="empty-value"),
    Case("toml-string-for-int", toml_file('[fed]\nmin_samples = "many"\n'), ("fed.min_samples",)),
    Case("toml-float-for-int", toml_file("[split]\nhead_blocks = 1.5\n"), ("split.head_blocks",)),
    Case("toml-bool-for-float", toml_file("[prune]\nkeep = true\n"), ("prune.keep",)),
    Case("toml-value-for-section", toml_file("fed = 3\n"), ("fed",)),
    Case("toml-list-for-section", toml_file("split = [1, 2]\n"), ("split",)),
    Case("toml-table-for-value", toml_file("[fed.alpha]\nx = 1\n"), ("fed.alpha",)),
    # unknown keys and sections
    overrides("split.head_block=1"),
    overrides("nosuch.key=1", names=("nosuch",)),
    Case("toml-unknown-section", toml_file("[nosuch]\nx = 1\n"), ("nosuch",)),
    Case("toml-unknown-key", toml_file("[prune]\nkeeep = 0.3\n"), ("prune.keeep",)),
    # impossible values
    overrides("split.head_blocks=8", "split.tail_blocks=5", names=("split", "12 blocks")),
    overrides("prune.keep=0"),
    overrides("prune.keep=1.5"),
    overrides("prune.keep=nan"),
    overrides("prune.skip_hardest=0.6"),  # with keep 0.5: past the last sample
    overrides("prune.skip_hardest=-0.1"),
    overrides("prune.per_class=maybe"),
    overrides("train.local_classifier=separately"),
    overrides("train.local_lr_scale=-1"),
    overrides("data.test_fraction=1"),
    overrides("fed.num_clients=-3"),
    overrides("fed.rounds=-1"),
    overrides("prompt.length=-1"),
    overrides("train.batch_size=0"),
    overrides("eval.every=0"),
    overrides("eval.max_samples=-5"),
    overrides("eval.worker=gpu"),
    overrides("ray.body=gpu", names=("ray.body", "clients")),
    overrides("ray.body=clients", "train.method=sfl", names=("ray.body", "sfl")),
    overrides("ray.body=clients", "faults.server_crash_round=1",
              names=("ray.body", "faults.server_crash_round")),
    overrides("run.precision=fp16", names=("run.precision", "bf16")),
    overrides("fed.clients_per_round=5", names=("fed.clients_per_round", "fed.num_clients")),
    overrides("train.lr=nan"),
    overrides("train.weight_decay=inf"),
    overrides("fed.aggregation=fedsgd", names=("fed.aggregation", "fedadam")),
    overrides("fed.server_lr=0"),
    overrides("fed.server_lr=inf"),
    overrides("fed.server_momentum=1"),
    overrides("fed.server_momentum=-0.5"),
    overrides("fed.server_beta2=1"),
    overrides("fed.server_beta2=nan"),
    overrides("fed.server_tau=0"),
    overrides("fed.server_tau=-1e-3"),
    overrides("fed.prox_mu=-0.01"),
    overrides("fed.prox_mu=nan"),
    overrides("fed.aggregation=fedprox", "fed.prox_mu=inf", names=("fed.prox_mu",)),
    overrides("model.img_size=0"),
    overrides("model.img_size=30", names=("model.img_size", "16")),
    overrides("model.name=vit_does_not_exist"),
    overrides("model.name=resnet18", names=("model.name", "VisionTransformer")),
    # ViT families the split does not handle, refused before anything runs.
    overrides("model.name=eva02_tiny_patch14_224", names=("model.name", "Eva")),
    overrides("model.name=vit_relpos_small_patch16_224",
              names=("model.name", "VisionTransformerRelPos")),
    overrides("model.weights=/no/such/weights.safetensors",
              names=("model.weights", "/no/such/weights.safetensors")),
    overrides("run.backend=mpi"),
    overrides("fed.over_commit=0.5"),
    overrides("fed.protocol=fastest"),
    overrides("fed.protocol=buffered", "fed.concurrency=11", names=("fed.concurrency", "11")),
    overrides("fed.concurrency=-1"),
    overrides("fed.concurrency=4", "fed.buffer_size=5", names=("fed.buffer_size", "4")),
    overrides("fed.staleness=linear"),
    overrides("fed.staleness_exponent=-0.5"),
    overrides("split.plan=random"),
    overrides("split.plan=by_tier", "split.tiers=low_phone", names=("split.tiers", "low_phone")),
    overrides("split.plan=by_tier", "split.tiers=pager=0:0", names=("split.tiers", "pager")),
    overrides("split.plan=by_tier", "split.tiers=low_phone=9:9",
              names=("split.tiers", "9:9", "12 blocks")),
    overrides("split.plan=fit", "split.candidates=8:0,0:8", names=("split.candidates", "head")),
    overrides("split.candidates=1-1", names=("split.candidates", "1-1")),
    overrides("split.memory_fraction=0"),
    overrides("split.plan=by_tier", "train.method=sfl", names=("split.plan", "sfl")),
    overrides("split.plan=fit", "split.memory_fraction=1e-9",
              names=("split.candidates", "no candidate fits")),
    overrides("data.max_samples=5", names=("data.max_samples", "10 classes")),
    overrides("fed.num_clients=50", "fed.clients_per_round=2", names=("fed.num_clients", "40")),
    overrides("fed.partition=shards", "fed.shards_per_client=30", names=("fed.shards_per_client",)),
    overrides("run.run_id=../escape", names=("run.run_id", "../escape")),
    Case("run-id-taken", taken_run_id, ("runs/taken", "already exists")),
    Case("out-dir-is-a-file", lambda tmp: arg_file("file")(tmp) + [f"run.out_dir={tmp}/file"],
         ("{tmp}/file",)),
    # TOML files that are not TOML, or not there
    Case("toml-syntax", toml_file("[prune\nkeep = 0.3\n"), ("{tmp}/bad.toml", "invalid TOML")),
    Case("toml-not-utf8", toml_file(b"[prune]\nkeep = 0.3 # \xff\xfe\n"), ("{tmp}/bad.toml",)),
    Case("toml-missing", lambda tmp: ["--config", str(tmp / "absent.toml")], ("{tmp}/absent.toml",)),
    Case("toml-is-a-directory", lambda tmp: ["--config", str(tmp)], ("{tmp}",)),
    Case("toml-unreadable", then(toml_file("[prune]\nkeep = 0.3\n"), unreadable("bad.toml")),
         ("{tmp}/bad.toml",), (needs_proc,)),
    # bad override syntax
    overrides("fed.rounds", names=("fed.rounds", "key=value")),
    overrides("=3", names=("=3", "key=value")),
    overrides("fed=3", names=("fed",)),
    overrides("fed..rounds=3", names=("fed..rounds",)),
]

PROFILE_CASES = [
    overrides("profiles.tier=supercomputer"),
    overrides("profiles.source=census"),
    overrides("profiles.server=tpu"),
    overrides("profiles.mix=low_phone:abc", names=("profiles.mix", "low_phone:abc")),
    overrides("profiles.mix=pager:1", names=("profiles.mix", "pager")),
    overrides("profiles.mix=low_phone", names=("profiles.mix", "low_phone")),
    overrides("profiles.mix=low_phone:0,mid_phone:0", names=("profiles.mix",)),
    overrides("profiles.mix=low_phone:-1", names=("profiles.mix",)),
    overrides("profiles.sigma=-0.1"),
    overrides("profiles.server_concurrency=-1"),
    overrides("profiles.source=trace", names=("profiles.trace",)),
    Case("trace-missing", lambda tmp: ["profiles.source=trace", f"profiles.trace={tmp}/no.csv"],
         ("profiles.trace", "{tmp}/no.csv", "not found")),
    Case("trace-is-a-directory", lambda tmp: ["profiles.source=trace", f"profiles.trace={tmp}"],
         ("profiles.trace", "{tmp}")),
    Case("trace-wrong-suffix", trace_file(name="trace.txt"), ("profiles.trace", "trace.txt")),
    Case("trace-missing-column", trace_file(drop="uplink_bps"), ("{tmp}/trace.csv", "uplink_bps")),
    Case("trace-negative-bandwidth", trace_file(bad={"downlink_bps": -1e6}),
         ("{tmp}/trace.csv", "downlink_bps", "row 1")),
    Case("trace-nan", trace_file(bad={"latency_s": math.nan}), ("trace.csv", "latency_s", "row 1")),
    Case("trace-inf", trace_file(bad={"flops_per_s": math.inf}), ("trace.csv", "flops_per_s")),
    Case("trace-zero-compute", trace_file(bad={"flops_per_s": 0}), ("trace.csv", "flops_per_s")),
    Case("trace-text-value", trace_file(bad={"uplink_bps": "fast"}), ("trace.csv", "uplink_bps")),
    Case("trace-availability-above-1", trace_file(bad={"availability": 1.5}),
         ("trace.csv", "availability")),
    Case("trace-fewer-rows-than-clients", trace_file(rows=1), ("trace.csv", "fed.num_clients")),
    Case("trace-more-rows-than-clients", trace_file(rows=3), ("trace.csv", "fed.num_clients")),
    Case("trace-parquet-negative", trace_file(name="t.parquet", bad={"memory_bytes": -1}),
         ("t.parquet", "memory_bytes")),
    Case("trace-empty-file", trace_file(raw=b""), ("{tmp}/trace.csv",)),
    Case("trace-corrupt-parquet", trace_file(name="t.parquet", raw=b"PAR1 not really"),
         ("{tmp}/t.parquet",)),
    Case("trace-not-utf8", trace_file(raw=b"flops_per_s\n\xff\xfe\x00\n"), ("{tmp}/trace.csv",)),
    Case("trace-unreadable", then(trace_file(), unreadable("trace.csv")), ("{tmp}/trace.csv",),
         (needs_proc,)),
    overrides("availability.model=hourly"),
    overrides("availability.period_s=-1"),
    overrides("availability.model=trace", names=("availability.trace",)),
    Case("availability-trace-missing",
         lambda tmp: ["availability.model=trace", f"availability.trace={tmp}/no.csv"],
         ("availability.trace", "{tmp}/no.csv", "not found")),
    Case("availability-trace-unknown-client", lambda tmp: online_file(tmp, "client,start_s,end_s\n"
                                                                      "99,0,10\n"),
         ("availability.trace", "{tmp}/online.csv", "'client' row 0")),
    Case("availability-trace-past-the-period", lambda tmp: online_file(
        tmp, "client,start_s,end_s\n0,0,10\n0,5,90000\n"), ("{tmp}/online.csv", "'end_s' row 1")),
]

DATA_CASES = [
    overrides("data.name=imagefolder", names=("data.root",)),
    Case("folder-missing", lambda tmp: ["data.name=imagefolder", f"data.root={tmp}/nowhere"],
         ("data.root", "{tmp}/nowhere")),
    Case("folder-is-a-file", lambda tmp: arg_file("f.png")(tmp)
         + ["data.name=imagefolder", f"data.root={tmp}/f.png"], ("data.root", "{tmp}/f.png")),
    Case("folder-empty", image_folder({}), ("data.root", "{tmp}/images", "0 class")),
    Case("folder-one-class", image_folder({"cat": 4}), ("data.root", "{tmp}/images", "1 class")),
    Case("class-without-images", image_folder({"cat": 4, "dog": 0}), ("{tmp}/images/dog",)),
    Case("class-with-only-text", image_folder({"cat": 4, "dog": 0}, write("dog/notes.txt", b"hi")),
         ("{tmp}/images/dog",)),
    Case("image-corrupt", good_images(write("dog/bad.png", b"\x89PNG not an image")),
         ("{tmp}/images/dog/bad.png",)),
    Case("image-empty", good_images(write("cat/zero.jpg", b"")), ("{tmp}/images/cat/zero.jpg",)),
    Case("image-truncated", good_images(truncated_png), ("{tmp}/images/dog/cut.png",)),
    Case("fewer-images-than-clients",
         lambda tmp: good_images(lambda root: None)(tmp) + ["fed.num_clients=20"],
         ("fed.num_clients",)),
    Case("image-unreadable", good_images(unreadable("cat/0.png")), ("{tmp}/images/cat/0.png",),
         (needs_proc,)),
    Case("folder-unreadable", good_images(unlistable), ("{tmp}/images",), (needs_non_root,)),
]

CASES = CONFIG_CASES + PROFILE_CASES + DATA_CASES


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, monkeypatch, capsys):
    inputs, out = tmp_path / "in", tmp_path / "runs"
    inputs.mkdir()
    out.mkdir()
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd would show below
    argv = case.make(inputs)
    config = argv[:2] if argv[:1] == ["--config"] else []
    before, runs_before = tree(tmp_path), list(out.iterdir())

    code = main(["run", *config, *BASE, f"run.out_dir={out}", *argv[len(config):]])

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("sfprompt: error: "), err
    for name in case.names:
        assert name.replace("{tmp}", str(inputs)) in lines[0], lines[0]
    assert list(out.iterdir()) == runs_before, "a rejected run left a run directory"
    assert tree(tmp_path) == before, "a rejected run left files behind"


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


# Two cases as real processes, started together: the exit code is 2 and stderr holds the
# one line, no traceback (a config error, and a file error found while building the run).
SUBPROCESS_CASES = {
    "split": ["split.head_blocks=8", "split.tail_blocks=5"],
    "/no/such/trace.csv": ["profiles.source=trace", "profiles.trace=/no/such/trace.csv"],
}


def test_subprocess_exit_code_and_one_line_without_traceback(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    procs = {culprit: subprocess.Popen(
        [sys.executable, "-m", "sfprompt", "run", *BASE, f"run.out_dir={out}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        for culprit, args in SUBPROCESS_CASES.items()}
    for culprit, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2 and "Traceback" not in stderr, (culprit, stderr)
        assert len(lines) == 1 and lines[0].startswith("sfprompt: error: "), (culprit, stderr)
        assert culprit in lines[0], (culprit, stderr)
    assert not out.exists() or list(out.iterdir()) == []
