"""A study's report.html: optuna.visualization's front, history and importances,
the front and trials tables, rendered in a real headless browser."""

import pandas as pd

import sfprompt
from sfprompt.cli import main
from sfprompt.results.report import REPORT_FILE
from sfprompt.studies.export import TRIALS_FILE


def test_a_study_page_shows_the_front_history_and_importances(tmp_path, fake_runs,
                                                              write_study, browser, capsys):
    trials = sfprompt.study(write_study(budget={"n_trials": 6}), tmp_path / "s")
    assert (trials["state"] == "complete").sum() == 6
    assert main(["report", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert out.endswith(f"  {tmp_path / 's' / REPORT_FILE}\n") and TRIALS_FILE in out
    page = (tmp_path / "s" / REPORT_FILE).read_text()
    for title in ("Pareto front", "Optimisation history: accuracy",
                  "Parameter importances: bytes.total", "All trials"):
        assert f"<h2>{title}</h2>" in page, title
    # Each objective's history and importances, and the front: 5 figures, all drawn.
    assert browser(tmp_path / "s" / REPORT_FILE, "report-study.png") == 5
    front = pd.read_parquet(tmp_path / "s" / "pareto.parquet")
    assert all(f">{t}<" in page for t in front["trial"])  # the front's trials in its table


def test_a_study_without_complete_trials_says_so(tmp_path, fake_runs, write_study, tables):
    diverging = {**tables()["fixed"], "train.lr": 0.9}  # fake_run raises "diverged"
    trials = sfprompt.study(write_study(fixed=diverging, budget={"n_trials": 2}),
                            tmp_path / "s")
    assert set(trials["state"]) == {"fail"}
    page = sfprompt.report(tmp_path / "s").read_text()
    assert "no complete trial yet" in page and 'class="plotly-graph-div"' not in page
