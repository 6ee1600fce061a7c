"""Reading untrusted tables (a TOML file, an API body, a spec a peer sent) so that every
problem is reported with the key path that holds it, all at once, instead of the first
one raising: an operator fixes a file in one pass, not one error per restart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any, TypeVar

from agent.domain.values import Problem, show

T = TypeVar("T")


class ConfigError(Exception):
    """Invalid configuration; ``problems`` lists each one as 'key.path: what is wrong'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class TableReader:
    """Walks one TOML table, recording problems with their key paths instead of raising."""

    def __init__(self, problems: list[str], path: str, table: Mapping[str, Any]) -> None:
        self.problems = problems
        self.path = path
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def bad(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def get(self, name: str, kind: type[T], default: T, what: str) -> T:
        self.used.add(name)
        if name not in self.table:
            return default
        v = self.table[name]
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            self.bad(name, f"{show(v)} is not {what}")
            return default
        return v

    def conv(self, name: str, default: T, fn: Callable[[Any], T], what: str) -> T:
        """Read a value and convert it with fn; a ValueError becomes 'X is not <what>'."""
        self.used.add(name)
        if name not in self.table:
            return default
        v = self.table[name]
        try:
            return fn(v)
        except Problem as e:
            self.bad(name, f"{show(v)} {e}")
            return default
        except (ValueError, TypeError):
            self.bad(name, f"{show(v)} is not {what}")
            return default

    def finish(self) -> None:
        for k in self.table:
            if k not in self.used:
                self.problems.append(f"{self.key(k)}: unknown key")


#: (class, field) -> a plain default (never a default_factory's: each call makes one)
_PLAIN_DEFAULTS: dict[tuple[type[Any], str], Any] = {}


def field_default(cls: type[Any], name: str) -> Any:
    """The dataclass field's own default: each default is stated once, on the field."""
    try:
        return _PLAIN_DEFAULTS[cls, name]  # read ten times per origin spec decoded
    except KeyError:
        pass
    f = cls.__dataclass_fields__[name]
    if f.default is not MISSING:
        _PLAIN_DEFAULTS[cls, name] = f.default  # immutable (a dataclass rule): shared
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")
