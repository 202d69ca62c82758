"""`Registry`: one type for the named, extensible choices a config key selects (methods,
datasets, codecs, profile sources, samplers, ...).

Why one type rather than a dict and a decorator per module: every registry then
rejects a name registered twice (a programming error, caught at import instead of one
silently replacing the other), and every unknown name a user gives gets the same
one-line message listing the known ones. A registry is a read-only mapping from name
to value in registration order; only `add` and `register` extend it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from sfprompt.platform.errors import ConfigError

T = TypeVar("T")


class UnknownName(ConfigError, KeyError):
    """An unknown name: a ConfigError for users, a KeyError for Mapping's `in` and `get`."""

    __str__ = BaseException.__str__  # the plain line, not KeyError's quoted repr of it


class Registry(Mapping[str, T], Generic[T]):
    """Name -> value for one `kind` of choice ("method", "dataset", ...)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, value in (entries or {}).items():
            self.add(name, value)

    def add(self, name: str, value: T) -> T:
        """Register `value` under `name` and return it; a name taken twice is a bug."""
        if name in self._entries:
            raise ValueError(f"{self.kind} registry: {name!r} is registered twice")
        self._entries[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated function under `name`, return it unchanged."""
        return lambda value: self.add(name, value)

    def known(self) -> str:
        """The registered names, sorted, comma-separated (for messages)."""
        return ", ".join(sorted(self._entries))

    def check(self, key: str, value: str) -> T:
        """The entry config `key` selects with `value`, or ConfigError naming the key."""
        if value not in self._entries:
            raise ConfigError(f"{key}: unknown {self.kind} {value!r} (known: {self.known()})")
        return self._entries[value]

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownName(f"unknown {self.kind} {name!r} (known: {self.known()})")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {self.known()})"
