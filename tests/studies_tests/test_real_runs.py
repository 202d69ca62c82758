"""Studies of real (tiny) runs: in this process, and two at a time on Ray."""

import tomllib
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from sfprompt.actors.trials import RayExecutor
from sfprompt.platform.model.plans import parse_tiers
from sfprompt.results.tables import read_clients, read_rounds
from sfprompt.studies.export import export_study
from sfprompt.studies.runner import start_study
from sfprompt.studies.storage import load_study, read_study_spec

ROOT = Path(__file__).resolve().parents[2]
ONE_ROUND = {"fed.rounds": 1, "data.max_samples": 100}
SLOW = pytest.mark.slow  # real training: ~10-30 s per trial on a loaded 2-core CPU


def test_a_real_trial_through_the_ray_executor(write_study, tables, tmp_path):
    # The fast version of the two below: one tiny real run as a Ray task, its
    # objectives those of its own run directory.
    fixed = {**tables()["fixed"], "fed.rounds": 1, "data.max_samples": 40,
             "fed.num_clients": 2, "fed.clients_per_round": 2}
    path = write_study(fixed=fixed, space={"prompt.length": {"choices": [2]}},
                       budget={"n_trials": 1}, parallel={"trials": 2, "cpus_per_trial": 1})
    study_dir = start_study(path, tmp_path / "s", make_executor=RayExecutor)
    (trial,) = load_study(read_study_spec(study_dir), study_dir).trials
    assert trial.state == TrialState.COMPLETE
    rounds = read_rounds(study_dir / "runs" / trial.user_attrs["run_id"])
    assert trial.values == [rounds["accuracy"].iloc[-1],
                            (rounds["bytes.up"] + rounds["bytes.down"]).sum()]
    assert rounds["run.threads"].iloc[0] == 1 and rounds["prompt.length"].iloc[0] == 2


def test_the_shipped_split_per_tier_study_runs_on_ray(write_study, tables, tmp_path):
    # studies/examples/split_per_tier.toml as shipped (space, objectives, brute-force
    # sampler, 2 trials at once on Ray) on the tiny model: every trial's clients hold
    # the splits its tier plan gives their tiers.
    shipped = tomllib.loads((ROOT / "studies/examples/split_per_tier.toml").read_text())
    fixed = {**tables()["fixed"], **shipped["fixed"], "fed.rounds": 1,
             "data.max_samples": 60, "fed.num_clients": 4, "fed.clients_per_round": 4}
    path = write_study(**{**shipped, "fixed": fixed, "budget": {"n_trials": 2}})
    study_dir = start_study(path, tmp_path / "s", make_executor=RayExecutor)
    trials = load_study(read_study_spec(study_dir), study_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert len({t.params["split.tiers"] for t in trials}) == 2  # brute force: no repeat
    for trial in trials:
        run_dir = study_dir / "runs" / trial.user_attrs["run_id"]
        tiers = parse_tiers(trial.params["split.tiers"])
        clients = read_clients(run_dir)
        assert [tiers[t] for t in clients["profile.tier"]] == list(zip(
            clients["split.head_blocks"], clients["split.tail_blocks"]))
        assert trial.values[2] == read_rounds(run_dir)["sim.elapsed_seconds"].iloc[-1]


@SLOW
def test_objectives_match_the_trials_run_directories(write_study, tables, tmp_path):
    path = write_study(fixed={**tables()["fixed"], **ONE_ROUND}, budget={"n_trials": 2})
    study_dir = start_study(path, tmp_path / "s")
    export_study(study_dir)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert list(trials["state"]) == ["complete", "complete"]
    for _, trial in trials.iterrows():
        rounds = read_rounds(study_dir / "runs" / trial["run_id"])
        assert trial["accuracy"] == rounds["accuracy"].iloc[-1]
        assert trial["bytes.total"] == (rounds["bytes.up"] + rounds["bytes.down"]).sum()
        assert rounds["split.head_blocks"].iloc[0] == trial["split.head_blocks"]
        assert rounds["run.backend"].iloc[0] == "local"


@SLOW
def test_two_trials_at_once_on_ray_report_to_the_pruner(write_study, tables, tmp_path):
    # Single objective with a trial pruner that never fires (startup > budget): the Ray
    # workers must still report every round to the shared storage.
    path = write_study(fixed={**tables()["fixed"], "fed.rounds": 2, "data.max_samples": 100},
                       objectives=[{"metric": "accuracy", "direction": "maximize"}],
                       trial_pruner={"name": "median", "n_startup_trials": 10},
                       budget={"n_trials": 2}, parallel={"trials": 2, "cpus_per_trial": 1})
    study_dir = start_study(path, tmp_path / "s", make_executor=RayExecutor)
    first, second = load_study(read_study_spec(study_dir), study_dir).trials
    assert first.state == second.state == TrialState.COMPLETE
    assert sorted(first.intermediate_values) == sorted(second.intermediate_values) == [1, 2]
    # They ran side by side: each started before the other finished.
    assert first.datetime_start < second.datetime_complete
    assert second.datetime_start < first.datetime_complete
    for t in (first, second):
        rounds = read_rounds(study_dir / "runs" / t.user_attrs["run_id"])
        assert t.value == rounds["accuracy"].iloc[-1]
        assert rounds["run.threads"].iloc[0] == 1
