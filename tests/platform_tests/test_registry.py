"""`Registry` (platform/registry.py): duplicates are bugs, unknown names are one line
naming the known ones, registries are read-only, and every registry of the project is
one (a hand-written dict registry is caught here)."""

import ast
import importlib
import re
from collections.abc import Mapping, MutableMapping

import pytest
from test_layout import modules

from sfprompt.platform.config.load import load_config
from sfprompt.platform.errors import ConfigError
from sfprompt.platform.registry import Registry

# Every registry: a named, extensible choice that a config key (or a study file) selects.
REGISTRIES = {
    "platform.data.datasets": ("DATASETS",),
    "platform.data.partition": ("PARTITIONERS",),
    "platform.wire.codecs": ("CODECS",),
    "platform.model.weights": ("WEIGHT_SOURCES",),
    "platform.method.registry": ("METHODS",),
    "platform.method.trainable": ("OPTIMIZERS",),
    "platform.method.pruning": ("SCORES",),
    "platform.fed.aggregation": ("AGGREGATIONS",),
    "platform.fed.protocols": ("PROTOCOLS",),
    "platform.sim.profiles": ("PROFILE_SOURCES", "TIERS", "SERVER_TIERS"),
    "studies.objectives": ("REDUCERS",),
    "studies.strategies": ("SAMPLERS", "TRIAL_PRUNERS"),
    "studies.plots": ("PLOTS",),
}
# Module-level dicts that are data, not choices: no config key picks one of their entries.
DATA_TABLES = {
    ("platform.model.dinov2_onnx", "_GLOBAL"),     # ONNX -> timm tensor names
    ("platform.model.dinov2_onnx", "_BLOCK"),
    ("platform.model.dinov2_onnx", "_BLOCK_MATMUL"),
    ("platform.sim.profiles", "TRACE_COLUMNS"),    # a trace file's columns and their checks
    ("studies.objectives", "DERIVED"),             # extra rounds columns, next to the real ones
    ("studies.runner", "_STATES"),                 # our trial state names -> Optuna's
    ("studies.space", "CONFIG_DEFAULTS"),          # every config key's default
    ("studies.storage", "STORAGE_FILES"),          # storage kind -> file name
    ("studies.strategies", "_RESERVED"),           # options the study sets itself
}


def _things() -> Registry:
    things: Registry[int] = Registry("thing")
    things.add("b", 2)
    things.add("a", 1)
    return things


def test_a_name_registered_twice_is_rejected():
    things = _things()
    with pytest.raises(ValueError, match=r"^thing registry: 'a' is registered twice$"):
        things.add("a", 3)
    with pytest.raises(ValueError, match="'b'"):
        things.register("b")(len)
    with pytest.raises(ValueError, match="'x'"):
        Registry("thing", {"x": 1}).add("x", 1)
    assert dict(things) == {"b": 2, "a": 1}  # the first registration stays


def test_an_unknown_name_is_one_line_naming_the_known_ones():
    things = _things()
    with pytest.raises(ConfigError) as err:
        things["c"]
    assert str(err.value) == "unknown thing 'c' (known: a, b)"
    assert isinstance(err.value, KeyError)  # so Mapping's `in` and `get` keep working
    assert "c" not in things and things.get("c") is None and things.get("a") == 1
    with pytest.raises(ConfigError) as err:
        things.check("section.key", "c")
    assert str(err.value) == "section.key: unknown thing 'c' (known: a, b)"
    assert things.check("section.key", "b") == 2


def test_the_decorator_returns_the_function_unchanged():
    things: Registry = Registry("thing")

    def double(x: int) -> int:
        return 2 * x

    assert things.register("double")(double) is double
    assert things["double"] is double and things.add("len", len) is len


def test_registries_are_read_only_mappings_in_registration_order():
    things = _things()
    assert isinstance(things, Mapping) and not isinstance(things, MutableMapping)
    assert list(things) == ["b", "a"] and len(things) == 2 and things.kind == "thing"
    with pytest.raises(TypeError):
        things["c"] = 3
    with pytest.raises(TypeError):
        del things["a"]
    for name in ("update", "pop", "setdefault", "clear"):
        assert not hasattr(things, name), name
    assert {**things} == {"b": 2, "a": 1} and things == {"a": 1, "b": 2}


@pytest.mark.parametrize("module", sorted(REGISTRIES))
def test_every_registry_of_the_project_is_a_registry(module):
    loaded = importlib.import_module(f"sfprompt.{module}")
    for name in REGISTRIES[module]:
        registry = getattr(loaded, name)
        assert isinstance(registry, Registry), f"{module}.{name} is a {type(registry).__name__}"
        assert len(registry) >= 1, f"{module}.{name} is empty"
    found = {n for n, v in vars(loaded).items() if isinstance(v, Registry) and n.isupper()}
    assert found == set(REGISTRIES[module])  # the list above stays complete


def _dict_globals(path) -> set[str]:
    """Upper-case module-level names bound to a dict display or annotated as a dict."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value, annotation = node.target.id, node.value, ast.unparse(node.annotation)
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)):
            name, value, annotation = node.targets[0].id, node.value, ""
        else:
            continue
        made = isinstance(value, (ast.Dict, ast.DictComp)) or (
            isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1]
            in ("dict", "defaultdict", "OrderedDict"))
        typed = annotation.split("[")[0].split(".")[-1] in ("dict", "Dict", "MutableMapping")
        if re.fullmatch(r"_?[A-Z][A-Z0-9_]*", name) and (made or typed):
            out.add(name)
    return out


def test_no_hand_written_registry_is_left():
    found = {(module, name) for module, path in modules().items() for name in _dict_globals(path)}
    new = found - DATA_TABLES
    assert not new, (f"{sorted(new)}: a registry is a platform.registry.Registry; a data "
                     "table goes in DATA_TABLES of this test")
    assert found == DATA_TABLES  # a table that became something else leaves the list


def test_the_scan_sees_a_hand_written_registry(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("THINGS: dict[str, int] = {}\n_MORE = {'a': 1}\nOK = Registry('x')\n"
                    "def register_thing(name):\n    pass\n")
    assert _dict_globals(path) == {"THINGS", "_MORE"}


def test_config_validation_names_the_key_the_kind_and_the_known_choices():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.name=imagenet22k"])
    assert str(err.value) == ("data.name: unknown dataset 'imagenet22k' "
                              "(known: cifar10, cifar100, digits, imagefolder, mnist)")
    with pytest.raises(ConfigError, match=r"^fed\.protocol: unknown round protocol 'fastest' "
                                          r"\(known: buffered, deadline, over_commit, wait_all\)$"):
        load_config(None, ["fed.protocol=fastest"])
    with pytest.raises(ConfigError, match=r"^profiles\.mix: unknown tier 'pager' \(known: "):
        load_config(None, ["profiles.source=mix", "profiles.mix=pager:1"])
