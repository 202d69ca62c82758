"""The search space of a study: which config keys vary, over what, and how they are read.

    [space]
    "split.head_blocks" = { low = 0, high = 4 }            # int: the key is an int
    "prune.keep" = { low = 0.2, high = 1.0, step = 0.2 }    # float: the key is a float
    "train.lr" = { low = 1e-3, high = 1e-1, log = true }
    "prompt.length" = { choices = [0, 5, 10, 20] }          # any type

A range's type is its config key's type, so nobody writes it twice. Keys are the
config's dotted keys, given quoted (`"split.head_blocks"`) or as nested tables; the
study owns `run.out_dir`, `run.run_id` and `run.backend`. Also here: the small checks
that turn a TOML value of the wrong shape into a ConfigError naming its key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from sfprompt.platform.config.dotted import flatten
from sfprompt.platform.config.load import replace
from sfprompt.platform.config.schema import Config
from sfprompt.platform.errors import ConfigError

# Every config key and its default; a key's type is its default's type.
CONFIG_DEFAULTS: dict[str, Any] = flatten(Config())
# The study decides where runs go and how they run (one trial = one in-process run).
STUDY_OWNED = ("run.out_dir", "run.run_id", "run.backend")
_PARAM_KEYS = ("low", "high", "step", "log", "choices")


@dataclass(frozen=True)
class Param:
    """One searched config key: a range (int or float, by the key's type) or choices."""

    key: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if type(CONFIG_DEFAULTS[self.key]) is int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": list(self.choices)}
        out = {"low": self.low, "high": self.high, "log": self.log}
        return out if self.step is None else {**out, "step": self.step}


def parse_fixed(fixed: dict[str, Any]) -> tuple[dict[str, Any], Config]:
    """The fixed settings as the config reads them (a TOML int for a float key becomes a
    float) and the base config they make."""
    for key in fixed:
        _check_key(key, "fixed")
    try:
        base = replace(Config(), **fixed)
    except ConfigError as err:
        raise ConfigError(f"fixed.{err}") from None
    resolved = flatten(base)
    return {key: resolved[key] for key in fixed}, base


def parse_space(entries: Any, fixed: dict[str, Any], base: Config) -> tuple[Param, ...]:
    """The `[space]` table as Params, each range endpoint and choice checked alone."""
    flat = flatten(table(entries, "space", None), is_leaf=_is_param)
    for key, entry in flat.items():
        if not _is_param(entry):
            raise ConfigError(f"{key}: expected a range table, got {entry!r}")
    if not flat:
        raise ConfigError("space: needs at least one searched key")
    params = []
    for key, entry in flat.items():
        _check_key(key, "space")
        if key in fixed:
            raise ConfigError(f"space.{key}: also set in fixed; a key is either fixed or searched")
        param = _parse_param(key, entry)
        for value in param.choices or (param.low, param.high):
            _check_value(base, key, value)
        params.append(param)
    return tuple(params)


def _parse_param(key: str, entry: dict[str, Any]) -> Param:
    where = f"space.{key}"
    table(entry, where, _PARAM_KEYS)
    typ = type(CONFIG_DEFAULTS[key])
    if "choices" in entry:
        extra = sorted(set(entry) - {"choices"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: not allowed beside choices")
        choices = typed(entry["choices"], list, f"{where}.choices")
        if not choices:
            raise ConfigError(f"{where}.choices: needs at least one value")
        return Param(key, choices=tuple(typed(c, _accepted(typ), f"{where}.choices")
                                        for c in choices))
    if typ not in (int, float):
        raise ConfigError(f"{where}: a {typ.__name__} setting is searched with choices = [...]")
    for name in ("low", "high"):
        if name not in entry:
            raise ConfigError(f"{where}.{name}: missing (or give choices = [...])")
    low, high = (typed(entry[n], _accepted(typ), f"{where}.{n}") for n in ("low", "high"))
    step = entry.get("step")
    log = typed(entry.get("log", False), bool, f"{where}.log")
    if step is not None:
        step = typed(step, _accepted(typ), f"{where}.step")
        if not step > 0:
            raise ConfigError(f"{where}.step: must be > 0, got {step}")
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ConfigError(f"{where}: needs finite low <= high, got low={low} high={high}")
    if log and step is not None:
        raise ConfigError(f"{where}.log: cannot be combined with step")
    if log and low <= 0:
        raise ConfigError(f"{where}.low: must be > 0 with log = true, got {low}")
    return Param(key, low=low, high=high, step=step, log=log)


def _check_key(key: str, where: str) -> None:
    if key not in CONFIG_DEFAULTS:
        raise ConfigError(f"{where}.{key}: not a config key (see `sfprompt config`)")
    if key in STUDY_OWNED:
        raise ConfigError(f"{where}.{key}: set by the study (each trial is one in-process run "
                          "under the study directory)")


def _check_value(base: Config, key: str, value: Any) -> None:
    """An endpoint or choice the config rejects on its own is a mistake in the file; one
    rejected only with other keys (head + tail too deep) is an infeasible point, left to
    the trials to record."""
    try:
        replace(base, **{key: value})
    except ConfigError as err:
        if str(err).startswith(f"{key}:"):
            raise ConfigError(f"space.{err}") from None


def _is_param(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in _PARAM_KEYS)


def _accepted(typ: type) -> type | tuple[type, ...]:
    return (int, float) if typ is float else typ


def typed(value: Any, typ: type | tuple[type, ...], key: str) -> Any:
    """`value` if it has type `typ` (bool is never taken for a number)."""
    numeric = typ in (int, float, (int, float))
    if isinstance(value, typ) and not (numeric and isinstance(value, bool)):
        return value
    names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
    raise ConfigError(f"{key}: expected {names}, got {value!r}")


def table(value: Any, where: str, known: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    for key in value if known is not None else ():
        if key not in known:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(known)})")
    return value
