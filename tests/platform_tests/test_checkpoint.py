"""Checkpoints and `sfprompt resume`: a run killed, interrupted or failed after any round
continues to the numbers of an uninterrupted run with the same seed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sfprompt.cli import main
from sfprompt.platform.config.load import load_config
from sfprompt.platform.errors import SfpromptError
from sfprompt.platform.loop.progress import Progress
from sfprompt.results.checkpoint import load_checkpoint, save_checkpoint
from sfprompt.results.experiment import resume_experiment, run_experiment
from sfprompt.results.tables import read_clients, read_rounds

TINY = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
        "data.name=digits", "data.max_samples=120", "data.test_fraction=0.05",
        "fed.num_clients=4", "fed.clients_per_round=2", "fed.rounds=3", "fed.partition=iid",
        "train.batch_size=16", "prompt.length=2", "run.threads=1", "run.backend=local",
        "profiles.sigma=0.3", "fed.protocol=deadline", "fed.deadline_s=8"]
# The driver stops (sleeps) after the checkpoint of round K, so the kill lands exactly
# there, not wherever a race would put it.
DRIVER = """
import sys, time
from sfprompt.platform.config.load import load_config
from sfprompt.results.experiment import run_experiment
K = int(sys.argv[1])
run_experiment(load_config(None, sys.argv[2:]),
               on_round=lambda row: time.sleep(600) if row["round"] == K else None)
"""
WALL = ("wall_seconds", "run_id", "run.run_id")


def _same_tables(run_dir, reference):
    for read in (read_rounds, read_clients):
        got, want = read(run_dir), read(reference)
        columns = [c for c in want.columns if c not in WALL]
        assert list(got.columns) == list(want.columns)
        pd.testing.assert_frame_equal(got[columns], want[columns], check_exact=True)


def _wait_for_checkpoint(run_dir, round_, proc, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        saved = (run_dir / "checkpoint.pt").is_file() and load_checkpoint(run_dir)
        if saved and saved[0].round == round_:
            return
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of round {round_} within {timeout_s} s")


def test_sigkill_after_round_k_then_resume_equals_an_uninterrupted_run(tmp_path):
    # sfl: the server's body and its optimizer train, so they must survive the kill too.
    overrides = TINY + ["train.method=sfl", f"run.out_dir={tmp_path}"]
    reference = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))
    run_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "1", *overrides, "run.run_id=killed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_checkpoint(run_dir, 1, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert len(read_rounds(run_dir)) == 1
    assert main(["resume", str(run_dir)]) == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["status"], info["resumes"], info["rounds_done"]) == ("completed", 1, 3)
    _same_tables(run_dir, reference)
    assert "resumed after round 1" in (run_dir / "run.log").read_text()


def cut_after_round_1(overrides: list[str], out_dir) -> Path:
    """The run `overrides` describe, interrupted (Ctrl-C) after its first round, as
    `out_dir/cut`."""
    def interrupt(row):
        if row["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_config(None, overrides + ["run.run_id=cut"]), on_round=interrupt)
    return Path(out_dir) / "cut"


def test_interrupted_run_with_faults_resumes_to_the_same_numbers(tmp_path):
    overrides = TINY + [f"run.out_dir={tmp_path}", "faults.client_crash=0.3",
                        "faults.message_loss=0.2", "faults.delay_spike=0.2"]
    reference = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))
    assert (read_rounds(reference)["failed"] > 0).any()

    run_dir = cut_after_round_1(overrides, tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    resume_experiment(run_dir)
    _same_tables(run_dir, reference)


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    assert main(["resume", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("sfprompt: error: config file ")
    done = run_experiment(load_config(None, TINY + [f"run.out_dir={tmp_path}", "run.run_id=done",
                                                    "fed.rounds=1"]))
    assert main(["resume", str(done)]) == 2
    err = capsys.readouterr().err
    assert err.endswith("the run already completed its 1 rounds; nothing to resume "
                        "(--rounds N continues it to N)\n") and err.count("\n") == 1
    config = (done / "config.toml").read_text()
    for rounds, says in (("0", "--rounds 0: "), ("1", "already completed"),
                         ("-3", "--rounds -3: ")):
        assert main(["resume", str(done), "--rounds", rounds]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert (done / "config.toml").read_text() == config  # nothing changed
    (done / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SfpromptError, match=r"checkpoint\.pt: not a readable checkpoint"):
        load_checkpoint(done)


def test_checkpoint_round_trip_stores_numpy_scalars_as_numbers(tmp_path):
    # numpy scalars (profile draws, clock sums) are stored as Python numbers, or a
    # weights_only load would refuse the file
    # the aggregation rule's memory (server moments, float64) comes back exactly
    progress = Progress({"head.prompts": torch.randn(1, 2, 4)}, round=3,
                        visited={np.int64(4), 1}, elapsed=np.float64(12.5),
                        aggregator={"m/head.prompts": torch.randn(1, 2, 4, dtype=torch.float64)})
    rows = [{"round": 3, "accuracy": np.float64(0.5), "status": "ok", "samples": np.int64(7)}]
    save_checkpoint(tmp_path, progress, rows, rows)
    loaded, rounds, clients = load_checkpoint(tmp_path)
    assert (loaded.round, loaded.visited, loaded.elapsed, loaded.server) == (3, {1, 4}, 12.5, None)
    assert torch.equal(loaded.global_state["head.prompts"], progress.global_state["head.prompts"])
    assert loaded.aggregator.keys() == {"m/head.prompts"}
    assert loaded.aggregator["m/head.prompts"].dtype == torch.float64
    assert torch.equal(loaded.aggregator["m/head.prompts"], progress.aggregator["m/head.prompts"])
    assert rounds == clients == [{"round": 3, "accuracy": 0.5, "status": "ok", "samples": 7}]
    assert load_checkpoint(tmp_path / "missing") is None


def test_a_resumed_buffered_run_equals_an_uninterrupted_one(tmp_path):
    # Three training, one per aggregation: two still training at every checkpoint.
    overrides = [o for o in TINY if not o.startswith("fed.protocol")] + [
        "fed.protocol=buffered", "fed.concurrency=3", "fed.buffer_size=1",
        "fed.staleness=polynomial", "train.method=sfprompt", f"run.out_dir={tmp_path}"]
    whole = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))
    assert read_rounds(whole)["staleness.max"].max() >= 1
    cut = cut_after_round_1(overrides, tmp_path)
    progress, _, _ = load_checkpoint(cut)
    assert len(progress.in_flight) == 2 and set(progress.bases) == {0}
    assert all(f.start < 0 and f.result.state for f in progress.in_flight)
    resume_experiment(cut)
    _same_tables(cut, whole)


def test_a_completed_run_continued_to_more_rounds_equals_a_longer_run(tmp_path):
    overrides = TINY + [f"run.out_dir={tmp_path}"]
    whole = run_experiment(load_config(None, overrides + ["run.run_id=whole"]))
    short = run_experiment(load_config(None, overrides + ["run.run_id=short", "fed.rounds=1"]))
    assert main(["resume", str(short), "--rounds", "3"]) == 0
    _same_tables(short, whole)
    assert load_config(short / "config.toml").fed.rounds == 3
    assert json.loads((short / "run.json").read_text())["status"] == "completed"
