"""Dotted keys: between nested dicts (TOML, overrides) and the typed `Config`.

`parse_overrides` turns `fed.rounds=50` into a nested dict, `merge` lays one nested
dict over another, `build` checks every key and type against the schema and builds
the dataclasses, `flat_items` and `to_dict` go back (result columns, `config.toml`).
"""

from __future__ import annotations

import dataclasses
import typing
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
    elif typ is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
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
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: overrides are dotted key=value, e.g. fed.rounds=50")
        node = nested
        *parents, leaf = parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{key}: empty part in a dotted key, e.g. fed.rounds=50")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is a value, not a table")
        node[leaf] = value.strip()
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


def flat_items(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """`{"split.head_blocks": 1, ...}`: the dotted names used as result columns."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flat_items(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out
