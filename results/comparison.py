"""Methods side by side: every method x seed of one config, each an ordinary run.

A comparison is a directory (made like a run directory, `runs/<id>/`) holding the base
`config.toml` and one run directory per method and seed, `<method>-seed<seed>/`. The
runs differ only in `train.method` and `run.seed`: same model, data, partition rule,
profiles and accounting, so the table results/summary.py builds from them compares
like with like. Every combination is validated before the first run starts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sfprompt.platform.config.dotted import to_dict
from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.loop.backend import Backend
from sfprompt.platform.loop.world import World
from sfprompt.results.experiment import run_experiment
from sfprompt.results.rundir import create_run_dir, write_config_toml

log = logging.getLogger(__name__)


def run_id(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def compare_configs(cfg: Config, methods: Sequence[str], seeds: Sequence[int]) -> list[Config]:
    """The config of every run, method-major, all validated (bad method names here)."""
    if not methods or not seeds:
        raise ConfigError("compare: give at least one method and one seed")
    for key, values in (("--methods", methods), ("--seeds", seeds)):
        if len(set(values)) != len(values):
            raise ConfigError(f"compare {key}: {list(values)} repeats a value")
    return [replace(cfg, **{"train.method": m, "run.seed": s, "run.run_id": run_id(m, s)})
            for m in methods for s in seeds]


def run_compare(cfg: Config, methods: Sequence[str], seeds: Sequence[int], *,
                on_run: Callable[[int, int, Config], None] = lambda i, n, cfg: None,
                on_round: Callable[[dict], None] = lambda row: None,
                make_backend: Callable[[World], Backend] | None = None) -> Path:
    """Run every method x seed of `cfg` into one comparison directory (in `run.out_dir`,
    named `run.run_id` or a fresh id); returns it. `on_run(i, n, cfg)` before each run."""
    configs = compare_configs(cfg, methods, seeds)
    compare_dir = create_run_dir(cfg.run.out_dir, cfg.run.run_id or None)
    configs = [dataclasses.replace(c, run=dataclasses.replace(c.run, out_dir=str(compare_dir)))
               for c in configs]
    write_config_toml(compare_dir, to_dict(cfg))
    for i, run_cfg in enumerate(configs):
        log.info("compare %s: run %d/%d, %s", compare_dir.name, i + 1, len(configs),
                 run_cfg.run.run_id)
        on_run(i, len(configs), run_cfg)
        run_experiment(run_cfg, on_round=on_round, make_backend=make_backend)
    return compare_dir
