"""Study files: what they mean and how they fail."""

import tomllib
from pathlib import Path

import optuna
import pytest
import tomli_w
from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError
from sfprompt.studies.spec import load_spec, spec_from_dict

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "studies" / "examples").glob("*.toml"))


def test_shipped_examples_load():
    assert len(EXAMPLES) >= 2
    for path in EXAMPLES:
        spec = load_spec(path)
        assert spec.space and spec.objectives and spec.name


def test_range_types_follow_the_config_key(tables):
    spec = spec_from_dict(tables(space={
        "split.head_blocks": {"low": 0, "high": 3},
        "prune.keep": {"low": 0.25, "high": 1, "step": 0.25},
        "train.lr": {"low": 1e-3, "high": 1e-1, "log": True},
        "prompt.length": {"choices": [0, 4, 8]},
        "fed.partition": {"choices": ["iid", "dirichlet"]},
    }))
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    params = spec.suggest(trial)
    dists = trial.distributions
    assert dists["split.head_blocks"] == IntDistribution(0, 3)
    assert dists["prune.keep"] == FloatDistribution(0.25, 1.0, step=0.25)
    assert dists["train.lr"] == FloatDistribution(1e-3, 1e-1, log=True)
    assert dists["prompt.length"] == CategoricalDistribution([0, 4, 8])
    assert params["fed.partition"] in ("iid", "dirichlet")
    assert isinstance(params["split.head_blocks"], int)


def test_nested_tables_mean_the_same_as_dotted_keys(tables):
    dotted = spec_from_dict(tables())
    nested = spec_from_dict(tables(
        fixed={"model": {"name": "vit_tiny_patch16_224", "weights": "random", "img_size": 32},
               "data": {"name": "digits", "max_samples": 200},
               "fed": {"num_clients": 4, "clients_per_round": 4, "rounds": 2}},
        space={"split": {"head_blocks": {"low": 0, "high": 3}},
               "prompt": {"length": {"choices": [0, 4, 8]}}}))
    assert nested == dotted


def test_round_trip_through_toml(tables):
    spec = spec_from_dict(tables(trial_pruner={"name": "none"},
                                 sampler={"name": "nsga2", "seed": 3, "population_size": 4}))
    again = spec_from_dict(tomllib.loads(tomli_w.dumps(spec.to_dict())))
    assert again == spec


def test_base_config_file_is_inlined_and_fixed_wins(tmp_path, tables):
    (tmp_path / "base.toml").write_text("[fed]\nrounds = 7\nnum_clients = 6\nclients_per_round = 3\n")
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(tables(config="base.toml", fixed={"fed.rounds": 3})))
    spec = load_spec(path)
    assert spec.fixed == {"fed.rounds": 3, "fed.num_clients": 6, "fed.clients_per_round": 3}
    assert replace(Config(), **spec.fixed).fed.rounds == 3


def test_cross_key_infeasible_endpoints_are_left_to_the_trials(tables):
    # head 12 + the default tail 1 exceeds ViT-Tiny's 12 blocks only together: not a typo.
    spec = spec_from_dict(tables(space={"split.head_blocks": {"low": 0, "high": 12}}))
    assert spec.space[0].high == 12


BAD = [
    ({"space": {"split.heads": {"low": 0, "high": 2}}}, "space.split.heads: not a config key"),
    ({"space": {"run.out_dir": {"choices": ["x"]}}}, "space.run.out_dir: set by the study"),
    ({"fixed": {"run.backend": "local"}}, "fixed.run.backend: set by the study"),
    ({"fixed": {"fed.rounds": "many"}}, "fixed.fed.rounds: expected int"),
    ({"space": {"prune.keep": {"low": 0.0, "high": 1.0}}}, "space.prune.keep: must be in (0, 1]"),
    ({"space": {"split.head_blocks": {"low": 3, "high": 1}}}, "space.split.head_blocks: needs finite low <= high"),
    ({"space": {"split.head_blocks": {"low": 0.5, "high": 2}}}, "space.split.head_blocks.low: expected int"),
    ({"space": {"train.lr": {"low": 0, "high": 1, "log": True}}}, "space.train.lr.low: must be > 0"),
    ({"space": {"train.lr": {"low": 0.1, "high": 1, "log": True, "step": 0.1}}}, "space.train.lr.log: cannot"),
    ({"space": {"prompt.length": {"choices": [1, "two"]}}}, "space.prompt.length.choices: expected int"),
    ({"space": {"prompt.length": {"choices": [1], "low": 0}}}, "space.prompt.length.low: not allowed"),
    ({"space": {"fed.partition": {"low": 0, "high": 1}}}, "space.fed.partition: a str setting"),
    ({"space": {"split.head_blocks": {"low": 0}}}, "space.split.head_blocks.high: missing"),
    ({"space": {"split.head_blocks": {"lo": 0, "high": 2}}}, "space.split.head_blocks.lo: unknown key"),
    ({"space": {}}, "space: needs at least one"),
    ({"space": {"prune": {"keep": 0.5}}}, "prune.keep: expected a range table, got 0.5"),
    ({"fixed": {"fed.rounds": 2, "fed": {"rounds": 3}}}, "fed.rounds: given twice"),
    ({"space": {"fed.rounds": {"low": 1, "high": 2}}}, "space.fed.rounds: also set in fixed"),
    ({"objectives": []}, "objectives: needs at least one"),
    ({"objectives": [{"metric": "accuracy"}]}, "objectives[0].direction: missing"),
    ({"objectives": [{"metric": "accuracy", "direction": "up"}]}, "objectives[0].direction: must be"),
    ({"objectives": [{"metric": "loss", "direction": "minimize", "reduce": "median"}]},
     "objectives[0].reduce: unknown reduction 'median' (known: last, max, mean, min, sum)"),
    ({"objectives": [{"metric": "loss", "direction": "minimize"}] * 2},
     "objectives[1].metric: loss is already"),
    ({"trial_pruner": {"name": "median"}}, "trial_pruner.name: median needs a single objective"),
    ({"trial_pruner": {"name": "early"}}, "trial_pruner.name: unknown trial pruner 'early' (known: hyperband, median,"),
    ({"sampler": {"name": "nsga2", "popsize": 8}}, "sampler.popsize: not an option of nsga2"),
    ({"sampler": {"name": "tpe", "seed": True}}, "sampler.seed: expected int"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials: must be >= 1"),
    ({"budget": {"trials": 3}}, "budget.trials: unknown key"),
    ({"storage": {"kind": "redis"}}, "storage.kind: unknown 'redis'"),
    ({"parallel": {"trials": 0}}, "parallel.trials: must be >= 1"),
    ({"feasibility": {"memory_fraction": 2}}, "feasibility.memory_fraction: must be in [0, 1]"),
    ({"name": "a/b"}, "name: must be a plain name"),
    ({"colour": 1}, "colour: unknown key"),
]


@pytest.mark.parametrize("changes, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_errors_name_the_key(changes, message, tables):
    with pytest.raises(ConfigError) as err:
        spec_from_dict(tables(**changes))
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors_name_the_file(tmp_path, tables):
    with pytest.raises(ConfigError, match="not found"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match=f"study file {bad}: invalid TOML"):
        load_spec(bad)
    bad.write_text(tomli_w.dumps(tables(budget={"n_trials": -1})))
    with pytest.raises(ConfigError, match=f"study file {bad}: budget.n_trials"):
        load_spec(bad)
