"""Results grouped into configurations (a method with its options over its seeds, or a reference
baseline), in a fixed order: references first, then methods in registry order."""

from __future__ import annotations

from ..results import Result, is_ok, test_metrics
from .stats import Summary, summarize


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def label(r: dict) -> str:
    """What a row compares: the method, with the options a sweep varied (e.g. 'lora r=4 lr=0.001')."""
    return r.get("label") or r["method"]


def ordered(results: list[Result]) -> list[Result]:
    """Registry order of methods (head, last, lora, full, ...: recorded in each result's method_info),
    then label and seed: the same order whether the results come from a run or from the files on disk."""
    unknown = 10**6  # results without a recorded order (older files) go last, by name
    return sorted(
        results,
        key=lambda r: ((r.get("method_info") or {}).get("order", unknown), r["method"], label(r), r.get("seed", 0)),
    )


def groups(results: list[Result]) -> dict[str, list[Result]]:
    """Successful results grouped by label (one group = one method configuration over its seeds)."""
    out: dict[str, list[Result]] = {}
    for r in ordered(results):
        if is_ok(r):
            out.setdefault(label(r), []).append(r)
    return out


def accuracy_summary(rs: list[Result]) -> Summary:
    """Test accuracy over a configuration's seeds."""
    return summarize([test_metrics(r)["accuracy"] for r in rs])


def class_mean(runs: list[Result], c: str) -> float | None:
    """Mean accuracy on class c over the runs whose eval split has it; None when none has."""
    vals = [v for r in runs if (v := test_metrics(r)["per_class_accuracy"].get(c)) is not None]
    return sum(vals) / len(vals) if vals else None
