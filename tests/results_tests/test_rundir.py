"""Run directory: naming, refusal to reuse, run.json content, config.toml, run.log."""

import datetime as dt
import json
import logging
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

import sfprompt
from sfprompt.platform.errors import SfpromptError
from sfprompt.results.rundir import (
    attach_run_log,
    create_run_dir,
    git_state,
    run_info,
    write_config_toml,
    write_run_json,
)

REPO_ROOT = Path(sfprompt.__file__).resolve().parent.parent
RUN_ID = re.compile(r"^(\d{8}-\d{6})-[0-9a-f]{4}$")


def test_generated_run_id_is_utc_time_plus_hex_and_parents_are_created(tmp_path):
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    path = create_run_dir(tmp_path / "a" / "runs", None)
    after = dt.datetime.now(dt.timezone.utc)
    assert path.parent == tmp_path / "a" / "runs" and path.is_dir()
    stamp = RUN_ID.match(path.name)
    assert stamp, path.name
    started = dt.datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)
    assert before <= started <= after


def test_generated_ids_differ_within_one_second(tmp_path):
    paths = {create_run_dir(tmp_path) for _ in range(20)}
    assert len(paths) == 20


def test_existing_run_dir_is_refused_with_its_path(tmp_path):
    first = create_run_dir(tmp_path, "exp1")
    assert first == tmp_path / "exp1"
    (first / "rounds.parquet").write_bytes(b"keep me")
    with pytest.raises(SfpromptError, match=re.escape(str(first))):
        create_run_dir(tmp_path, "exp1")
    assert (first / "rounds.parquet").read_bytes() == b"keep me"


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../escape"])
def test_run_id_must_be_one_directory_name(tmp_path, bad):
    with pytest.raises(SfpromptError, match="run id"):
        create_run_dir(tmp_path / "runs", bad)


def test_config_toml_round_trips_without_none_values(tmp_path):
    config = {
        "seed": 7,
        "run": {"name": "vit-s", "notes": None},
        "split": {"head_blocks": 1, "tail_blocks": 2},
        "prune": {"keep": 0.5, "score": "el2n"},
        "fed": {"rounds": 50, "sizes": (3, 4), "iid": False, "deadline": None},
        "data": {"limit": None},
    }
    write_config_toml(tmp_path, config)
    loaded = tomllib.loads((tmp_path / "config.toml").read_text())
    assert loaded == {
        "seed": 7,
        "run": {"name": "vit-s"},
        "split": {"head_blocks": 1, "tail_blocks": 2},
        "prune": {"keep": 0.5, "score": "el2n"},
        "fed": {"rounds": 50, "sizes": [3, 4], "iid": False},
        "data": {},
    }


def test_config_toml_refuses_none_inside_a_list_naming_the_key(tmp_path):
    with pytest.raises(SfpromptError, match=r"^fed\.sizes:"):
        write_config_toml(tmp_path, {"fed": {"sizes": [1, None]}})
    assert list(tmp_path.iterdir()) == []


def _git(repo, *args):
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def git_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def _head_from_files(repo):
    """The commit HEAD names, read from .git directly rather than through rev-parse."""
    head = (repo / ".git" / "HEAD").read_text().strip()
    assert head.startswith("ref: ")
    return (repo / ".git" / head[len("ref: "):]).read_text().strip()


def test_run_info_records_commit_and_dirtiness_of_a_git_checkout(git_repo):
    info = run_info("running", source_dir=git_repo)
    assert info["git"] == {"commit": _head_from_files(git_repo), "dirty": False}
    (git_repo / "a.txt").write_text("two\n")
    assert run_info("running", source_dir=git_repo)["git"]["dirty"] is True


def test_git_state_is_none_outside_a_checkout_and_below_its_root(tmp_path, git_repo):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) == {"commit": None, "dirty": None}
    # e.g. a wheel installed in a virtualenv that lives inside some unrelated repo
    nested = git_repo / "venv" / "site-packages"
    nested.mkdir(parents=True)
    assert git_state(nested) == {"commit": None, "dirty": None}


def test_run_info_content_and_run_json(tmp_path):
    info = run_info("running", source_dir=tmp_path, method="sfprompt")
    assert info["status"] == "running" and info["method"] == "sfprompt"
    assert info["git"] == {"commit": None, "dirty": None}
    versions = info["versions"]
    expected = {"python", "sfprompt", "torch", "timm", "numpy", "pandas", "pyarrow", "ray"}
    assert expected <= set(versions)
    assert versions["pandas"] == pd.__version__
    assert info["host"]["cpu_count"] >= 1 and info["host"]["torch"]["num_threads"] >= 1
    assert info["host"]["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["host"]["cpu_model"], str)
    started = dt.datetime.fromisoformat(info["started"])
    assert abs(dt.datetime.now(dt.timezone.utc) - started) < dt.timedelta(minutes=1)

    info["status"] = "finished"
    write_run_json(tmp_path, info)
    assert json.loads((tmp_path / "run.json").read_text()) == info


def test_run_info_extra_cannot_overwrite_recorded_fields(tmp_path):
    with pytest.raises(ValueError, match="git"):
        run_info("running", source_dir=tmp_path, git="fake")


def test_run_info_does_not_import_ray_and_survives_without_torch(tmp_path):
    # A fresh interpreter, since this one may have imported ray for other tests; torch
    # is blocked there, which keeps the check fast and covers a torch-less host.
    code = (
        "import sys; sys.modules['torch'] = None; from sfprompt.results.rundir import run_info; "
        f"info = run_info('x', source_dir={str(tmp_path)!r}); "
        "assert 'ray' not in sys.modules and info['host']['torch'] is None"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=env)


def test_attach_run_log_writes_project_records(tmp_path):
    project = logging.getLogger("sfprompt")
    old_level = project.level
    handler = attach_run_log(tmp_path)
    try:
        logging.getLogger("sfprompt.platform.loop.rounds").info("round %d done", 3)
        logging.getLogger("sfprompt.x").debug("too chatty")
        handler.flush()
    finally:
        project.removeHandler(handler)
        project.setLevel(old_level)
        handler.close()
    text = (tmp_path / "run.log").read_text()
    assert "INFO sfprompt.platform.loop.rounds: round 3 done" in text
    assert "too chatty" not in text
