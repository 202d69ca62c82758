"""Study-test fixtures: a fast fake run, and a tiny study file to vary."""

import copy
import importlib.util
from pathlib import Path

import pytest
import tomli_w

HERE = Path(__file__).parent


def load_fake_runs():
    spec = importlib.util.spec_from_file_location("fake_runs", HERE / "fake_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_runs(monkeypatch):
    """Trials run `fake_runs.fake_run` instead of training."""
    module = load_fake_runs()
    monkeypatch.setattr("sfprompt.studies.trial.run_experiment", module.fake_run)
    return module


# A tiny study: the tiny model keeps the (real) config and feasibility checks cheap.
TINY = {
    "name": "t",
    "fixed": {"model.name": "vit_tiny_patch16_224", "model.weights": "random",
              "model.img_size": 32, "data.name": "digits", "data.max_samples": 200,
              "fed.num_clients": 4, "fed.clients_per_round": 4, "fed.rounds": 2},
    "space": {"split.head_blocks": {"low": 0, "high": 3},
              "prompt.length": {"choices": [0, 4, 8]}},
    "objectives": [{"metric": "accuracy", "direction": "maximize"},
                   {"metric": "bytes.total", "direction": "minimize"}],
    "budget": {"n_trials": 5},
    "sampler": {"name": "random", "seed": 0},
}


@pytest.fixture
def tables():
    """`tables(**changes)`: the tables of TINY with some replaced (a fresh copy)."""
    return lambda **changes: {**copy.deepcopy(TINY), **changes}


@pytest.fixture
def write_study(tmp_path):
    """`write_study(**tables)` -> path of a study file: TINY with tables replaced."""
    def write(**tables) -> Path:
        path = tmp_path / "spec.toml"
        path.write_text(tomli_w.dumps({**TINY, **tables}))
        return path
    return write
