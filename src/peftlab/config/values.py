"""Values from YAML/JSON and the command line, coerced to a dataclass field's type."""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from ..errors import UserError


def field_type(cls, f) -> type:
    """The plain type of a dataclass field ('int | None' -> int, 'list[int]' -> list)."""
    t = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    t = args[0] if args and typing.get_origin(t) is not list else t
    return typing.get_origin(t) or t


def item_type(cls, f) -> type:
    """The element type of a list field ('list[int]' -> int)."""
    return typing.get_args(typing.get_type_hints(cls)[f.name])[0]


def _scalar(v, typ: type):
    """One value from YAML/JSON or the command line to typ; ValueError when it is not one."""
    if isinstance(v, typ) and not (typ is int and isinstance(v, bool)):
        return v
    if typ is bool:
        if str(v).lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError
        return str(v).lower() in ("true", "yes", "1")
    if typ is int:
        num = float(v)
        if not num.is_integer():
            raise ValueError
        return int(num)
    if typ is float:
        return float(v)
    if typ is str:
        return str(v)
    raise ValueError


def coerce(cls, values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Values from YAML/JSON to the fields' types: YAML reads '1e-3' as a string, JSON 4.0 as a float;
    a list field takes a list or a comma-separated string."""
    out = dict(values)
    for f in fields(cls):
        if f.name not in out or out[f.name] is None:
            continue
        v, typ = out[f.name], field_type(cls, f)
        try:
            if typ is list:
                items = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v
                if not isinstance(items, (list, tuple)):
                    items = [items]
                out[f.name] = [_scalar(x, item_type(cls, f)) for x in items]
            else:
                out[f.name] = _scalar(v, typ)
        except (TypeError, ValueError):
            what = item_type(cls, f) if typ is list else typ
            rule = ("comma-separated " if typ is list else "") + {int: "integer", float: "number"}.get(
                what, what.__name__
            )
            rule = rule + "s" if typ is list else ("an " if rule[0] in "aeiou" else "a ") + rule
            raise UserError(f"{owner}{f.name.replace('_', '-')} must be {rule} (got {v!r})") from None
    return out


def _positive(owner: str, **values) -> None:
    for name, v in values.items():
        if v is not None and not v > 0:
            raise UserError(f"{owner}{name.replace('_', '-')} must be > 0 (got {v})")
