"""One trial: a point of the space becomes a config, a feasibility check and a run.

`execute_trial` is a plain function of picklable inputs, so the same code runs in the
study's own process or inside a Ray task. It never raises for a bad point: an
infeasible config, a failed run or a non-finite objective come back as a failed
`TrialOutcome` whose `fail_reason` says why, so one trial cannot end a study.

Each trial is one in-process run (`run.backend = "local"`) in `<study>/runs/trial-NNNN`.
Parallelism is across trials, which are independent; a trial that started its own
Ray actors would have to fit them inside its reserved bundle, and an actor pool per
trial costs more memory than the trial's work (docs/design.md, Architecture; figures in
the README's Benchmarks), for no speed-up when the trials already fill the machine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.results.experiment import run_experiment
from sfprompt.studies.feasibility import check_memory
from sfprompt.studies.objectives import Objective

log = logging.getLogger(__name__)

# (round, intermediate value of the first objective) -> should the trial stop now?
Reporter = Callable[[int, float], bool]


@dataclass(frozen=True)
class TrialRequest:
    number: int                      # Optuna trial number; names the run directory
    params: dict[str, Any]           # dotted key -> suggested value
    fixed: dict[str, Any]            # the study's fixed settings
    objectives: tuple[Objective, ...]
    runs_dir: str                    # <study>/runs
    memory_fraction: float           # feasibility.memory_fraction
    threads: int = 0                 # torch threads (0 = keep the config's run.threads)

    @property
    def run_id(self) -> str:
        return f"trial-{self.number:04d}"


@dataclass(frozen=True)
class TrialOutcome:
    state: str                        # "complete" | "pruned" | "fail"
    values: list[float] | None = None  # one per objective when complete
    attrs: dict[str, Any] = field(default_factory=dict)  # stored as trial user attrs


def trial_config(request: TrialRequest) -> Config:
    """The trial's config; raises ConfigError for a point the config rejects."""
    owned = {"run.out_dir": request.runs_dir, "run.run_id": request.run_id,
             "run.backend": "local"}
    if request.threads and "run.threads" not in {**request.fixed, **request.params}:
        owned["run.threads"] = request.threads
    return replace(Config(), **{**request.fixed, **request.params, **owned})


def optuna_reporter(trial: optuna.Trial) -> Reporter:
    """Report to `trial` and ask its study's trial pruner whether to stop."""
    def report(step: int, value: float) -> bool:
        trial.report(value, step)
        return trial.should_prune()
    return report


def execute_trial(request: TrialRequest, report: Reporter | None = None) -> TrialOutcome:
    """Check and run one point; with `report`, a trial pruner may stop it between rounds."""
    try:
        cfg = trial_config(request)
        check_memory(cfg, request.memory_fraction)
    except SfpromptError as err:
        log.info("trial %d is infeasible: %s", request.number, err)
        return TrialOutcome("fail", attrs={"run_id": "", "infeasible": True,
                                           "fail_reason": str(err)})

    rows: list[dict] = []

    def on_round(row: dict) -> None:
        rows.append(row)
        if report is not None and report(row["round"], request.objectives[0].value(rows)):
            raise optuna.TrialPruned(f"stopped by the trial pruner after round {row['round']}")

    def outcome(state: str, values: list[float] | None = None, **attrs: Any) -> TrialOutcome:
        ran = (Path(request.runs_dir) / request.run_id).is_dir()
        return TrialOutcome(state, values, {"run_id": request.run_id if ran else "",
                                            "rounds_done": len(rows), **attrs})

    try:
        run_experiment(cfg, on_round)
        values = [o.value(rows) for o in request.objectives]
    except optuna.TrialPruned:
        return outcome("pruned")
    except SfpromptError as err:
        return outcome("fail", fail_reason=str(err))
    except Exception as err:  # a bug in one trial's run must not end the study
        log.exception("trial %d failed", request.number)
        return outcome("fail", fail_reason=f"{type(err).__name__}: {err}")
    bad = [o.name for o, v in zip(request.objectives, values) if not math.isfinite(v)]
    if bad:
        return outcome("fail", fail_reason=f"objective {bad[0]} is not finite")
    return outcome("complete", values)
