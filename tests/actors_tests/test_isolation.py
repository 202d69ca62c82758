"""Two runs at once on one machine do not interfere.

Two real `sfprompt run` processes with the Ray backend start together and write into
the same output folder, with different seeds so that any cross-talk (one run's actors
serving the other, a shared file) would change numbers. Each must get its own run
directory, its own Ray instance and namespace (recorded in run.json), leave no temp
file, and end with exactly the rounds a solo run of its config gives: the in-process
reference, which the Ray backend reproduces bit for bit (test_backend.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import sfprompt
from sfprompt.platform.config.load import load_config
from sfprompt.results.experiment import run_experiment
from sfprompt.results.tables import read_clients, read_rounds

REPO_ROOT = Path(sfprompt.__file__).resolve().parent.parent
SEEDS = (0, 1)
RUN_FILES = {"config.toml", "run.json", "run.log", "rounds.parquet", "clients.parquet"}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns
            if c in ("round", "client", "accuracy", "loss", "train_loss", "participants",
                     "kept_samples") or c.split(".")[0] in ("bytes", "flops", "sim")]


@pytest.mark.slow  # two Ray instances with their actors on a 2-core host: about a minute
def test_two_runs_at_once_keep_apart_and_match_solo_runs(tmp_path, tiny):
    out = tmp_path / "runs"
    common = tiny + [f"run.out_dir={out}", "run.threads=1", "ray.num_client_actors=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "disabled"}
    runs = [subprocess.Popen([sys.executable, "-m", "sfprompt", "run", *common,
                              "run.backend=ray", f"run.seed={seed}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path, env=env)
            for seed in SEEDS]
    for run in runs:
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]

    # Separate run directories (generated ids, claimed by mkdir), nothing else in out/.
    run_dirs = sorted(out.iterdir())
    assert len(run_dirs) == 2 and all(d.is_dir() for d in run_dirs)
    infos = [json.loads((d / "run.json").read_text()) for d in run_dirs]
    by_seed = {load_config(d / "config.toml").run.seed: d for d in run_dirs}
    assert sorted(by_seed) == list(SEEDS)
    for run_dir, info in zip(run_dirs, infos):
        assert info["status"] == "completed" and info["run_id"] == run_dir.name
        names = {p.name for p in run_dir.iterdir()}
        assert RUN_FILES <= names, names
        assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    # Each process started its own Ray instance: own namespace, session (temp) dir, GCS.
    rays = [info["ray"] for info in infos]
    assert all(r["owns_instance"] for r in rays)
    for field in ("namespace", "session_dir", "gcs_address"):
        assert rays[0][field] != rays[1][field], field
    assert not Path(rays[0]["session_dir"]).is_relative_to(rays[1]["session_dir"])
    # Nothing was written outside the output folder (the cwd holds only it).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]

    for seed in SEEDS:
        cfg = load_config(None, common + ["run.backend=local", f"run.seed={seed}",
                                          f"run.out_dir={tmp_path / 'solo'}"])
        solo = run_experiment(cfg)
        for read in (read_rounds, read_clients):
            expected, got = read(solo), read(by_seed[seed])
            columns = metric_columns(expected)
            pd.testing.assert_frame_equal(got[columns], expected[columns], check_exact=True)
