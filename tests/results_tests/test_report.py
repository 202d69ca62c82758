"""report.html of a run and of a comparison: the figures carry the tables' numbers
(checked against sums by hand), the page is self-contained, and a real headless
browser renders every figure with no console error."""

import json

import pytest

import sfprompt
from sfprompt.cli import main
from sfprompt.results.report import REPORT_FILE, accuracy_figures, run_sections, tier_time_figure
from sfprompt.results.summary import load_compare
from sfprompt.results.tables import read_clients, read_rounds, write_clients, write_rounds


def _write_run(root, name, method, seed, accuracies):
    """A completed run: round r moves 1 MB up and r MB down and takes 10 simulated
    seconds; two clients a round, a phone (2 s compute, 3 s comm) and a laptop (1, 1)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    write_rounds(run_dir, [
        {"round": r, "accuracy": a, "loss": 1.0 / r, "wall_seconds": 1.0, "participants": 2,
         "bytes.up": 1e6, "bytes.down": r * 1e6, "bytes.upload": 1e6, "bytes.download": r * 1e6,
         "bytes.frozen_download": 0.0,
         "flops.client": 7e9, "flops.server": 3e9, "sim.elapsed_seconds": 10.0 * r, "train.method": method,
         "run.seed": seed}
        for r, a in enumerate(accuracies, start=1)])
    write_clients(run_dir, [
        {"round": r, "client": c, "profile.tier": tier, "sim.compute_seconds": compute * r,
         "sim.comm_seconds": comm, "sim.idle_seconds": 0.0}
        for r in range(1, len(accuracies) + 1)
        for c, (tier, compute, comm) in enumerate((("phone", 2.0, 3.0), ("laptop", 1.0, 1.0)))])
    (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))
    return run_dir


def test_the_accuracy_figures_plot_the_runs_cumulative_traffic_and_time(tmp_path):
    _write_run(tmp_path, "a", "fl", 0, [0.2, 0.4, 0.6])
    _write_run(tmp_path, "b", "fl", 1, [0.4, 0.6, 0.8])
    _write_run(tmp_path, "c", "sfprompt", 0, [0.1, 0.2, 0.3])
    by_round, by_bytes, by_time = accuracy_figures(load_compare(tmp_path), ["sfprompt", "fl"])
    assert [t.name for t in by_round.figure.data] == ["sfprompt", "fl"]  # the given order
    fl = by_bytes.figure.data[1]
    assert list(fl.y) == pytest.approx([0.3, 0.5, 0.7])  # the mean over the two seeds
    assert list(fl.x) == [2.0, 5.0, 9.0]  # MB: (1 up + r down), summed over rounds
    assert list(by_time.figure.data[0].x) == [10.0, 20.0, 30.0]
    assert by_bytes.figure.layout.xaxis.type == "log"


def test_tier_time_is_the_mean_client_round_by_part(tmp_path):
    clients = read_clients(_write_run(tmp_path, "a", "fl", 0, [0.2, 0.4]))
    section = tier_time_figure(clients)
    parts = {t.name: dict(zip(t.y, t.x)) for t in section.figure.data}
    assert parts["compute"] == {"laptop": 1.5, "phone": 3.0}  # (1 + 2) / 2 and (2 + 4) / 2
    assert parts["comm"] == {"laptop": 1.0, "phone": 3.0}
    assert set(parts) == {"compute", "comm", "idle"}  # the parts the table has
    # No tier column: a line saying so, not a figure.
    assert tier_time_figure(clients.drop(columns="profile.tier")).figure is None


def test_the_run_page_is_one_file_with_its_tables_and_no_outside_resource(tmp_path):
    run_dir = _write_run(tmp_path, "a", "fl", 0, [0.25, 0.5])
    sections = run_sections(run_dir)
    assert [s.title for s in sections if s.figure is None] == ["Rounds"]
    page = sfprompt.report(run_dir).read_text()
    assert page.count('class="plotly-graph-div"') == 5
    assert "<script src" not in page and "<link" not in page  # plotly.js is inline
    assert "0.25" in page and str(len(read_rounds(run_dir))) in page


def test_report_writes_the_page_of_a_run_and_of_a_comparison(tmp_path, capsys):
    run_dir = _write_run(tmp_path / "cmp", "a", "fl", 0, [0.25, 0.5])
    _write_run(tmp_path / "cmp", "b", "sfprompt", 0, [0.1, 0.3])
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.endswith(f"  {run_dir / REPORT_FILE}\n")
    assert main(["report", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / REPORT_FILE).read_text()
    assert "Methods side by side" in page and page.count('class="plotly-graph-div"') == 4
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a run, comparison or study directory" in capsys.readouterr().err


def test_a_browser_renders_every_figure_of_both_pages(tmp_path, browser):
    run_dir = _write_run(tmp_path / "cmp", "a", "fl", 0, [0.25, 0.5])
    _write_run(tmp_path / "cmp", "b", "sfprompt", 0, [0.1, 0.3])
    for where, figures in ((run_dir, 5), (tmp_path / "cmp", 4)):
        assert browser(sfprompt.report(where), f"report-{where.name}.png") == figures
