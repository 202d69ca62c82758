"""Driving a study: ask Optuna for points, run them, tell it the results, until the budget.

The study's own process is the only one that asks and tells, so the budget is exact
even with trials in parallel: `n_trials` finished trials (complete, pruned, failed or
infeasible; interrupted ones are retried and do not count), and no new trial starts
after `timeout_s` seconds of this session (running ones finish). Trials run through an
executor: in this process one at a time, or as Ray tasks N at a time (the executor the
caller gives: sfprompt.actors.trials.RayExecutor).

    start_study(FILE)      new study directory from a study file, then run it
    run_study(DIR)         run (or resume) the study in DIR: recovers interrupted trials
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from sfprompt.platform.errors import SfpromptError
from sfprompt.studies.spec import StudySpec, load_spec
from sfprompt.studies.storage import (RUNS_DIR, counts_against_budget, create_study_dir,
                                      load_study, read_study_spec, recover_interrupted,
                                      StorageRef, storage_ref, study_lock)
from sfprompt.studies.strategies import make_sampler, make_trial_pruner
from sfprompt.studies.trial import TrialOutcome, TrialRequest, execute_trial, optuna_reporter

log = logging.getLogger(__name__)
DEFAULT_PARENT = Path("runs") / "studies"
# (trial just told, trials that count against the budget so far, the budget n_trials)
OnTrial = Callable[[FrozenTrial, int, int], None]

_STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}


class Executor(Protocol):
    running: int  # trials submitted and not yet returned by next_done

    def has_room(self) -> bool: ...
    def submit(self, trial: optuna.Trial, request: TrialRequest) -> None: ...
    def next_done(self) -> tuple[optuna.Trial, TrialOutcome]: ...


# (storage, study name, trial pruner name, its options): what a worker needs to report.
Pruning = tuple[StorageRef, str, str, dict[str, Any]]
# (trials at once, CPUs per trial, pruning or None) -> an executor: RayExecutor.
MakeExecutor = Callable[[int, float, "Pruning | None"], Executor]


class LocalExecutor:
    """One trial at a time, in this process; a trial pruner, if any, is asked directly."""

    def __init__(self, pruning: bool) -> None:
        self.pruning = pruning
        self._pending: tuple[optuna.Trial, TrialRequest] | None = None

    @property
    def running(self) -> int:
        return int(self._pending is not None)

    def has_room(self) -> bool:
        return self._pending is None

    def submit(self, trial: optuna.Trial, request: TrialRequest) -> None:
        self._pending = (trial, request)

    def next_done(self) -> tuple[optuna.Trial, TrialOutcome]:
        assert self._pending is not None
        trial, request = self._pending
        outcome = execute_trial(request, optuna_reporter(trial) if self.pruning else None)
        self._pending = None
        return trial, outcome

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass


def start_study(spec_path: str | Path, study_dir: str | Path | None = None,
                parallel: int | None = None, on_trial: OnTrial | None = None,
                make_executor: MakeExecutor | None = None) -> Path:
    """Create the study directory of the study file `spec_path` and run the study."""
    spec = load_spec(spec_path)
    study_dir = Path(study_dir) if study_dir else DEFAULT_PARENT / spec.name
    create_study_dir(spec, study_dir)
    run_study(study_dir, parallel, on_trial, make_executor)
    return study_dir


def run_study(study_dir: str | Path, parallel: int | None = None,
              on_trial: OnTrial | None = None,
              make_executor: MakeExecutor | None = None) -> optuna.Study:
    """Run the study in `study_dir` until its budget is spent; resumes where it stopped.
    More than one trial at once needs `make_executor`
    (`sfprompt.actors.trials.RayExecutor`, which the CLI passes)."""
    study_dir = Path(study_dir)
    spec = read_study_spec(study_dir)
    if parallel is not None and parallel < 1:
        raise SfpromptError(f"--parallel: must be >= 1, got {parallel}")
    parallel = parallel or spec.parallel
    with study_lock(study_dir):
        study = load_study(spec, study_dir,
                           sampler=make_sampler(spec.sampler, spec.sampler_options, spec.seed),
                           pruner=make_trial_pruner(spec.trial_pruner, spec.trial_pruner_options))
        recover_interrupted(study)
        try:
            with _executor(spec, study_dir, study, parallel, make_executor) as executor:
                _drive(study, spec, study_dir, executor, parallel,
                       on_trial or (lambda t, done, total: None))
        except KeyboardInterrupt:
            recover_interrupted(study)  # this process is the only driver: ours are dead
            raise
    return study


def _executor(spec: StudySpec, study_dir: Path, study: optuna.Study, parallel: int,
              make_executor: MakeExecutor | None):
    if parallel == 1:
        return LocalExecutor(pruning=spec.trial_pruner != "none")
    if make_executor is None:
        raise SfpromptError(f"parallel.trials: {parallel} trials at once need make_executor="
                            "sfprompt.actors.trials.RayExecutor (or run one at a time)")
    pruning = None
    if spec.trial_pruner != "none":  # Optuna takes intermediate reports only then
        pruning = (storage_ref(spec, study_dir), study.study_name, spec.trial_pruner,
                   spec.trial_pruner_options)
    return make_executor(parallel, spec.cpus_per_trial, pruning)


def _counted(study: optuna.Study) -> int:
    return sum(counts_against_budget(t) for t in study.get_trials(deepcopy=False))


def _remaining(study: optuna.Study, spec: StudySpec, executor: Executor) -> int:
    return spec.n_trials - _counted(study) - executor.running


def _drive(study: optuna.Study, spec: StudySpec, study_dir: Path, executor: Executor,
           parallel: int, on_trial: OnTrial) -> None:
    deadline = time.monotonic() + spec.timeout_s if spec.timeout_s else math.inf
    runs_dir = str((study_dir / RUNS_DIR).resolve())
    threads = max(1, int(spec.cpus_per_trial)) if parallel > 1 else 0
    log.info("study %s: %d trials to go", spec.name, _remaining(study, spec, executor))
    exhausted = False  # the sampler has tried every point (grid and brute-force samplers)
    while True:
        while (executor.has_room() and _remaining(study, spec, executor) > 0
               and time.monotonic() < deadline and not exhausted):
            trial = study.ask()
            request = TrialRequest(trial.number, spec.suggest(trial), spec.fixed,
                                   spec.objectives, runs_dir, spec.memory_fraction, threads)
            log.info("trial %d: %s", trial.number, request.params)
            # Known before the run: an interrupted trial still points at its partial run.
            trial.set_user_attr("run_id", request.run_id)
            executor.submit(trial, request)
        if not executor.running:
            return
        trial, outcome = executor.next_done()
        told, done = _tell(study, trial, outcome)
        exhausted = exhausted or done
        on_trial(told, _counted(study), spec.n_trials)


def _tell(study: optuna.Study, trial: optuna.Trial,
          outcome: TrialOutcome) -> tuple[FrozenTrial, bool]:
    """The told trial, and whether the sampler has now tried its whole space."""
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    try:
        if outcome.state == "complete":
            return study.tell(trial, outcome.values), False
        return study.tell(trial, state=_STATES[outcome.state]), False
    except RuntimeError as err:
        # A sampler with a finite space asks the study to stop once it has tried it all,
        # which Optuna allows only inside `optimize`; the trial is stored before that.
        if not str(err).startswith("`Study.stop`"):
            raise
        return study.get_trials(deepcopy=False)[trial.number], True
