"""Building blocks of the configurations: immutable values, option fields with their help and
flag, typed checks, JSON round-trip."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import field, fields, replace
from typing import Any, ClassVar

from int8kit.errors import ConfigError

CONFIG_VERSION = 1


class _FrozenMapping(Mapping[str, Any]):
    """An immutable, hashable mapping (a configuration value must be both: configs key caches)."""

    __slots__ = ("_items",)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class Params(_FrozenMapping):
    """Method parameters by name (lists become tuples)."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        self._items = dict(sorted((k, _frozen(v)) for k, v in (raw or {}).items()))

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._items.items()}


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def option(default: Any, help: str, *, flag: str | None = None, off_flag: str | None = None, on_help: str | None = None,
           aliases: tuple[str, ...] = (), metavar: str | None = None, cli: bool = True) -> Any:
    """A configuration field with its help text and command-line spelling.

    ``flag`` sets the value (``--th-method X``; for a bool, the flag that turns it on),
    ``off_flag`` turns a bool off (``--no-bias-correction``), ``aliases`` are older spellings of
    whichever flag there is one of. Without ``flag``/``off_flag`` the flag is the field name.
    ``help`` says what the flag does (``off_flag``'s when there is one; ``on_help``: ``flag``'s then).
    """
    meta = {"help": help, "flag": flag, "off_flag": off_flag, "on_help": on_help, "aliases": aliases, "metavar": metavar, "cli": cli}
    return field(default=default, metadata=meta)


def name_list(value: Any, option_name: str) -> tuple[str, ...]:
    """Layer/op names from a collection of strings, or one string of comma-separated names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(v, str) for v in names):
        raise ConfigError(f"{option_name} takes layer names (a list of strings or 'a,b'), got {value!r}.")
    return names


def unknown_key(where: str, key: str, allowed: list[str]) -> ConfigError:
    """The error for a key nobody defines, with the nearest accepted one."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; accepted keys: {', '.join(sorted(allowed))}."
    return ConfigError(f"{where} has an unknown key '{key}'{hint}")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class _Options:
    """Shared behaviour of the three configurations: typed checks, replace, JSON round-trip."""

    WHAT: ClassVar[str] = "configuration"

    def _check_types(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                if isinstance(value, int) and value in (0, 1):  # JSON writers that store 0/1
                    object.__setattr__(self, f.name, bool(value))
                    continue
                raise ConfigError(f"{f.name} must be True or False, got {value!r}.")
            if f.type.startswith("int") and value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ConfigError(f"{f.name} must be a whole number, got {value!r}.")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ConfigError(f"{f.name} must be a number, got {value!r}.")

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (and validated); unknown names fail with the nearest one."""
        allowed = [f.name for f in fields(self)]  # type: ignore[arg-type]
        for key in changes:
            if key not in allowed:
                raise unknown_key(self.WHAT, key, allowed)
        return replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, every field (defaults included)."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, raw: Any):
        """Validate ``raw`` (as ``to_dict`` writes it; missing keys take their defaults)."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{cls.WHAT} must be a JSON object of option names, got {type(raw).__name__}.")
        allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in raw:
            if key not in allowed:
                raise unknown_key(cls.WHAT, key, allowed)
        return cls(**raw)
