"""Storages and recovery of trials a killed study left running."""

import optuna
import pytest
from optuna.trial import TrialState

from sfprompt.studies.spec import load_spec
from sfprompt.studies.storage import (StorageRef, counts_against_budget, create_study_dir,
                                      load_study, recover_interrupted, storage_ref)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_running_trials_are_failed_and_their_params_queued_again(tmp_path, kind):
    path = tmp_path / ("s.db" if kind == "sqlite" else "s.journal")
    study = optuna.create_study(storage=StorageRef(kind, str(path)).open(), study_name="s",
                                directions=["maximize", "minimize"])
    done = study.ask()
    done.suggest_int("split.head_blocks", 0, 3)
    study.tell(done, [0.5, 10.0])
    dead = study.ask()
    params = {"split.head_blocks": dead.suggest_int("split.head_blocks", 0, 3),
              "prune.keep": dead.suggest_float("prune.keep", 0.2, 1.0)}

    # A fresh process opens the same storage after the first one died.
    again = optuna.load_study(study_name="s", storage=StorageRef(kind, str(path)).open())
    assert recover_interrupted(again) == [dead.number]
    trials = again.trials
    assert trials[0].state == TrialState.COMPLETE and trials[0].values == [0.5, 10.0]
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["interrupted"] is True
    assert trials[2].state == TrialState.WAITING
    assert trials[2].user_attrs["retry_of"] == dead.number
    assert [counts_against_budget(t) for t in trials] == [True, False, False]
    retry = again.ask()  # the queued point comes back first, with the same values
    assert retry.number == 2
    assert {k: retry.suggest_float(k, 0.2, 1.0) if k == "prune.keep" else
            retry.suggest_int(k, 0, 3) for k in params} == params
    assert recover_interrupted(again) == [2]  # only RUNNING trials, never finished ones


def test_journal_storage_file_lives_in_the_study_directory(fake_runs, write_study, tmp_path):
    spec = load_spec(write_study(storage={"kind": "journal"}))
    create_study_dir(spec, tmp_path / "s")
    ref = storage_ref(spec, tmp_path / "s")
    assert ref == StorageRef("journal", str((tmp_path / "s" / "study.journal").resolve()))
    load_study(spec, tmp_path / "s")
    assert (tmp_path / "s" / "study.journal").is_file()
    assert not (tmp_path / "s" / "study.db").exists()
