"""Config fields named once: help text, bounds and choices live on the dataclass field itself.

A frozen config dataclass declares each setting with ``param`` (its default, a one-line help text and
its bounds); ``check_fields`` validates every bounded or ``Literal`` field under its own name, and the
command line (``trajemb.cli_fields``) builds its flags from the same fields, so a new field becomes a
flag with its help, type, choices and bounds without being named anywhere else. Errors name the field
(``batch_size must be in [2, 16777216], got 1``) and list it in ``ConfigError.fields``; the CLI turns
that name into the flag that set it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Literal, get_args, get_origin

from trajemb.core.errors import ConfigError
from trajemb.core.validate import check_float, check_int


@dataclass(frozen=True)
class Bounds:
    """A closed (or, where ``*_open``, open) interval; None is unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        lo = "-inf" if self.low is None else _number(self.low)
        hi = "inf" if self.high is None else _number(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{lo}, {hi}{right}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


#: k of every "k nearest" setting (search, uniqueness, the explorer's neighbours): one default, one bound.
K_NEIGHBORS_DEFAULT = 10
#: k of minADE/minFDE@k (validation, forecasting): av2's K = 6 modes.
K_MODES_DEFAULT = 6
#: The largest k anywhere: more neighbours than a person reads or a metric needs.
K_MAX = 1000
K_BOUNDS = Bounds(1, K_MAX)


def param(
    default: Any = MISSING,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    bounds: Bounds | None = None,
    default_factory: Any = MISSING,
    choices: tuple[Any, ...] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its help text and bounds in the field's metadata.

    ``choices``: the values allowed where the type is not a ``Literal`` (a tuple kept elsewhere).
    ``cli=False`` keeps a field off the command line (set from code or a saved config only).
    """
    if bounds is None and (low is not None or high is not None):
        bounds = Bounds(low, high, low_open, high_open)
    metadata = {"help": help, "bounds": bounds, "choices": choices, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (string annotations evaluated once per class)."""
    return _field_types(cls)


@functools.cache
def _field_types(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` type (None for any other type)."""
    return get_args(tp) if get_origin(tp) is Literal else None


def check_fields(config: Any) -> None:
    """Check every field of the dataclass instance ``config`` that has bounds or a ``Literal`` type,
    under the field's own name; None passes where the type allows it."""
    hints = field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp, optional = unwrap_optional(hints[f.name])
        if value is None and optional:
            continue
        choices = literal_choices(tp) or f.metadata.get("choices")
        if choices is not None:
            if isinstance(value, bool) or value not in choices:
                raise ConfigError(
                    f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r:.40}",
                    fields=(f.name,),
                )
            continue
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        if tp is int:
            low = int(bounds.low) if bounds.low is not None else -(2**63)
            check_int(f.name, value, low, None if bounds.high is None else int(bounds.high))
        else:
            check_float(
                f.name, value, bounds.low, bounds.high, low_open=bounds.low_open, high_open=bounds.high_open
            )
