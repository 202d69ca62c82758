"""The study directory, its Optuna storage, and recovery after a killed study.

    <dir>/study.toml      the study as run (self-contained: a base config file is inlined)
    <dir>/study.db        SQLite storage (default; `optuna-dashboard sqlite:///<dir>/study.db`)
    <dir>/study.journal   journal storage (storage.kind = "journal": append-only file, the
                          Optuna choice when many processes write at once)
    <dir>/study.lock      held (flock) by the process driving the study
    <dir>/runs/trial-NNNN one run directory per trial
    <dir>/trials.parquet, pareto.*, plots/   exports (export.py)

Resume. A study killed mid-way (SIGKILL, a lost node) leaves its in-flight trials in
state RUNNING forever; Optuna cannot tell a dead trial from a slow one. The lock settles
it: only the process holding `study.lock` drives the study and the kernel drops an
flock when its holder dies, so whoever gets the lock knows every RUNNING trial is dead.
Each one is marked FAIL (user attr `interrupted`, its reason in `fail_reason`) and its
parameters are enqueued again (user attr `retry_of`), so no point is lost; finished
trials are never touched, so none is repeated. Interrupted trials do not count against
the budget. A trial whose run had finished but whose result was not yet stored when the
process died is run again: its run directory stays, and the retry writes a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import tomli_w
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sfprompt.platform.errors import SfpromptError
from sfprompt.results.atomic import atomic_write_text
from sfprompt.studies.spec import StudySpec, spec_from_dict

log = logging.getLogger(__name__)

SPEC_FILE, LOCK_FILE, RUNS_DIR = "study.toml", "study.lock", "runs"
STORAGE_FILES = {"sqlite": "study.db", "journal": "study.journal"}
# SQLite waits this long for another writer (parallel trials reporting) before failing.
_SQLITE_TIMEOUT_S = 60


@dataclass(frozen=True)
class StorageRef:
    """How any process (the driver, a Ray worker) opens the study's storage."""

    kind: str    # "sqlite" | "journal" | "url"
    target: str  # file path, or the RDB URL

    def open(self) -> optuna.storages.BaseStorage:
        if self.kind == "journal":
            return optuna.storages.JournalStorage(JournalFileBackend(self.target))
        url = self.target if self.kind == "url" else f"sqlite:///{self.target}"
        engine = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}} if self.kind == "sqlite" else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def storage_ref(spec: StudySpec, study_dir: Path) -> StorageRef:
    if spec.storage_url:
        return StorageRef("url", spec.storage_url)
    return StorageRef(spec.storage, str((study_dir / STORAGE_FILES[spec.storage]).resolve()))


def create_study_dir(spec: StudySpec, study_dir: Path) -> None:
    """Make `study_dir` and write its `study.toml`; an existing study is never reused."""
    if (study_dir / SPEC_FILE).exists():
        raise SfpromptError(f"study directory {study_dir} already holds a study; "
                            f"continue it with `sfprompt study resume {study_dir}`")
    try:
        (study_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SfpromptError(f"cannot create study directory {study_dir}: {err.strerror}") from err
    header = f"# Study {spec.name}, as run; `sfprompt study resume {study_dir}` continues it.\n"
    atomic_write_text(study_dir / SPEC_FILE, header + tomli_w.dumps(spec.to_dict()))


def read_study_spec(study_dir: Path) -> StudySpec:
    path = study_dir / SPEC_FILE
    if not path.is_file():
        raise SfpromptError(f"{study_dir}: not a study directory (no {SPEC_FILE})")
    return spec_from_dict(tomllib.loads(path.read_text()))


def load_study(spec: StudySpec, study_dir: Path, **kwargs) -> optuna.Study:
    """The study in `study_dir`'s storage, created on first use."""
    return optuna.create_study(storage=storage_ref(spec, study_dir).open(), study_name=spec.name,
                               directions=spec.directions, load_if_exists=True, **kwargs)


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Hold `study.lock` for the block, or fail at once if another process holds it."""
    with open(study_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise SfpromptError(f"study {study_dir} is being run by another process "
                                f"(pid {holder}); wait for it or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail and re-enqueue the trials a dead process left RUNNING (module doc); call only
    while holding the study lock. Returns their numbers."""
    storage = study._storage  # Optuna has no public way to end another process's trial
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                    "interrupted: the study process died during this trial")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        numbers.append(trial.number)
    if numbers:
        log.warning("trials %s were interrupted; their parameters are queued again", numbers)
    return numbers


def counts_against_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials count (failed and infeasible ones too); interrupted ones do not."""
    if trial.state == TrialState.FAIL:
        return not trial.user_attrs.get("interrupted", False)
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
