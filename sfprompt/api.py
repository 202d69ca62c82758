"""The Python API: what the `sfprompt` command does, as functions returning Python objects.

    run(config=None, **overrides) -> Run         one run, like `sfprompt run`
    load_run(dir) -> Run                          an existing run directory
    resume(dir) -> Run                            like `sfprompt resume`
    config(config=None, **overrides) -> Config    the resolved config, like `sfprompt config`
    compare(methods, seeds, config=None, **overrides) -> DataFrame   like `sfprompt compare`
    study(spec_path, dir=None, parallel=None) -> DataFrame           like `sfprompt study run`
    cost(config=None, **overrides) -> DataFrame                      like `sfprompt cost`
    report(dir, target=None) -> Path              report.html of a run, comparison or study
    models(pattern="*") -> dict[str, str | None]  timm ViTs: None if split, else why not
    on_client_done(hook)                          context: hook(settled, total) per client

`config` is a TOML path, a `Config` (e.g. an earlier run's `Run.config`) or None (the
defaults). Overrides are dotted keys (`**{"fed.rounds": 3}`), tables
(`fed={"rounds": 3}`) or both, with Python values: they become the command line's
`key=value` strings and go through its parser, so both entry points accept and refuse
the same settings with the same one-line `ConfigError`, raised before any directory is
made. Nothing here prints; the heavy imports (torch, pandas, Ray) happen on first call.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sfprompt.platform.errors import ConfigError, SfpromptError

if TYPE_CHECKING:
    import pandas as pd

    from sfprompt.platform.config.schema import Config

__all__ = ["Run", "run", "load_run", "resume", "config", "compare", "study", "cost", "plan",
           "report", "models", "on_client_done", "ConfigError", "SfpromptError", "COMPARE_METHODS",
           "COST_METHODS"]

# The CLI's defaults (its --methods and --seeds say the same).
COMPARE_METHODS = ("sfprompt", "fl", "fl_prompt", "sfl", "centralized")
COMPARE_SEEDS = (0, 1, 2)
COST_METHODS = ("sfprompt", "fl", "fl_prompt", "sfl")

OnRound = Callable[[dict], None]


def _override_strings(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Dotted key -> the text the CLI would be given: `str(True)` is not a TOML bool,
    and anything but a scalar has no `key=value` form."""
    from sfprompt.platform.config.dotted import flatten
    out = {}
    for key, value in flatten(overrides).items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (str, numbers.Real)):  # numpy scalars are Real too
            out[key] = str(value)
        else:
            raise ConfigError(f"{key}: expected a number, bool or string, got {value!r}")
    return out


def _resolve(cfg: str | Path | Config | None, overrides: Mapping[str, Any]) -> Config:
    from sfprompt.platform.config.dotted import merge, parse_overrides, to_dict
    from sfprompt.platform.config.load import config_from_dict, load_config
    from sfprompt.platform.config.schema import Config
    strings = [f"{key}={value}" for key, value in _override_strings(overrides).items()]
    if isinstance(cfg, Config):  # validated again: dataclasses.replace checks nothing
        return config_from_dict(merge(to_dict(cfg), parse_overrides(strings)))
    return load_config(cfg, strings)


def _make_backend(world):
    # Imported when a run starts, not with this module: sfprompt.actors imports Ray.
    from sfprompt.actors.backend import make_backend
    return make_backend(world)


def _make_executor(*args):
    from sfprompt.actors.trials import RayExecutor
    return RayExecutor(*args)


@dataclass(frozen=True)
class Run:
    """A run directory; `config` is read once, everything else from disk on each access,
    so a Run of a run still going sees its latest round."""

    dir: Path

    @cached_property
    def config(self) -> Config:
        from sfprompt.platform.config.load import load_config
        return load_config(self.dir / "config.toml")

    @property
    def info(self) -> dict:
        """run.json: status, versions, git commit, host, rounds done, the error of a failed run."""
        return json.loads((self.dir / "run.json").read_text())

    @property
    def status(self) -> str:
        return self.info["status"]

    @property
    def rounds(self) -> pd.DataFrame:
        from sfprompt.results.tables import read_rounds
        return read_rounds(self.dir)

    @property
    def clients(self) -> pd.DataFrame:
        from sfprompt.results.tables import read_clients
        return read_clients(self.dir)

    def __repr__(self) -> str:
        info, cfg = self.info, self.config
        return (f"Run({str(self.dir)!r}: {info.get('status')}, "
                f"{info.get('rounds_done', '?')}/{cfg.fed.rounds} rounds, {cfg.train.method} "
                f"on {cfg.data.name} with {cfg.model.name})")


def config(config: str | Path | Config | None = None, **overrides: Any) -> Config:
    """The validated `Config` of `config` with `overrides`, as `sfprompt config` prints it."""
    return _resolve(config, overrides)


def run(config: str | Path | Config | None = None, *, on_round: OnRound | None = None,
        **overrides: Any) -> Run:
    """Run a simulation into `run.out_dir`/<id>/ and return it. `on_round(row)` gets each
    round's row as it is written. A failed run raises after recording its status."""
    from sfprompt.results.experiment import run_experiment
    cfg = _resolve(config, overrides)
    return Run(run_experiment(cfg, on_round=on_round or (lambda row: None),
                              make_backend=_make_backend))


def on_client_done(hook: Callable[[int, int], None]):
    """A context in which every run calls `hook(settled, total)` each time a client's
    work in a round ends (done or failed): progress inside a round, as the command's bar."""
    from sfprompt.platform.loop.backend import on_client_done as context
    return context(hook)


def load_run(dir: str | Path) -> Run:
    """The run in `dir`, a directory `run` or `sfprompt run` wrote."""
    from sfprompt.results.rundir import require_run_dir
    return Run(require_run_dir(dir))


def resume(dir: str | Path, *, on_round: OnRound | None = None, rounds: int | None = None) -> Run:
    """Continue the killed, interrupted or failed run in `dir`, in the same directory;
    `rounds` continues it (a completed one too) to that many rounds in all."""
    from sfprompt.results.experiment import resume_experiment
    return Run(resume_experiment(dir, on_round=on_round or (lambda row: None),
                                 make_backend=_make_backend, rounds_to=rounds))


def compare(methods: Sequence[str] = COMPARE_METHODS, seeds: Sequence[int] = COMPARE_SEEDS,
            config: str | Path | Config | None = None, *, target: float | None = None,
            on_run: Callable[[int, int, Config], None] | None = None,
            on_round: OnRound | None = None, **overrides: Any) -> pd.DataFrame:
    """Every method x seed of one config, then its table (compare.parquet/.md) and plots,
    as `sfprompt compare` does; returns the table. `table.attrs["dir"]` is the comparison
    directory, `target` the accuracy `*.to_target` counts to (default 0.8 x the best)."""
    from sfprompt.results.comparison import run_compare
    cfg = _resolve(config, overrides)
    methods, seeds = list(methods), list(seeds)
    compare_dir = run_compare(cfg, methods, seeds, on_run=on_run or (lambda i, n, c: None),
                              on_round=on_round or (lambda row: None),
                              make_backend=_make_backend)
    from sfprompt.results.atomic import read_parquet
    report_files(compare_dir, target, methods)
    table = read_parquet(compare_dir / "compare.parquet")
    table.attrs["dir"] = str(compare_dir)  # a str: to_parquet stores attrs as JSON
    return table


def study(spec_path: str | Path, dir: str | Path | None = None, parallel: int | None = None,
          *, on_trial: Callable | None = None) -> pd.DataFrame:
    """Run the study file `spec_path` into `dir` (default runs/studies/<name>) and write
    its exports, as `sfprompt study run` does; returns trials.parquet, one row per trial.
    `on_trial(trial, done, total)` is called as each trial ends (an optuna FrozenTrial;
    trials counted against the budget so far, resumed sessions included; the budget).
    `table.attrs["dir"]` is the study directory; `sfprompt study resume` continues it."""
    from sfprompt.results.atomic import read_parquet
    from sfprompt.studies.export import TRIALS_FILE, export_study
    from sfprompt.studies.runner import start_study
    study_dir = start_study(spec_path, dir, parallel, on_trial=on_trial,
                            make_executor=_make_executor)
    export_study(study_dir)
    trials = read_parquet(study_dir / TRIALS_FILE)
    trials.attrs["dir"] = str(study_dir)
    return trials


def cost(config: str | Path | Config | None = None, *, methods: Sequence[str] = COST_METHODS,
         samples: int = 500, classes: int = 10, **overrides: Any) -> pd.DataFrame:
    """Bytes and FLOPs of one client's round per method, without compute, as `sfprompt
    cost` prints them: one row per method, bytes in bytes and FLOPs in FLOPs."""
    import pandas as pd

    from sfprompt.platform.sim.costmodel import cost_table
    return pd.DataFrame(cost_table(_resolve(config, overrides), list(methods), samples, classes))


def plan(config: str | Path | Config | None = None, *, splits: Sequence[tuple[int, int]] = (
        (0, 0), (1, 1), (2, 2)), samples: int = 500, classes: int = 10,
        memory_fraction: float = 1.0, **overrides: Any) -> pd.DataFrame:
    """`sfprompt plan`: one row per (device of the fleet, candidate split), with its
    footprint, whether it fits, bytes, FLOPs and simulated round seconds; `chosen` marks
    each device's plan, the fastest split that fits."""
    import pandas as pd

    from sfprompt.platform.sim.splitplan import plan_splits
    return pd.DataFrame(plan_splits(_resolve(config, overrides), list(splits), samples,
                                    classes, memory_fraction))


def report_files(dir: str | Path, target: float | None = None,
                 order: Sequence[str] | None = None) -> list[Path]:
    """What `report` writes, report.html last: a run's PNG plots; a comparison's table
    (compare.parquet/.md; `target` as in `compare`, `order` its methods) and plots; a
    study's exports."""
    from sfprompt.results import report
    from sfprompt.results.tables import ROUNDS
    from sfprompt.studies.storage import SPEC_FILE
    where = Path(dir)
    if (where / SPEC_FILE).is_file():
        from sfprompt.studies.export import export_study
        from sfprompt.studies.report import write_study_report
        return [*export_study(where), write_study_report(where)]
    if (where / ROUNDS.filename).is_file():
        from sfprompt.results.plots import run_plots
        from sfprompt.results.tables import read_rounds
        return [*run_plots(read_rounds(where), where), report.write_run_report(where)]
    if not where.is_dir():
        raise SfpromptError(f"{where}: not a run, comparison or study directory")
    from sfprompt.results.plots import compare_plots
    from sfprompt.results.summary import load_compare, summarise, write_compare
    rounds = load_compare(where)  # read once for the table, the plots and the page
    summary = summarise(rounds, target, order)
    write_compare(where, summary)
    plots = compare_plots(rounds, where, order)
    return [where / "compare.parquet", where / "compare.md", *plots,
            report.write_compare_report(where, rounds, summary, order)]


def report(dir: str | Path, target: float | None = None) -> Path:
    """Write `dir/report.html`, one self-contained page (tables and interactive plots,
    readable offline) of the run, comparison or study directory `dir`, with the
    directory's other exports (`report_files`); returns the page's path."""
    return report_files(dir, target)[-1]


def models(pattern: str = "*", *, on_model: Callable[[str], None] | None = None
           ) -> dict[str, str | None]:
    """Every timm architecture matching `pattern` (fnmatch, as `timm.list_models`) that
    is built as a VisionTransformer, mapped to None where the split takes it and to the
    one-line reason `model.name` would be refused otherwise, as `sfprompt models` lists
    them. Checked on the meta device; `on_model(name)` is called before each check."""
    from sfprompt.platform.model.weights import split_refusal, vit_candidates
    out = {}
    for name in vit_candidates(pattern):
        (on_model or (lambda n: None))(name)
        out[name] = split_refusal(name)
    return out
