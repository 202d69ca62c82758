"""Running, resuming and exporting studies (fake runs: the machinery, not training)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import sqlalchemy
from optuna.trial import TrialState

import sfprompt
from sfprompt.cli import main
from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import SfpromptError
from sfprompt.studies.export import export_study
from sfprompt.studies.runner import run_study, start_study
from sfprompt.studies.spec import load_spec
from sfprompt.studies.storage import create_study_dir, load_study, read_study_spec, study_lock

HERE = Path(__file__).parent


def dominated(a, b, signs) -> bool:
    """Is point a dominated by b (signs: +1 maximise, -1 minimise)?"""
    at_least = all(s * y >= s * x for x, y, s in zip(a, b, signs))
    return at_least and any(s * y > s * x for x, y, s in zip(a, b, signs))


def test_study_runs_the_budget_and_exports(fake_runs, write_study, tmp_path):
    study_dir = start_study(write_study(), tmp_path / "s")
    assert not (study_dir / "trials.parquet").exists()  # exports are written on request
    written = export_study(study_dir)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert len(trials) == 5 and set(trials["state"]) == {"complete"}
    assert list(trials.columns[:6]) == ["trial", "state", "accuracy", "bytes.total",
                                        "split.head_blocks", "prompt.length"]
    base = replace(Config(), **load_spec(write_study()).fixed)
    for _, row in trials.iterrows():  # objectives are the fake's closed forms
        cfg = replace(base, **{"split.head_blocks": row["split.head_blocks"],
                                              "prompt.length": row["prompt.length"]})
        assert row["accuracy"] == pytest.approx(fake_runs.accuracy(cfg, cfg.fed.rounds))
        assert row["bytes.total"] == 2 * (fake_runs.bytes_up(cfg) + fake_runs.bytes_down(cfg))
        assert (study_dir / "runs" / row["run_id"]).is_dir()
        assert row["duration_seconds"] >= 0
    points = trials[["accuracy", "bytes.total"]].to_numpy()
    expected = {int(t) for t, p in zip(trials["trial"], points)
                if not any(dominated(p, q, (1, -1)) for q in points)}
    assert set(trials.loc[trials["pareto"], "trial"]) == expected
    pareto = pd.read_parquet(study_dir / "pareto.parquet")
    assert set(pareto["trial"]) == expected
    assert list(pareto["accuracy"]) == sorted(pareto["accuracy"], reverse=True)
    md = (study_dir / "pareto.md").read_text()
    assert md.count("\n| ") == len(expected) + 1 and "maximize accuracy" in md
    for name in ("pareto_front", "history", "importances"):
        png = study_dir / "plots" / f"{name}.png"
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(study_dir.rglob(".*.tmp"))


def test_infeasible_and_failing_trials_are_recorded_not_raised(fake_runs, write_study, tmp_path):
    # head 12 + tail 1 exceeds ViT-Tiny's 12 blocks; lr 0.9 makes the fake run raise.
    path = write_study(space={"split.head_blocks": {"choices": [11, 12]},
                              "train.lr": {"choices": [0.01, 0.9]}},
                       budget={"n_trials": 8})
    study_dir = start_study(path, tmp_path / "s")
    export_study(study_dir)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert len(trials) == 8
    too_deep = trials["split.head_blocks"] == 12
    diverged = ~too_deep & (trials["train.lr"] == 0.9)
    assert too_deep.any() and diverged.any()
    assert set(trials.loc[too_deep | diverged, "state"]) == {"fail"}
    assert trials.loc[too_deep, "infeasible"].all()
    assert trials.loc[too_deep, "fail_reason"].str.startswith("split: head_blocks + tail_blocks").all()
    assert (trials.loc[too_deep, "run_id"] == "").all()  # never ran
    assert (trials.loc[diverged, "fail_reason"] == "RuntimeError: diverged").all()
    assert set(trials.loc[~too_deep & ~diverged, "state"]) == {"complete"}


def test_trial_pruner_stops_trailing_trials(fake_runs, write_study, tables, tmp_path):
    path = write_study(objectives=[{"metric": "accuracy", "direction": "maximize"}],
                       trial_pruner={"name": "median", "n_startup_trials": 1},
                       fixed={**tables()["fixed"], "fed.rounds": 4}, budget={"n_trials": 4})
    spec, study_dir = load_spec(path), tmp_path / "s"
    create_study_dir(spec, study_dir)
    study = load_study(spec, study_dir)
    # Fake accuracy at round r: (0.5 + 0.02 prompt - 0.05 head) r / 4. Three improving
    # points, then the worst point of the space: below the median from round 1 on.
    for head, prompt in ((1, 4), (0, 4), (0, 8), (3, 0)):
        study.enqueue_trial({"split.head_blocks": head, "prompt.length": prompt})
    run_study(study_dir)
    trials = load_study(spec, study_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert [t.user_attrs["rounds_done"] for t in trials] == [4, 4, 4, 1]
    assert trials[3].intermediate_values == {1: pytest.approx(0.35 / 4)}
    assert trials[0].value == pytest.approx(0.53)


def test_timeout_stops_starting_trials(fake_runs, write_study, tmp_path, monkeypatch):
    # The runner's clock is a fake one that only a trial moves, by 0.4 s: trials start
    # at 0, 0.4 and 0.8 s, and at 1.2 s the 1 s timeout has passed, so exactly 3 run.
    now = [0.0]

    def trial_taking_0_4_s(cfg, on_round=lambda row: None):
        run_dir = fake_runs.fake_run(cfg, on_round)
        now[0] += 0.4
        return run_dir

    monkeypatch.setattr("sfprompt.studies.runner.time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr("sfprompt.studies.trial.run_experiment", trial_taking_0_4_s)
    study_dir = start_study(write_study(budget={"n_trials": 50, "timeout_s": 1.0}),
                            tmp_path / "s")
    trials = load_study(read_study_spec(study_dir), study_dir).trials
    assert len(trials) == 3 and now[0] == pytest.approx(1.2)
    assert all(t.state == TrialState.COMPLETE for t in trials)  # running ones finish


def test_a_study_directory_is_never_reused_and_is_locked(fake_runs, write_study, tmp_path):
    study_dir = start_study(write_study(budget={"n_trials": 1}), tmp_path / "s")
    with pytest.raises(SfpromptError, match="already holds a study; continue it with"):
        start_study(write_study(), study_dir)
    with study_lock(study_dir):
        with pytest.raises(SfpromptError, match="being run by another process"):
            run_study(study_dir)
    with pytest.raises(SfpromptError, match="not a study directory"):
        run_study(tmp_path)


KILLED_STUDY = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("fake_runs", {fake!r})
    fake = importlib.util.module_from_spec(spec); spec.loader.exec_module(fake)
    fake.ROUND_SLEEP_S = 0.25
    import sfprompt.studies.trial
    sfprompt.studies.trial.run_experiment = fake.fake_run
    from sfprompt.cli import main
    sys.exit(main(["study", "run", {study!r}, "--dir", {dir!r}]))
""")


def progressed(study_dir: Path) -> bool:
    if not (study_dir / "study.db").exists():
        return False
    try:
        trials = optuna.load_study(study_name="t", storage=f"sqlite:///{study_dir}/study.db").trials
    except KeyError:  # the file exists, the study not yet
        return False
    except sqlalchemy.exc.OperationalError:  # frozen mid-write, holding the database lock
        return False
    states = [t.state for t in trials]
    return states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states


# Slow: it polls a live study for the moment "2 done, 1 running"; on a loaded 2-core
# machine the study can finish between two polls (seen once in CI-like conditions), so it
# stays out of the default run until the child can be paused at that point on purpose.
@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(fake_runs, write_study, tmp_path):
    path = write_study(budget={"n_trials": 4})
    study_dir = tmp_path / "s"
    script = KILLED_STUDY.format(fake=str(HERE / "fake_runs.py"), study=str(path),
                                 dir=str(study_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until 2 trials finished and one is running
            time.sleep(0.2)
            os.kill(proc.pid, signal.SIGSTOP)  # freeze it, so what we see is what we kill
            if progressed(study_dir):
                break
            os.kill(proc.pid, signal.SIGCONT)
        else:
            pytest.fail(f"study did not progress: {proc.stderr.read() if proc.poll() else ''}")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    spec = read_study_spec(study_dir)
    before = {t.number: t for t in load_study(spec, study_dir).trials}
    finished = {n: t for n, t in before.items() if t.state == TrialState.COMPLETE}
    [killed] = [t for t in before.values() if t.state == TrialState.RUNNING]

    assert main(["study", "resume", str(study_dir)]) == 0
    after = load_study(spec, study_dir).trials
    for n, t in finished.items():  # finished trials untouched
        assert after[n].state == TrialState.COMPLETE and after[n].values == t.values
        assert after[n].datetime_complete == t.datetime_complete
    assert after[killed.number].state == TrialState.FAIL
    assert after[killed.number].user_attrs["interrupted"] is True
    assert after[killed.number].user_attrs["run_id"] == f"trial-{killed.number:04d}"
    [retry] = [t for t in after if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # the budget, with the interrupted trial not counted
    run_ids = [t.user_attrs["run_id"] for t in complete]
    assert len(set(run_ids)) == 4 and all((study_dir / "runs" / r).is_dir() for r in run_ids)
    trials = pd.read_parquet(study_dir / "trials.parquet")
    assert len(trials) == 5 and (trials["state"] == "complete").sum() == 4


def test_cli_reports_user_errors_in_one_line(write_study, tmp_path, capsys):
    bad = write_study(budget={"n_trials": 0})
    assert main(["study", "run", str(bad), "--dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sfprompt: error: study file") and "budget.n_trials" in err
    assert "\n" not in err
    assert main(["study", "export", str(tmp_path)]) == 2


def test_parallel_trials_need_the_ray_executor(write_study, tmp_path):
    # Ray lives in actors/: studies run trials side by side only with its executor.
    path = write_study(budget={"n_trials": 2}, parallel={"trials": 2, "cpus_per_trial": 1})
    with pytest.raises(SfpromptError, match=r"^parallel\.trials: 2 trials at once need "
                                            r"make_executor=sfprompt\.actors\.trials\.RayExecutor"):
        start_study(path, tmp_path / "s")


def test_each_ended_trial_reports_the_trials_done_of_the_budget(tmp_path, fake_runs, write_study,
                                                                 capsys):
    calls = []
    sfprompt.study(write_study(budget={"n_trials": 3}), tmp_path / "s",
                   on_trial=lambda t, done, total: calls.append((t.number, done, total)))
    assert calls == [(0, 1, 3), (1, 2, 3), (2, 3, 3)]
    # The command prints it: a resumed study with a larger budget counts on from 3.
    spec = tmp_path / "s" / "study.toml"
    spec.write_text(spec.read_text().replace("n_trials = 3", "n_trials = 4"))
    assert main(["study", "resume", str(tmp_path / "s")]) == 0
    assert "[4/4] trial    3 complete" in capsys.readouterr().out


def test_a_brute_force_study_stops_when_it_has_tried_every_point(fake_runs, write_study,
                                                                tmp_path):
    # The sampler asks the study to stop once its space is exhausted (Optuna allows that
    # only inside `optimize`): the study ends there, each point tried once, nothing lost.
    path = write_study(space={"prompt.length": {"choices": [0, 4, 8]}},
                       budget={"n_trials": 5}, sampler={"name": "bruteforce", "seed": 0})
    study_dir = start_study(path, tmp_path / "s")
    trials = load_study(read_study_spec(study_dir), study_dir).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params["prompt.length"] for t in trials) == [0, 4, 8]
