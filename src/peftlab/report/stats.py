"""Statistics over seeds: mean, sample standard deviation and a 95% confidence interval of the mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

# two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (beyond: normal 1.96)
T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n-1); 0 for a single value
    low: float  # 95% interval of the mean: mean -/+ t * std / sqrt(n); equal to mean when n = 1
    high: float

    def overlaps(self, other: Summary) -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": [self.low, self.high]}


def summarize(values: list[float]) -> Summary:
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    half = t * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def pareto_front(pts: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none has x <= and y >= with one of them strict
    (smaller cost x, higher accuracy y). Sorted by x."""
    front = [i for i, (x, y) in enumerate(pts) if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in pts)]
    return sorted(front, key=lambda i: (pts[i][0], -pts[i][1]))
