"""Dotted keys: between nested dicts (TOML, overrides) and the typed `Config`.

`flatten` and `unflatten` go between nested values and dotted keys (result columns, study
files, overrides); `parse_overrides` turns `fed.rounds=50` into a nested dict, `merge`
lays one nested dict over another, `build` checks every key and type against the schema
and builds the dataclasses, `to_dict` goes back (`config.toml`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check `value` against a field type; strings from the command line are parsed."""
    if isinstance(typ, type) and dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
        return build(typ, value, key + ".")
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
    elif typ in (int, float):  # a float field takes an int too, never the other way
        if isinstance(value, str):
            try:
                return typ(value)
            except ValueError:
                pass
        elif isinstance(value, int if typ is int else (int, float)) and not isinstance(value, bool):
            return typ(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this function does not know is a bug here
        raise TypeError(f"unsupported config type {typ} for {key}")
    raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}")


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    types_ = _field_types(cls)
    for name in values:
        if name not in types_:
            known = ", ".join(prefix + n for n in types_)
            raise ConfigError(f"{prefix}{name}: unknown key (known: {known})")
    kwargs = {name: _coerce(prefix + name, values[name], types_[name]) for name in values}
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["fed.rounds=50", "prune.keep=0.3"]` -> nested dict of strings."""
    flat: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: overrides are dotted key=value, e.g. fed.rounds=50")
        flat[key.strip()] = value.strip()
    return unflatten(flat)


def flatten(value: Any, prefix: str = "",
            is_leaf: Callable[[Any], bool] = lambda v: False) -> dict[str, Any]:
    """Nested dataclasses (a `Config`) or dicts -> `{"split.head_blocks": 1, ...}`, the
    dotted names of result columns and study files, in field order.

    A key may be dotted already: `{"split": {"head_blocks": 1}}` and
    `{"split.head_blocks": 1}` both give the latter, and two paths to one name are an
    error rather than one silently overwriting the other. `is_leaf` keeps a dict whole
    (a study's search range).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    else:
        items = list(value.items())
    out: dict[str, Any] = {}
    for key, item in items:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{prefix or 'a key'}: keys must be non-empty strings, got {key!r}")
        name = f"{prefix}.{key}" if prefix else key
        nested = ((dataclasses.is_dataclass(item) and not isinstance(item, type))
                  or (isinstance(item, Mapping) and not is_leaf(item)))
        for column, leaf in flatten(item, name, is_leaf).items() if nested else [(name, item)]:
            if column in out:
                raise ConfigError(f"{column}: given twice (as a dotted key and in a table)")
            out[column] = leaf
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"fed.rounds": 50}` -> `{"fed": {"rounds": 50}}`, the inverse of `flatten`."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{key}: empty part in a dotted key, e.g. fed.rounds=50")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is a value, not a table")
        node[leaf] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, f"{prefix}{key}.")
        elif isinstance(value, dict) and key in out:
            # A table of overrides would silently replace the file's bad value.
            raise ConfigError(f"{prefix}{key}: expected a table of settings, got {out[key]!r}")
        else:
            out[key] = value
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
