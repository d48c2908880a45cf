"""Which differences between configurations are real: every pair of a report's configurations (methods
and reference baselines) compared on their shared seeds — a paired t-test over seeds, or McNemar's
test on the test images with one seed — and Holm-corrected together. Everything in a report that calls
one configuration better than another (the summary, the Pareto fronts, advantages) reads from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..results import Result, test_metrics, val_metrics
from .groups import groups
from .stats import ALPHA, Paired, Summary, holm, mcnemar, paired, summarize, unpack_correct

PROBE = "probe"  # the converged linear probe: the reference every method is compared with in the table


@dataclass
class Config:
    """One configuration (a method with its options, or a reference baseline) over its seeds."""

    label: str
    rs: list[Result]

    @property
    def kind(self) -> str:
        return self.rs[0].get("kind") or (self.rs[0].get("method_info") or {}).get("kind") or "method"

    @property
    def method(self) -> str:
        return self.rs[0]["method"]

    @cached_property
    def by_seed(self) -> dict[int, float]:
        return {r["seed"]: test_metrics(r)["accuracy"] for r in self.rs}

    @cached_property
    def acc(self) -> Summary:
        return summarize(list(self.by_seed.values()))

    @cached_property
    def val(self) -> float | None:
        """Mean validation accuracy over seeds (None when validation was trained on)."""
        vals = [val_metrics(r).get("accuracy") for r in self.rs]
        return None if None in vals else sum(vals) / len(vals)

    def correct(self, seed: int) -> tuple[str, list[bool]] | None:
        """(test digest, per-image correctness) of this configuration's run of a seed, when recorded."""
        m = next((test_metrics(r) for r in self.rs if r["seed"] == seed), None)
        if not m or "correct" not in m:
            return None
        return m.get("digest", ""), unpack_correct(m["correct"], m["examples"])


def configs(results: list[Result]) -> list[Config]:
    return [Config(name, rs) for name, rs in groups(results).items()]


def compare(a: Config, b: Config) -> Paired | None:
    """a minus b on their shared seeds: paired t with two or more, McNemar with one (same test images)."""
    test = paired(a.by_seed, b.by_seed)
    if test is not None:
        return test
    shared = sorted(set(a.by_seed) & set(b.by_seed))
    if len(shared) != 1:
        return None
    ca, cb = a.correct(shared[0]), b.correct(shared[0])
    if ca is None or cb is None or ca[0] != cb[0] or len(ca[1]) != len(cb[1]):
        return None
    return mcnemar(ca[1], cb[1])


class Comparisons:
    """Every pair of configurations compared, Holm-corrected over all of them."""

    def __init__(self, results: list[Result]):
        self.configs = configs(results)
        pairs = [(a, b) for i, a in enumerate(self.configs) for b in self.configs[i + 1 :]]
        raw = {(a.label, b.label): compare(a, b) for a, b in pairs}
        tested = [k for k, v in raw.items() if v is not None]
        corrected = holm([raw[k] for k in tested])
        self.tests: dict[tuple[str, str], Paired] = dict(zip(tested, corrected))
        self.count = len(tested)

    def get(self, a: str, b: str) -> Paired | None:
        """a minus b (the pair in either order)."""
        if (a, b) in self.tests:
            return self.tests[(a, b)]
        t = self.tests.get((b, a))
        if t is None:
            return None
        flip = lambda x: None if x is None else -x  # noqa: E731
        return Paired(t.n, -t.diff, flip(t.high), flip(t.low), t.p, t.test, t.p_holm)

    def better(self, a: str, b: str) -> bool:
        """a is more accurate than b, and the difference passes the corrected test."""
        t = self.get(a, b)
        return t is not None and t.real and t.diff > 0

    @property
    def methods(self) -> list[Config]:
        return [c for c in self.configs if c.kind == "method"]

    @property
    def references(self) -> list[Config]:
        return [c for c in self.configs if c.kind == "reference"]

    def by_method(self, method: str) -> Config | None:
        return next((c for c in self.configs if c.method == method and c.kind == "reference"), None)

    def verdict(self, a: str, b: str) -> str:
        """'a vs b: +0.034 (95% CI ...) — better (paired t over 3 seeds, Holm p = 0.012)' or 'indistinguishable'."""
        t = self.get(a, b)
        if t is None:
            ca, cb = (next(c for c in self.configs if c.label == x) for x in (a, b))
            shared = set(ca.by_seed) & set(cb.by_seed)
            why = (
                "no shared seed to compare them on"
                if not shared
                else "one seed and no per-image record of the same test images: nothing to test (rerun with --seeds "
                "0,1,2)"
            )
            return f"{a} vs {b}: {ca.acc.mean - cb.acc.mean:+.3f} — {why}"
        return said(a, b, t)


def said(a: str, b: str, t: Paired) -> str:
    """One tested difference in words: 'beyond noise' only where the corrected test says so."""
    ci = f", {t.interval()}" if t.low is not None else ""
    if t.real:
        word = "higher" if t.diff > 0 else "lower"
        return f"{a} vs {b}: {t.diff:+.3f}{ci} — {word}, beyond noise ({t.test}, Holm p = {t.p_holm:.3g})"
    return f"{a} vs {b}: {t.diff:+.3f}{ci} — indistinguishable at this budget ({t.test}, Holm p = {t.p_holm:.2g})"


@dataclass(frozen=True)
class Pays:
    """Does fine-tuning pay? One method, chosen on validation, against every reference baseline."""

    method: Config
    tests: dict[str, Paired | None]  # reference label -> method minus reference, each at ALPHA, uncorrected

    @property
    def count(self) -> int:
        """How many tests the verdict needs (references without a shared seed are not tested)."""
        return sum(t is not None for t in self.tests.values())

    @property
    def short(self) -> list[str]:
        """The references the method is not shown above (none: fine-tuning pays)."""
        return [r for r, t in self.tests.items() if not (t is not None and t.p < ALPHA and t.diff > 0)]

    @property
    def above_all(self) -> bool:
        return not self.short


def pays(cmp: Comparisons) -> Pays | None:
    """The question the references exist for, asked once: is the fine-tuning method with the highest mean
    *validation* accuracy (so the test split chooses nothing) above every reference? The claim is that all
    k differences are positive, so it is an intersection-union test (Berger 1982; the co-primary endpoints
    of clinical trials): it is made only when each paired test passes at ALPHA, and its error is at most
    ALPHA without a multiplicity correction — a false "pays" needs the test against a reference the method is
    not above to pass, which happens with probability at most ALPHA. A correction (Holm, over these k or over
    every pair of the report) is for claims about each difference on its own; here it only costs power: with
    3 seeds and Holm over all n(n-1)/2 pairs no lead of 0.02 can pass. When the verdict fails, the tests that
    passed claim nothing on their own. None without methods, references or validation scores."""
    methods = [c for c in cmp.methods if c.val is not None]
    if not methods or not cmp.references:
        return None
    chosen = max(methods, key=lambda c: c.val)
    return Pays(chosen, {r.label: compare(chosen, r) for r in cmp.references})
