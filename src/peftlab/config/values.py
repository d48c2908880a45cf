"""Values from YAML/JSON and the command line, coerced to a dataclass field's type."""

from __future__ import annotations

import math
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


MAX_INT = 2**63 - 1  # what a C long long holds: torch, numpy and the samplers take no more


def _scalar(v, typ: type):
    """One value from YAML/JSON or the command line to typ; ValueError when it is not one (a float that is not
    finite, an integer beyond MAX_INT)."""
    v = _checked(v)
    if isinstance(v, typ) and not (typ is int and isinstance(v, bool)):
        return v
    if typ is bool:
        if str(v).lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError
        return str(v).lower() in ("true", "yes", "1")
    if typ is int:
        if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
            return _checked(int(v))  # exact: '18446744073709551616' is not rounded through a float
        num = float(v)
        if not num.is_integer():
            raise ValueError
        return _checked(int(num))
    if typ is float:
        return _checked(float(v))
    if typ is str:
        return str(v)
    raise ValueError


class OutOfRange(ValueError):
    """A number no option takes: NaN, inf, or an integer beyond MAX_INT."""


def _checked(v):
    """v, unless it is a float that is not finite (NaN, inf) or an integer beyond MAX_INT."""
    if isinstance(v, float) and not math.isfinite(v):
        raise OutOfRange("a finite number (not nan or inf)")
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        raise OutOfRange(f"at most {MAX_INT} (2^63 - 1)")
    return v


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
        except OutOfRange as e:
            raise UserError(f"{owner}{f.name.replace('_', '-')} must be {e} (got {v!r})") from None
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
