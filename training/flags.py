"""Command-line flags derived from a configuration dataclass, so that a parameter is declared once.

Each field becomes `--field-name` (or the name in its metadata), with the field's type, its
default (or the default of a `defaults` instance), its help and choices from `flag(...)`
metadata. bool fields become --x/--no-x; `X | None` takes an X; `tuple[X, ...]` takes one or
more; a nested dataclass adds its own fields' flags (their metadata can be given by the parent
field, for dataclasses declared elsewhere). A field without a default is a required flag.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable


def flag(default: Any = dataclasses.MISSING, help: str = "", *, name: str | None = None,
         choices: Iterable | None = None, min: float | None = None, default_factory: Any = dataclasses.MISSING,
         fields: dict[str, dict] | None = None) -> Any:
    """A dataclass field with what its command-line flag needs. `name`: the flag when it is not the
    field's name with dashes; `min`: smallest accepted value; `fields`: metadata for the fields of a
    nested dataclass (name -> dict of these same keys)."""
    meta = {"help": help, "name": name, "choices": tuple(choices) if choices is not None else None, "min": min,
            "fields": fields or {}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _default(f: dataclasses.Field, defaults: Any) -> Any:
    if defaults is not None:
        return getattr(defaults, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _bounded(kind: type, low: float | None):
    if low is None:
        return kind

    def parse(text: str):
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error for a value it cannot parse
    return parse


def _fields(cls) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def add_flags(parser, cls, defaults: Any = None, *, only: Iterable[str] | None = None,
              required: Iterable[str] = (), meta: dict[str, dict] | None = None, _prefix: str = "") -> None:
    """Add a flag per field of dataclass `cls` (the fields named in `only`, if given; nested
    dataclasses always whole). `required`: fields that must be given even though they have a default."""
    only, required, meta = set(only) if only is not None else None, set(required), meta or {}
    for f, tp in _fields(cls):
        if only is not None and f.name not in only:
            continue
        m = {**f.metadata, **meta.get(f.name, {})}
        default = _default(f, defaults)
        if dataclasses.is_dataclass(tp):
            add_flags(parser, tp, default if default is not dataclasses.MISSING else None,
                      meta=m.get("fields"), _prefix=f"{_prefix}{f.name}.")
            continue
        kw: dict[str, Any] = {"dest": _prefix + f.name, "help": m.get("help") or None}
        if m.get("choices") is not None:
            kw["choices"] = list(m["choices"])
        elif _prefix and tp is not bool:
            kw["metavar"] = f.name.upper()  # not the dotted destination
        args = typing.get_args(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kw.update(nargs="+", type=_bounded(args[0], m.get("min")))
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
            kw["type"] = _bounded(next(a for a in args if a is not type(None)), m.get("min"))
        else:
            kw["type"] = _bounded(tp, m.get("min"))
        if default is dataclasses.MISSING or f.name in required:
            kw["required"] = True
        else:
            kw["default"] = list(default) if isinstance(default, tuple) else default
        action = parser.add_argument("--" + (m.get("name") or f.name.replace("_", "-")), **kw)
        # some Pythons' BooleanOptionalAction names its default itself
        if action.help and not action.required and "%(default)" not in action.help:
            action.help += " (default: %(default)s)"


def flag_values(cls, args: argparse.Namespace, *, _prefix: str = "") -> dict[str, Any]:
    """The keyword arguments of `cls` that `args` holds flags for (nested dataclasses built)."""
    out: dict[str, Any] = {}
    for f, tp in _fields(cls):
        if dataclasses.is_dataclass(tp):
            nested = flag_values(tp, args, _prefix=f"{_prefix}{f.name}.")
            if nested:
                out[f.name] = tp(**nested)
        elif hasattr(args, _prefix + f.name):
            value = getattr(args, _prefix + f.name)
            out[f.name] = tuple(value) if typing.get_origin(tp) is tuple and value is not None else value
    return out


def from_flags(cls, args: argparse.Namespace, **overrides):
    return cls(**{**flag_values(cls, args), **overrides})
