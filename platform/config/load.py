"""Loading a config: defaults, then a TOML file, then dotted overrides, validated.

`load_config(path, overrides)` is how every entry point gets its `Config`;
`replace(cfg, **dotted)` derives a validated variant (a comparison's methods and seeds,
a study's trial).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from sfprompt.platform.config.dotted import build, merge, parse_overrides, to_dict, unflatten
from sfprompt.platform.config.schema import Config
from sfprompt.platform.config.validate import validate
from sfprompt.platform.errors import ConfigError


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (as read from TOML)."""
    cfg = build(Config, values)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config of a run: defaults, then the TOML file, then dotted overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path}: invalid TOML ({err})") from None
        except UnicodeDecodeError as err:  # TOML is UTF-8 by definition
            raise ConfigError(f"config file {path}: not UTF-8 text (byte {err.start})") from None
        except OSError as err:
            raise ConfigError(f"config file {path}: cannot read ({err.strerror})") from None
    return config_from_dict(merge(values, parse_overrides(overrides or [])))


def replace(cfg: Config, **dotted: Any) -> Config:
    """A copy with dotted keys changed (`replace(cfg, **{"prune.keep": 1.0})`), validated."""
    return config_from_dict(merge(to_dict(cfg), unflatten(dotted)))
