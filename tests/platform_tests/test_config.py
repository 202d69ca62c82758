import dataclasses

import pytest

from sfprompt.platform.config.dotted import flatten, parse_overrides, to_dict, unflatten
from sfprompt.platform.config.load import load_config, replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError


def test_defaults_are_valid_and_flat_names_are_dotted():
    cfg = load_config()
    assert cfg == Config()
    flat = flatten(cfg)
    assert flat["split.head_blocks"] == 1 and flat["prune.keep"] == 0.5
    assert flat["run.backend"] == "ray" and flat["ray.address"] == ""  # a local Ray instance
    assert all(key.count(".") == 1 for key in flat)
    # the config and its TOML dict flatten alike, in field order, and unflatten back
    assert list(flatten(to_dict(cfg)).items()) == list(flat.items())
    assert unflatten(flat) == to_dict(cfg)
    section = dataclasses.fields(Config)[0].name
    first = dataclasses.fields(getattr(cfg, section))[0].name
    assert next(iter(flat)) == f"{section}.{first}"


def test_flatten_hand_made_dict():
    nested = {
        "round": 3,
        "bytes": {"smashed_up": 3, "grad": {"up": 5, "down": 6}},
        "prune.keep": 0.5,
        "empty": {},
    }
    assert flatten(nested) == {
        "round": 3,
        "bytes.smashed_up": 3,
        "bytes.grad.up": 5,
        "bytes.grad.down": 6,
        "prune.keep": 0.5,
    }
    assert flatten({"up": 1}, prefix="bytes") == {"bytes.up": 1}
    # a dict `is_leaf` marks stays whole (a study's search range)
    space = {"prune": {"keep": {"low": 0.2, "high": 1.0}}, "train.lr": {"choices": [1]}}
    assert flatten(space, is_leaf=lambda v: "low" in v or "choices" in v) == {
        "prune.keep": {"low": 0.2, "high": 1.0}, "train.lr": {"choices": [1]}}


def test_flatten_refuses_colliding_and_empty_names():
    with pytest.raises(ConfigError, match="^a.b: given twice"):
        flatten({"a.b": 1, "a": {"b": 2}})
    with pytest.raises(ConfigError, match="non-empty strings"):
        flatten({"a": {"": 1}})


def test_unflatten_and_overrides_build_nested_dicts():
    assert unflatten({"fed.rounds": 3, "fed.protocol": "wait_all", "run.seed": 1}) == {
        "fed": {"rounds": 3, "protocol": "wait_all"}, "run": {"seed": 1}}
    assert parse_overrides([" fed.rounds = 50", "fed.rounds=7", "prune.keep=0.3"]) == {
        "fed": {"rounds": "7"}, "prune": {"keep": "0.3"}}
    with pytest.raises(ConfigError, match=r"^fed\.\.rounds: empty part"):
        unflatten({"fed..rounds": 1})
    with pytest.raises(ConfigError, match="^fed.rounds.x: rounds is a value, not a table"):
        parse_overrides(["fed.rounds=1", "fed.rounds.x=2"])
    with pytest.raises(ConfigError, match="overrides are dotted key=value"):
        parse_overrides(["fed.rounds"])


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[fed]\nrounds = 3\n[prune]\nkeep = 0.25\n[data]\ndownload = true\n')
    cfg = load_config(path, ["fed.rounds=7", "model.weights=random", "train.lr=0.01"])
    assert (cfg.fed.rounds, cfg.prune.keep, cfg.data.download) == (7, 0.25, True)
    assert cfg.model.weights == "random" and cfg.train.lr == 0.01


def test_replace_changes_dotted_keys_and_validates():
    cfg = replace(Config(), **{"prune.keep": 1.0, "split.tail_blocks": 2})
    assert cfg.prune.keep == 1.0 and cfg.split.tail_blocks == 2
    with pytest.raises(ConfigError, match="prune.keep"):
        replace(cfg, **{"prune.keep": 0.0})


@pytest.mark.parametrize("overrides,key", [
    (["split.head_blocks=8", "split.tail_blocks=5"], "split"),
    (["prune.keep=0"], "prune.keep"),
    (["prune.keep=1.5"], "prune.keep"),
    (["prune.keep=-0.1"], "prune.keep"),
    (["prompt.length=-1"], "prompt.length"),
    (["fed.rounds=0"], "fed.rounds"),
    (["fed.num_clients=-3"], "fed.num_clients"),
    (["fed.clients_per_round=20"], "fed.clients_per_round"),
    (["fed.alpha=0"], "fed.alpha"),
    (["train.lr=nan"], "train.lr"),
    (["train.batch_size=0"], "train.batch_size"),
    (["model.name=vit_does_not_exist"], "model.name"),
    (["data.name=imagenet22k"], "data.name"),
    (["fed.partition=roundrobin"], "fed.partition"),
    (["train.method=magic"], "train.method"),
    (["prune.score=loss"], "prune.score"),
    (["fed.aggregation=median"], "fed.aggregation"),
    (["fed.server_lr=-1"], "fed.server_lr"),
    (["fed.server_momentum=1"], "fed.server_momentum"),
    (["fed.server_beta2=1.5"], "fed.server_beta2"),
    (["fed.server_tau=inf"], "fed.server_tau"),
    (["fed.prox_mu=-0.1"], "fed.prox_mu"),
    (["run.backend=mpi"], "run.backend"),
    (["ray.num_client_actors=-1"], "ray.num_client_actors"),
    (["ray.timeout_s=0"], "ray.timeout_s"),
    (["ray.timeout_s=inf"], "ray.timeout_s"),
    (["split.local_pool=max"], "split.local_pool"),
    (["split.head_block=1"], "split.head_block"),
    (["nosuch.key=1"], "nosuch"),
    (["fed.rounds=ten"], "fed.rounds"),
    (["prune.keep=half"], "prune.keep"),
    (["data.download=maybe"], "data.download"),
    (["fed.rounds"], "fed.rounds"),
    (["fed=3"], "fed"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message


def test_wrong_types_in_toml_name_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[fed]\nrounds = "many"\n')
    with pytest.raises(ConfigError, match=r"^fed\.rounds: expected int"):
        load_config(path)
    path.write_text('[split]\nhead_blocks = 1.5\n')
    with pytest.raises(ConfigError, match=r"^split\.head_blocks"):
        load_config(path)
    path.write_text('[prune]\nkeep = true\n')
    with pytest.raises(ConfigError, match=r"^prune\.keep"):
        load_config(path)


def test_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fed\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(bad)


def test_the_edges_of_the_server_optimizer_ranges_are_accepted():
    # momentum and beta2 0 (no memory of earlier rounds), mu 0 (FedProx as FedAvg)
    cfg = load_config(None, ["fed.aggregation=fedprox", "fed.prox_mu=0", "fed.server_momentum=0",
                             "fed.server_beta2=0", "fed.server_tau=1e-12", "fed.server_lr=1e-12"])
    assert (cfg.fed.prox_mu, cfg.fed.server_momentum, cfg.fed.server_beta2) == (0, 0, 0)
