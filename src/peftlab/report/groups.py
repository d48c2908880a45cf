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


def size_of(r: Result) -> int | None:
    """The run's training images per class under --train-sizes; None: the seed's whole training sample."""
    return (r.get("data") or {}).get("train_per_class")


def sizes(results: list[Result]) -> list[int | None]:
    """The training sizes of the successful results, smallest first, the whole sample (None) last."""
    found = {size_of(r) for r in results if is_ok(r)}
    return sorted(found, key=lambda k: float("inf") if k is None else k)


def at_size(results: list[Result], k: int | None) -> list[Result]:
    return [r for r in results if size_of(r) == k]


def largest(results: list[Result]) -> list[Result]:
    """The results at the largest training size (all of them when there is one size): what the table, the
    comparisons and the findings are about; the data-size section reads every size."""
    ks = sizes(results)
    return results if len(ks) <= 1 else at_size(results, ks[-1])


def groups(results: list[Result]) -> dict[str, list[Result]]:
    """Successful results grouped by label (one group = one method configuration over its seeds), at the
    largest training size."""
    out: dict[str, list[Result]] = {}
    for r in ordered(largest(results)):
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
