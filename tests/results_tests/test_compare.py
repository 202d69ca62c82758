"""The comparison table by hand on synthetic rounds, then `sfprompt compare` / `report`
end to end on a tiny config."""

import json
import math
import shutil

import pandas as pd
import pytest

from sfprompt.cli import main
from sfprompt.platform.config.load import load_config
from sfprompt.platform.errors import ConfigError
from sfprompt.results.comparison import compare_configs, run_compare
from sfprompt.results.plots import compare_plots
from sfprompt.results.summary import load_compare, summarise, to_markdown
from sfprompt.results.tables import read_rounds, write_rounds


def _rounds(method, seed, accuracy, up, down, flops, head=0):
    """A run's rounds.parquet rows: `up`/`down` bytes and client FLOPs per round; the
    first round also downloads `head` bytes once."""
    rows = []
    for i, acc in enumerate(accuracy):
        rows.append({"train.method": method, "run.seed": seed, "round": i + 1, "accuracy": acc,
                     "bytes.up": up, "bytes.down": down + (head if i == 0 else 0),
                     "bytes.upload": up, "bytes.download": down,
                     "bytes.frozen_download": head if i == 0 else 0,
                     "flops.client": flops, "flops.server": 0, "sim.elapsed_seconds": 10.0 * (i + 1)})
    return rows


SYNTHETIC = pd.DataFrame(
    _rounds("fl", 0, [0.2, 0.6, 0.8], 100, 100, 1000)
    + _rounds("fl", 1, [0.4, 0.8, 0.7], 100, 100, 1000)
    + _rounds("sfprompt", 0, [0.1, 0.3, 0.5], 10, 20, 10, head=70)
    + _rounds("sfprompt", 1, [0.1, 0.2, 0.3], 10, 20, 10, head=70))


def test_table_by_hand():
    table = summarise(SYNTHETIC, target=0.5, order=["fl", "sfprompt"]).set_index("method")
    fl, sf = table.loc["fl"], table.loc["sfprompt"]
    assert fl["accuracy.final.mean"] == pytest.approx(0.75)
    assert fl["accuracy.final.std"] == pytest.approx(math.sqrt(2) * 0.05)
    assert fl["accuracy.best.mean"] == pytest.approx(0.8)
    # fl reaches 0.5 at round 2 (seed 0) and round 2 (seed 1): 2 x 200 bytes by then.
    assert (fl["rounds.to_target.mean"], fl["bytes.to_target.mean"]) == (2, 400)
    # sfprompt: seed 0 at round 3 (70 + 3 x 30 bytes), seed 1 never.
    assert sf["target.reached"] == 1 and sf["rounds.to_target.mean"] == 3
    assert sf["bytes.to_target.mean"] == 160 and math.isnan(sf["rounds.to_target.std"])
    assert sf["sim.to_target.mean"] == 30
    # Client FLOPs by then: fl 2 x 1000, sfprompt 3 x 10, so at equal accuracy 0.015x fl's.
    assert (fl["flops.client.to_target.mean"], sf["flops.client.to_target.mean"]) == (2000, 30)
    assert sf["flops.client.to_target_vs_fl"] == pytest.approx(0.015)
    assert sf["bytes.to_target_vs_fl"] == pytest.approx(160 / 400)
    assert sf["bytes.round.mean"] == 30 and sf["bytes.total.mean"] == 160
    assert sf["bytes.frozen_download.total.mean"] == 70
    assert sf["bytes.total_vs_fl"] == pytest.approx(160 / 600)
    assert sf["flops.client.total_vs_fl"] == pytest.approx(0.01)
    assert fl["bytes.total_vs_fl"] == 1.0
    md = to_markdown(summarise(SYNTHETIC, target=0.5, order=["fl", "sfprompt"]))
    assert "| sfprompt | 2 | 0.400 ± 0.141 | 0.400 ± 0.141 | - | 3.0 (1/2) |" in md
    assert "0.2667x" in md and md.startswith("Target accuracy 0.5000")
    assert "| 0.015x, 0.4x |" in md


def test_change_over_the_last_rounds_by_hand():
    # Seed 0: 8 rounds, round 3 the last one evaluated 5 rounds before round 8 (rounds 2
    # and 4 not evaluated): 0.61 - 0.50. Seed 1: 6 rounds, round 1 is 5 before: 0.58 - 0.20.
    nan = math.nan
    rows = (_rounds("fl", 0, [0.1, nan, 0.5, nan, 0.55, 0.6, 0.6, 0.61], 1, 1, 1)
            + _rounds("fl", 1, [0.2, 0.3, 0.4, 0.5, 0.55, 0.58], 1, 1, 1)
            + _rounds("fl_prompt", 0, [0.1, 0.2, 0.3, 0.4, 0.5], 1, 1, 1))
    table = summarise(pd.DataFrame(rows), target=0.5).set_index("method")
    assert table.loc["fl", "accuracy.change.mean"] == pytest.approx((0.11 + 0.38) / 2)
    assert math.isnan(table.loc["fl_prompt", "accuracy.change.mean"])  # too short to tell
    md = to_markdown(table.reset_index())
    assert "change over last 5 rounds" in md and "| +0.245 ± 0.191 |" in md


def test_default_target_is_a_fraction_of_the_best_run():
    table = summarise(SYNTHETIC)
    assert table["target"].iloc[0] == pytest.approx(0.8 * 0.8)
    assert "flops.client.total_vs_fl" in table.columns
    assert "flops.client.total_vs_fl" not in summarise(SYNTHETIC[SYNTHETIC["train.method"] != "fl"])


TINY = ["model.name=vit_tiny_patch16_224", "model.weights=random", "model.img_size=16",
        "data.name=digits", "data.max_samples=40", "prompt.length=2", "fed.num_clients=2",
        "fed.clients_per_round=2", "fed.rounds=1", "run.backend=local", "run.threads=1",
        "train.batch_size=8"]


def test_bad_methods_fail_before_anything_runs(tmp_path):
    cfg = load_config(None, TINY + [f"run.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="train.method"):
        run_compare(cfg, ["sfprompt", "nope"], [0])
    with pytest.raises(ConfigError, match="--seeds"):
        compare_configs(cfg, ["fl"], [0, 0])
    assert list(tmp_path.iterdir()) == []


def test_compare_and_report_end_to_end(tmp_path, capsys):
    # One seed keeps it fast; means and deviations over seeds are checked by hand above.
    code = main(["compare", "--methods", "sfprompt,fl,centralized", "--seeds", "3",
                 *TINY, f"run.out_dir={tmp_path}", "run.run_id=cmp"])
    assert code == 0
    out = capsys.readouterr().out
    assert "run 3/3: centralized, seed 3" in out and "| centralized | 1 |" in out
    compare_dir = tmp_path / "cmp"
    runs = sorted(p.name for p in compare_dir.iterdir() if p.is_dir())
    assert runs == ["centralized-seed3", "fl-seed3", "sfprompt-seed3"]
    for name in ("compare.parquet", "compare.md", "accuracy_vs_round.png",
                 "accuracy_vs_bytes.png", "accuracy_vs_time.png", "config.toml"):
        assert (compare_dir / name).stat().st_size > 0, name
    table = pd.read_parquet(compare_dir / "compare.parquet").set_index("method")
    assert list(table.index) == ["sfprompt", "fl", "centralized"]
    # The table's totals are the runs' own totals.
    fl = read_rounds(compare_dir / "fl-seed3")
    assert set(fl["run.seed"]) == {3}
    assert table.loc["fl", "bytes.total.mean"] == (fl["bytes.up"] + fl["bytes.down"]).sum()
    assert table.loc["fl", "accuracy.final.mean"] == fl["accuracy"].iloc[-1]
    assert table.loc["centralized", "bytes.total.mean"] == 0
    assert table.loc["fl", "flops.client.total_vs_fl"] == 1.0
    rounds = load_compare(compare_dir)
    # Centralized ran as one client holding the whole training set.
    central = rounds[rounds["train.method"] == "centralized"]
    assert set(central["fed.num_clients"]) == {1} and set(central["sampled"]) == {1}
    assert set(central["samples"]) == {int(fl["samples"].iloc[0])}

    # A run that did not complete (still running, failed) is left out of the table.
    shutil.copytree(compare_dir / "fl-seed3", compare_dir / "fl-seed9")
    info = json.loads((compare_dir / "fl-seed9" / "run.json").read_text())
    (compare_dir / "fl-seed9" / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert len(load_compare(compare_dir)) == len(rounds)

    assert main(["report", str(compare_dir / "fl-seed3")]) == 0
    for name in ("accuracy.png", "traffic.png", "cost.png"):
        assert (compare_dir / "fl-seed3" / name).stat().st_size > 0
    assert main(["report", str(compare_dir), "--target", "0.05"]) == 0
    assert "Target accuracy 0.0500" in (compare_dir / "compare.md").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2


def _write_run(root, name, rows, **settings):
    """A completed run directory holding `rows` as its rounds, with config `settings`."""
    run_dir = root / name
    run_dir.mkdir()
    write_rounds(run_dir, [{**row, "loss": 1.0, "wall_seconds": 1.0, "participants": 1,
                            **settings} for row in rows])
    (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))


def test_runs_of_a_method_that_differ_in_a_setting_are_its_variants(tmp_path):
    none, int8 = {"compress.activations": "none"}, {"compress.activations": "int8"}
    _write_run(tmp_path, "a", _rounds("sfprompt", 0, [0.1, 0.5], 10, 20, 10), **none,
               **{"fed.num_clients": 10})
    _write_run(tmp_path, "b", _rounds("sfprompt", 1, [0.3, 0.7], 10, 20, 10), **none,
               **{"fed.num_clients": 10})
    _write_run(tmp_path, "c", _rounds("sfprompt", 0, [0.2, 0.4], 5, 10, 10), **int8,
               **{"fed.num_clients": 10})
    # Centralized runs always differ from the rest in fed.num_clients: no variant in that.
    _write_run(tmp_path, "d", _rounds("centralized", 0, [0.9, 0.9], 0, 0, 10), **none,
               **{"fed.num_clients": 1})
    rounds = load_compare(tmp_path)
    table = summarise(rounds, target=0.5, order=["sfprompt", "centralized"]).set_index("method")
    assert list(table.index) == ["sfprompt compress.activations=int8",
                                 "sfprompt compress.activations=none", "centralized"]
    assert list(table["runs"]) == [1, 2, 1]
    assert list(table["accuracy.final.mean"]) == pytest.approx([0.4, 0.6, 0.9])
    assert table.loc["sfprompt compress.activations=int8", "bytes.total.mean"] == 2 * 15
    assert "| sfprompt compress.activations=int8 | 1 |" in to_markdown(table.reset_index())
    paths = compare_plots(rounds, tmp_path, ["sfprompt", "centralized"])
    assert [p.name for p in paths] == ["accuracy_vs_round.png", "accuracy_vs_bytes.png",
                                       "accuracy_vs_time.png"]


def test_plots_leave_out_rounds_without_evaluation(tmp_path, monkeypatch):
    # eval.every=2 over 3 rounds: round 1 has no accuracy. Traffic still accumulates
    # over every round, so round 2 stands at the bytes of rounds 1 and 2.
    from sfprompt.results import plots
    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig) or path)
    rounds = pd.DataFrame(_rounds("fl", 0, [math.nan, 0.6, 0.8], 100, 100, 1000))
    rounds["loss"] = [math.nan, 1.0, 0.5]
    compare_plots(rounds, tmp_path)
    plots.run_plots(rounds, tmp_path)
    by_round, by_bytes = (fig.axes[0].lines[0] for fig in figures[:2])
    assert list(by_round.get_xdata()) == [2, 3] and list(by_round.get_ydata()) == [0.6, 0.8]
    assert list(by_bytes.get_xdata()) == pytest.approx([400 / plots.MB, 600 / plots.MB])
    accuracy_fig = figures[3]  # run_plots: accuracy.png first
    assert [list(line.get_xdata()) for ax in accuracy_fig.axes for line in ax.lines] == [[2, 3]] * 2
