"""Statistics: summaries over seeds, and paired comparisons of two configurations.

Configurations of one comparison share seeds, samples and test images, so their differences are paired:
per seed, the difference of the two test accuracies; over seeds, its mean with a Student-t interval
(exact quantiles, scipy) and a paired t-test. With one seed there is no spread over seeds: McNemar's
exact test on the test images the two got right or wrong (they are the same images). The p-values of
one report are Holm-corrected together; a difference is called real only below ALPHA after correction
(compare.pays, one all-of verdict, is an intersection-union test instead: each of its tests at ALPHA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05  # family-wise, after Holm's correction over the comparisons of a report
LEVEL = 0.95  # of the intervals


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile t_{(1+level)/2, df}, for any df >= 1."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n-1); 0 for a single value
    low: float  # 95% interval of the mean: mean -/+ t * std / sqrt(n), clipped to the bounds; mean when n = 1
    high: float

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": [self.low, self.high]}


def summarize(values: list[float], bounds: tuple[float, float] | None = (0.0, 1.0)) -> Summary:
    """Mean, std and 95% interval of the mean of values; bounds clip the interval (an accuracy stays in
    [0, 1]; pass None for unbounded quantities such as times)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(n, mean, std, low, high)


@dataclass(frozen=True)
class Paired:
    """a minus b, paired: n pairs (seeds, or test images for McNemar), the mean difference and its 95%
    interval, the test's p-value, and (after holm()) the corrected one."""

    n: int
    diff: float
    low: float | None  # None: no interval (one seed)
    high: float | None
    p: float
    test: str  # "paired t over n seeds", "McNemar over n test images", "none"
    p_holm: float | None = None

    @property
    def real(self) -> bool:
        """The difference passes the test after correction."""
        return self.p_holm is not None and self.p_holm < ALPHA

    def interval(self) -> str:
        return "" if self.low is None else f"95% CI {self.low:+.3f} to {self.high:+.3f}"


def paired(a: dict[int, float], b: dict[int, float], bounds: tuple[float, float] = (-1.0, 1.0)) -> Paired | None:
    """Paired t over the seeds both have (None with fewer than 2): a[s] - b[s]."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = [a[s] - b[s] for s in seeds]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    if sd == 0:  # identical differences at every seed: no spread to test against
        p = 1.0 if mean == 0 else 0.0
        return Paired(n, mean, mean, mean, p, f"paired t over {n} seeds (no spread)")
    from scipy.stats import t

    stat = mean / (sd / math.sqrt(n))
    p = float(2 * t.sf(abs(stat), n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return Paired(n, mean, low, high, p, f"paired t over {n} seeds")


def mcnemar(correct_a: list[bool], correct_b: list[bool]) -> Paired:
    """McNemar's exact test on the same test images: the ones only a got right against the ones only b
    did (binomial, p = 1/2); the difference of the two accuracies, no interval."""
    from scipy.stats import binomtest

    n = len(correct_a)
    only_a = sum(x and not y for x, y in zip(correct_a, correct_b))
    only_b = sum(y and not x for x, y in zip(correct_a, correct_b))
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return Paired(n, (only_a - only_b) / max(n, 1), None, None, p, f"McNemar over {n} test images")


def holm(tests: list[Paired]) -> list[Paired]:
    """The same comparisons with Holm-corrected p-values (step-down, family-wise error at ALPHA)."""
    order = sorted(range(len(tests)), key=lambda i: tests[i].p)
    adjusted = [0.0] * len(tests)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(tests) - rank) * tests[i].p))
        adjusted[i] = running
    return [Paired(t.n, t.diff, t.low, t.high, t.p, t.test, adj) for t, adj in zip(tests, adjusted)]


def unpack_correct(hexbits: str, n: int) -> list[bool]:
    """metrics.test.correct (hex of packed bits, one per test image) -> [True, False, ...]."""
    import numpy as np

    return np.unpackbits(np.frombuffer(bytes.fromhex(hexbits), dtype=np.uint8))[:n].astype(bool).tolist()
