"""A stand-in for `run_experiment` whose rounds are a known function of the config.

Study tests check the study machinery (budget, resume, exports), not training; with
this fake a trial takes milliseconds and its objectives are known in closed form.
Loaded by path (conftest.py, and the killed-study subprocess) since test folders are
not packages.
"""

import time
from pathlib import Path

ROUND_SLEEP_S = 0.0  # raised by the resume test, so a trial is still running when killed


def accuracy(cfg, round_: int) -> float:
    """Grows with rounds; best with a shallow head and a long prompt."""
    base = 0.5 + 0.02 * cfg.prompt.length - 0.05 * cfg.split.head_blocks
    return base * round_ / cfg.fed.rounds


def bytes_up(cfg) -> int:
    return 1000 * (cfg.prompt.length + 1)


def bytes_down(cfg) -> int:
    return 500 * (cfg.split.tail_blocks + 1)


def fake_run(cfg, on_round=lambda row: None) -> Path:
    run_dir = Path(cfg.run.out_dir) / cfg.run.run_id
    run_dir.mkdir()  # as create_run_dir: a run directory is never reused
    if cfg.train.lr > 0.5:
        raise RuntimeError("diverged")
    for r in range(1, cfg.fed.rounds + 1):
        time.sleep(ROUND_SLEEP_S)
        on_round({"round": r, "accuracy": accuracy(cfg, r), "loss": 1.0 / r,
                  "bytes.up": bytes_up(cfg), "bytes.down": bytes_down(cfg),
                  "flops.client": 7, "sim.elapsed_seconds": 10.0 * r})
    return run_dir
