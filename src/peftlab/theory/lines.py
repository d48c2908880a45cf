"""Parameter-count tables: a Line per component (its formula in symbols and in numbers, its count),
a Breakdown of a model + method, and the arithmetic that evaluates a formula string."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

# ------------------------------------------------------------------------- result types


@dataclass
class Line:
    """One component: its name, formula in symbols, the same with numbers, and its count.

    part says how the count adds up: "base" lines sum to the base model, "added" lines to the
    adapter parameters, "copy" is PEFT's trainable copy of the head (counted only in PEFT's
    "all params"), "subset" is a trainable slice of base lines (e.g. biases), not counted again.
    """

    component: str
    symbols: str
    numbers: str
    count: int
    trainable: bool
    part: str = "base"  # base | added | copy | subset

    def __str__(self) -> str:
        shown = [self.symbols] + ([self.numbers] if self.numbers != self.symbols else [])
        if shown[-1] != f"{self.count:,}":
            shown.append(f"{self.count:,}")
        return f"{self.component}: {' = '.join(shown)}"


@dataclass
class Breakdown:
    """Total and trainable parameters of one model + method, component by component."""

    lines: list[Line]
    total: int
    trainable: int
    base: int
    added: int
    peft_all_params: int
    kind: str = "theory"  # "theory" (from the config) or "structural" (from module shapes)
    title: str = ""
    legend: str = ""  # the symbols and their values
    notes: list[str] = field(default_factory=list)  # the figures people misread, one line each

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.base

    def format(self) -> str:
        """The table, the totals and the notes, as printable text."""
        out = [f"{self.kind.capitalize()}: {self.title}"]
        if self.legend:
            out.append(f"  where {self.legend}")
        sections = [
            ("base", "model (base)"),
            ("added", "added by the method"),
            ("copy", "PEFT's trainable copy (not part of total)"),
            ("subset", "trainable parts of the frozen base (already in base)"),
        ]
        for part, heading in sections:
            lines = [ln for ln in self.lines if ln.part == part]
            if lines:
                out.append(f"  {heading}:")
                out += [f"    {'trainable' if ln.trainable else 'frozen   '}  {ln}" for ln in lines]
        out += [
            f"  base            = {self.base:>13,}",
            f"  added           = {self.added:>13,}",
            f"  total           = {self.total:>13,}   (base + added)",
            f"  trainable       = {self.trainable:>13,}   ({self.trainable_pct:.4f} % of base)",
            f"  PEFT all params = {self.peft_all_params:>13,}",
        ]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {**asdict(self), "trainable_pct": self.trainable_pct}


# ------------------------------------------------------------------------- formula arithmetic


@dataclass(frozen=True)
class Piece:
    symbols: str
    numbers: str
    count: int


SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def formula(expr: str, env: Mapping[str, int]) -> Piece:
    """'L·2·r·(d+d)' with {L: 12, r: 8, d: 768} -> Piece(expr, '12·2·8·(768+768)', 294912).
    Only this module's own formula strings are evaluated (·, −, ², ³ and integer arithmetic)."""
    numbers = SYMBOL.sub(lambda m: str(env[m.group()]), expr)
    code = numbers.replace("·", "*").replace("−", "-").replace("²", "**2").replace("³", "**3")
    return Piece(expr, numbers, int(eval(code, {"__builtins__": {}}, {})))  # noqa: S307


def total(pieces: list[Piece]) -> Piece:
    return Piece(
        " + ".join(p.symbols for p in pieces), " + ".join(p.numbers for p in pieces), sum(p.count for p in pieces)
    )


ZERO = Piece("0", "0", 0)
