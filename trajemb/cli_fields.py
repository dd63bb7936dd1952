"""Command-line flags built from the fields of a config dataclass (``trajemb.core.fields``), for ``trajemb.cli``.

Each field becomes one flag named as the field (``batch_size`` -> ``--batch-size``), with the field's
help text, its type, its choices (from a ``Literal``), its default and its bounds; a bool becomes
``--x/--no-x``, a ``tuple[str, ...]`` a comma-separated list, ``X | None`` a flag whose default is None.
A nested config's fields are flags of their own, under a prefix (``augment.noise_m`` ->
``--augment-noise-m``; the encoder's without one). Old spellings of renamed flags stay as hidden
aliases for a release (``renamed``); the parser's epilog lists them.

The parsed namespace remembers which spelling set each value, so that ``flag_message`` can turn the
field names of a ``ConfigError`` into the flags the user typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

from trajemb.core.fields import field_types, literal_choices, unwrap_optional

#: Namespace attribute: dest -> the option string that set it.
SPELLINGS = "_flag_spellings"
#: Namespace attribute: field name or dotted path -> dest (set by ``set_field_flags``).
FIELD_DESTS = "_field_dests"


@dataclass(frozen=True)
class ConfigFlags:
    """The flags one config dataclass added to a parser.

    ``dests``: dotted field path (``augment.noise_m``) -> argparse dest; ``flags``: dest -> flag.
    """

    cls: type
    prefix: str
    nested: Mapping[str, str]
    dests: dict[str, str]
    flags: dict[str, str]

    def build(self, args: argparse.Namespace, **overrides: Any) -> Any:
        """The config the parsed ``args`` describe; ``overrides`` (field name -> value) win."""
        return _build(self.cls, args, self.prefix, self.nested, overrides)

    def field_dests(self) -> dict[str, str]:
        """Field name and dotted path -> dest; a leaf name two nested configs share maps to the first."""
        out: dict[str, str] = {}
        for path, dest in self.dests.items():
            out.setdefault(path, dest)
            out.setdefault(path.rsplit(".", 1)[-1], dest)
        return out


class _Store(argparse.Action):
    """``store``, remembering the spelling that set the value."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        _remember(namespace, self.dest, option_string)


class _Bool(argparse.BooleanOptionalAction):
    """``--x/--no-x``, remembering the spelling that set the value."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, values, option_string)
        _remember(namespace, self.dest, option_string)


def _remember(namespace: argparse.Namespace, dest: str, option_string: str | None) -> None:
    spellings = getattr(namespace, SPELLINGS, None)
    if spellings is None:
        spellings = {}
        setattr(namespace, SPELLINGS, spellings)
    if option_string:
        spellings[dest] = option_string


def flag_of(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def comma_ints(text: str) -> tuple[int, ...]:
    """``"1, 5,10"`` -> ``(1, 5, 10)``."""
    return tuple(int(t) for t in comma_list(text))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _help(f: dataclasses.Field[Any], default: Any) -> str:
    text = str(f.metadata.get("help", ""))
    notes = []
    if default is not MISSING and default is not None and default != () and not isinstance(default, bool):
        notes.append(f"default {','.join(map(str, default)) if isinstance(default, tuple) else default}")
    bounds = f.metadata.get("bounds")
    if bounds is not None:
        notes.append(f"in {bounds.describe()}")
    return f"{text} ({'; '.join(notes)})" if notes else text


def _argument(f: dataclasses.Field[Any], tp: Any, default: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords of one leaf field."""
    tp, _ = unwrap_optional(tp)
    kwargs: dict[str, Any] = {"help": _help(f, default)}
    if default is MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    choices = literal_choices(tp) or f.metadata.get("choices")
    if tp is bool:
        kwargs["action"] = _Bool
    elif choices is not None:
        kwargs.update(action=_Store, choices=choices, type=type(choices[0]))
    elif tp in (int, float, str):
        kwargs.update(action=_Store, type=tp)
    elif tp == tuple[str, ...]:
        kwargs.update(action=_Store, type=comma_list, metavar="A,B")
    elif tp == tuple[int, ...]:
        kwargs.update(action=_Store, type=comma_ints, metavar="1,2")
    else:
        raise TypeError(f"no flag for field {f.name} of type {tp!r}; mark it param(cli=False)")
    return kwargs


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    prefix: str = "",
    nested: Mapping[str, str] | None = None,
    skip: Sequence[str] = (),
    renamed: Mapping[str, str] | None = None,
) -> ConfigFlags:
    """Add a flag for every field of ``cls`` (recursing into nested configs) to ``parser``.

    Args:
        prefix: put before every flag's name (``augment_``).
        nested: nested config field -> the prefix of its fields' flags (default: the field's name and
            ``_``); ``{"encoder": ""}`` makes the encoder's fields flags of their own.
        skip: dotted field paths that get no flag (the command sets them itself); their defaults hold.
        renamed: old flag -> dotted field path: a hidden alias for a release, listed in the epilog.
    """
    nested = dict(nested or {})
    dests: dict[str, str] = {}
    flags: dict[str, str] = {}
    kwargs_of: dict[str, dict[str, Any]] = {}
    _add(parser, cls, prefix, "", nested, set(skip), dests, flags, kwargs_of)
    for old, path in (renamed or {}).items():
        dest = dests[path]
        alias = dict(kwargs_of[dest], default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        alias.pop("required", None)
        parser.add_argument(old, dest=dest, **alias)
    if renamed:
        lines = []
        for old, path in renamed.items():
            new, switch = flags[dests[path]], kwargs_of[dests[path]].get("action") is _Bool
            if switch:
                old, new = f"--[no-]{old[2:]}", f"--[no-]{new[2:]}"
            lines.append(f"  {old:<28} now {new}")
        note = "\n".join(
            ["renamed flags (the old spellings are deprecated; they work until the next release):", *lines]
        )
        parser.epilog = f"{parser.epilog}\n{note}" if parser.epilog else note
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return ConfigFlags(cls, prefix, nested, dests, flags)


def _add(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str,
    path: str,
    nested: Mapping[str, str],
    skip: set[str],
    dests: dict[str, str],
    flags: dict[str, str],
    kwargs_of: dict[str, dict[str, Any]],
) -> None:
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        here = f"{path}{f.name}"
        if here in skip or not f.metadata.get("cli", True):
            continue
        tp = hints[f.name]
        if _is_config(tp):
            inner = nested.get(here, f"{f.name}_")
            _add(parser, tp, prefix + inner, f"{here}.", nested, skip, dests, flags, kwargs_of)
            continue
        dest = f"{prefix}{f.name}"
        kwargs = _argument(f, tp, _default(f))
        parser.add_argument(flag_of(dest), dest=dest, **kwargs)
        dests[here], flags[dest], kwargs_of[dest] = dest, flag_of(dest), kwargs


def _build(
    cls: type, args: argparse.Namespace, prefix: str, nested: Mapping[str, str], overrides: Any
) -> Any:
    return _build_at(cls, args, prefix, "", nested, overrides)


def _build_at(
    cls: type, args: argparse.Namespace, prefix: str, path: str, nested: Mapping[str, str], overrides: Any
) -> Any:
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        here = f"{path}{f.name}"
        if here in overrides:
            kwargs[f.name] = overrides[here]
        elif _is_config(hints[f.name]):
            inner = nested.get(here, f"{f.name}_")
            kwargs[f.name] = _build_at(hints[f.name], args, prefix + inner, f"{here}.", nested, overrides)
        elif hasattr(args, f"{prefix}{f.name}"):
            kwargs[f.name] = getattr(args, f"{prefix}{f.name}")
    return cls(**kwargs)


def set_field_flags(parser: argparse.ArgumentParser, *configs: ConfigFlags) -> None:
    """Let ``flag_message`` name the flags of these configs' fields for this (sub)command."""
    dests: dict[str, str] = {}
    flags: dict[str, str] = {}
    for c in configs:
        for name, dest in c.field_dests().items():
            dests.setdefault(name, dest)
        flags.update(c.flags)
    parser.set_defaults(**{FIELD_DESTS: (dests, flags)})


def flag_message(message: str, fields: Sequence[str], args: argparse.Namespace) -> str:
    """``message`` with each of ``fields`` (config field names) replaced by the flag that sets it, as
    the user spelled it (an old alias stays the alias they typed)."""
    known: tuple[dict[str, str], dict[str, str]] | None = getattr(args, FIELD_DESTS, None)
    if known is None:
        return message
    dests, flags = known
    spellings: dict[str, str] = getattr(args, SPELLINGS, None) or {}
    for name in fields:
        dest = dests.get(name)
        if dest is None:
            continue
        flag = spellings.get(dest, flags[dest])
        message = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", flag, message)
    return message
