"""The Python API (sfprompt/api.py) against the command line it mirrors: the same config
from Python values as from `key=value` strings, the same refusals (naming the key,
leaving no run directory), the run's own tables, and the numbers `sfprompt cost` prints.

Everything runs on the tiny base run of tests/test_bad_input.py (random vit_tiny at
32 px, digits, in-process backend), here as Python values."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import sfprompt
from sfprompt.cli import main
from sfprompt.platform.config.dotted import unflatten
from sfprompt.platform.config.load import load_config
from sfprompt.platform.errors import ConfigError, SfpromptError
from sfprompt.results.atomic import read_parquet
from sfprompt.results.tables import read_clients, read_rounds

ROOT = Path(sfprompt.__file__).resolve().parent.parent
TINY = {"model.weights": "random", "model.name": "vit_tiny_patch16_224", "model.img_size": 32,
        "data.name": "digits", "data.max_samples": 40, "fed.num_clients": 2,
        "fed.clients_per_round": 2, "fed.rounds": 1, "fed.partition": "iid",
        "train.batch_size": 8, "prompt.length": 2, "profiles.sigma": 0.0,
        "run.backend": "local"}
TINY_ARGS = ["model.weights=random", "model.name=vit_tiny_patch16_224", "model.img_size=32",
             "data.name=digits", "data.max_samples=40", "fed.num_clients=2",
             "fed.clients_per_round=2", "fed.rounds=1", "fed.partition=iid",
             "train.batch_size=8", "prompt.length=2", "profiles.sigma=0", "run.backend=local"]


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_dotted_keys_tables_and_cli_strings_give_one_config(tmp_path):
    dotted = sfprompt.config(**TINY)
    assert dotted == sfprompt.config(**unflatten(TINY)) == load_config(None, TINY_ARGS)
    rest = {k: v for k, v in TINY.items() if not k.startswith("fed.")}
    mixed = sfprompt.config(fed={k[4:]: v for k, v in TINY.items() if k.startswith("fed.")},
                            **rest)
    assert mixed == dotted
    # A TOML file under the overrides, and a Config (an earlier run's) as the base.
    (tmp_path / "my.toml").write_text("[fed]\nrounds = 4\nalpha = 0.1\n")
    from_file = sfprompt.config(tmp_path / "my.toml", **TINY)
    assert from_file == load_config(tmp_path / "my.toml", TINY_ARGS)
    assert (from_file.fed.rounds, from_file.fed.alpha) == (1, 0.1)
    assert sfprompt.config(dotted, prune={"keep": 0.25}) == load_config(
        None, [*TINY_ARGS, "prune.keep=0.25"])


def test_bools_are_toml_bools_and_no_int():
    assert sfprompt.config(**TINY, **{"model.probe_norm": False}).model.probe_norm is False
    assert sfprompt.config(**TINY, data={"download": True}).data.download is True
    with pytest.raises(ConfigError, match="^fed.rounds: expected int"):  # as `fed.rounds=true`
        sfprompt.config(**{**TINY, "fed.rounds": True})


@pytest.mark.parametrize("bad, key", [
    ({"fed.roundz": 1}, "fed.roundz"),
    ({"prune": {"keep": "half"}}, "prune.keep"),
    ({"prune": {"keeep": 0.3}}, "prune.keeep"),
    ({"prune.keep": 1.5}, "prune.keep"),
    ({"prune.keep": None}, "prune.keep"),
    ({"eval.every": [1, 2]}, "eval.every"),
    ({"data.max_samples": 5}, "data.max_samples"),  # found while loading the data
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_bad_override_raises_config_error_naming_it_and_leaves_nothing(bad, key, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd would show below
    out = tmp_path / "runs"
    with pytest.raises(ConfigError) as caught:
        sfprompt.run(**{**TINY, "run.out_dir": str(out), **bad})
    assert str(caught.value).startswith(key), caught.value
    assert tree(tmp_path) <= {"runs"} and (not out.exists() or not any(out.iterdir()))


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """Two rounds through `sfprompt.run` with a bool override: the Run, its overrides
    and the rows `on_round` saw."""
    overrides = {**TINY, "fed.rounds": 2, "model.probe_norm": False,
                 "run.out_dir": str(tmp_path_factory.mktemp("api") / "runs")}
    rows = []
    return sfprompt.run(**overrides, on_round=rows.append), overrides, rows


def test_run_returns_its_directory_config_and_tables(done):
    run, overrides, rows = done
    assert run.dir.parent == Path(overrides["run.out_dir"]) and run.status == "completed"
    assert run.config == sfprompt.config(**unflatten(overrides))
    assert run.config.model.probe_norm is False
    pd.testing.assert_frame_equal(run.rounds, read_rounds(run.dir))
    pd.testing.assert_frame_equal(run.clients, read_clients(run.dir))
    assert list(run.rounds["round"]) == [1, 2] == [row["round"] for row in rows]
    assert not run.rounds["model.probe_norm"].any()
    assert sorted(set(run.clients["round"])) == [1, 2]


def test_load_run_round_trips_and_repr_is_one_line(done):
    run = done[0]
    again = sfprompt.load_run(str(run.dir))
    assert again == run and again.config == run.config
    pd.testing.assert_frame_equal(again.rounds, run.rounds)
    text = repr(again)
    assert "\n" not in text and str(run.dir) in text
    assert "completed, 2/2 rounds, sfprompt on digits with vit_tiny_patch16_224" in text


def test_load_run_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(SfpromptError, match=f"^{re.escape(str(tmp_path))}: not a run directory"):
        sfprompt.load_run(tmp_path)


def test_resume_continues_an_interrupted_run_and_refuses_a_completed_one(done, tmp_path):
    run = done[0]
    copy = Path(shutil.copytree(run.dir, tmp_path / run.dir.name))
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    resumed = sfprompt.resume(copy)  # killed after its last checkpoint: nothing left to run
    assert resumed.dir == copy and resumed.status == "completed" and resumed.info["resumes"] == 1
    pd.testing.assert_frame_equal(resumed.rounds, run.rounds)
    with pytest.raises(SfpromptError, match="already completed"):
        sfprompt.resume(copy)


def test_compare_returns_the_table_it_writes_and_report_prints(tmp_path, capsys):
    table = sfprompt.compare(["sfprompt"], [0], **{**TINY, "run.out_dir": str(tmp_path)})
    where = Path(table.attrs["dir"])
    assert where.parent == tmp_path and len(table) == 1
    pd.testing.assert_frame_equal(read_parquet(where / "compare.parquet"), table)
    assert (where / "sfprompt-seed0" / "rounds.parquet").is_file()
    # `sfprompt report` (like `compare`) writes and prints through api.report_files.
    assert main(["report", str(where)]) == 0
    out = capsys.readouterr().out
    assert out.startswith((where / "compare.md").read_text())
    assert out.endswith("results:\n" + "".join(f"  {where / name}\n" for name in (
        "compare.parquet", "compare.md", "accuracy_vs_round.png", "accuracy_vs_bytes.png",
        "accuracy_vs_time.png", "report.html")))


def test_the_run_and_resume_commands_go_through_the_api(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", *TINY_ARGS, f"run.out_dir={out}"]) == 0
    (run_dir,) = out.iterdir()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("sfprompt: sfprompt on digits with vit_tiny_patch16_224 (random "
                        "weights), 2 clients, 2 per round, 1 rounds")
    assert lines[1].startswith("round   1/1  acc ") and lines[2:] == [f"results: {run_dir}"]
    assert sfprompt.load_run(run_dir).status == "completed"
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "failed"}))
    assert main(["resume", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"sfprompt: resuming {run_dir}",
                                                    f"results: {run_dir}"]
    assert main(["resume", str(run_dir)]) == 2
    assert capsys.readouterr().err == (f"sfprompt: error: {run_dir}: the run already "
                                       "completed its 1 rounds; nothing to resume "
                                       "(--rounds N continues it to N)\n")


def test_cost_equals_what_the_cost_command_prints(capsys):
    methods = ["sfprompt", "fl"]
    table = sfprompt.cost(**TINY, methods=methods, samples=16)
    assert main(["cost", "--samples", "16", "--methods", ",".join(methods), *TINY_ARGS]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    for line, row in zip(lines, table.to_dict("records"), strict=True):
        cells = line.split()
        assert cells[:3] == [row["method"], str(row["kept_samples"]),
                             f"{row['flops.client'] / 1e9:,.1f}"]
        assert cells[10] == f"{row['bytes.round'] / 1e6:,.2f}"


def test_import_sfprompt_imports_no_torch_pandas_or_ray():
    code = ("import sys, sfprompt; sfprompt.run, sfprompt.Run, sfprompt.ConfigError\n"
            "print(sorted(m for m in ('torch', 'pandas', 'ray', 'numpy') if m in sys.modules))\n"
            "try:\n    sfprompt.nope\nexcept AttributeError:\n    print('no nope')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "no nope"]


def test_a_terminal_gets_a_bar_of_the_rounds_clients_and_a_pipe_does_not(tmp_path, capsys,
                                                                         monkeypatch):
    args = ["run", *TINY_ARGS, "fed.num_clients=3", "fed.clients_per_round=3",
            "faults.client_crash=0.5", "run.seed=1"]  # crashed clients settle too
    assert main([*args, f"run.out_dir={tmp_path / 'piped'}"]) == 0
    assert "clients" not in capsys.readouterr().err  # not a terminal: lines only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*args, f"run.out_dir={tmp_path / 'terminal'}"]) == 0
    err = capsys.readouterr().err
    # tqdm redraws at most every 0.1 s and clears itself when the round ends (leave=False),
    # so what shows is the bar over the round's 3 clients, not every step of it.
    assert re.search(r"clients: +0%.*\b0/3 \[", err), err


def test_models_lists_the_timm_vits_the_split_takes_and_says_why_not(capsys):
    # timm's test models: three build with dynamic_img_size=True, which validation refuses.
    found = sfprompt.models("test_vit*")
    assert found == {"test_vit": "dynamic image size ViTs are not supported",
                     "test_vit2": "dynamic image size ViTs are not supported",
                     "test_vit3": None,
                     "test_vit4": "dynamic image size ViTs are not supported"}
    assert main(["models", "test_vit*"]) == 0
    assert capsys.readouterr().out == "test_vit3\n"
    # Each listed name passes validation as model.name; a refused one fails with its reason.
    sfprompt.config(**{**TINY, "model.name": "test_vit3"})
    with pytest.raises(ConfigError, match="model.name: dynamic image size"):
        sfprompt.config(**{**TINY, "model.name": "test_vit"})
    # Only families built as a VisionTransformer are candidates: EVA-02 is not one.
    assert sfprompt.models("eva02_tiny*") == {}
    assert main(["models", "eva02_tiny*"]) == 2
