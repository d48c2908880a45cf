"""The Findings' comparisons: accuracy, efficiency, reliability, advantages and disadvantages. Every word
that ranks two configurations rests on a test: accuracy on the paired tests of report.compare (Holm-
corrected); deterministic costs (parameter counts, adapter size, memory attributed to the method) as
they are; training time only where it differs more than this kind of machine's drift (2x) or a paired
test over 3+ seeds says so; spreads over seeds not at all below MIN_SPREAD_SEEDS seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..results import Result, test_metrics
from .compare import Comparisons, Config
from .groups import class_mean, human_bytes
from .stats import paired

TIME_RATIO = 2.0  # speeds on shared machines drift by +-25% within minutes: below 2x, times are not ranked
MIN_SPREAD_SEEDS = 10  # fewer seeds than this: spreads are shown, never ranked
ATTRIBUTED = "attributed"  # memory kinds starting with this do not depend on what ran before in the process


@dataclass(frozen=True)
class G:
    """One configuration reduced to what the comparisons use."""

    c: Config
    trainable: int
    train_s: float
    peak: int
    memory_kind: str
    adapter: int

    @property
    def label(self) -> str:
        return self.c.label


def _mean(rs: list[Result], get) -> float:
    return sum(get(r) for r in rs) / len(rs)


def reduce(c: Config) -> G:
    rs = c.rs
    return G(
        c,
        rs[0]["params"]["trainable"],
        _mean(rs, lambda r: r["time"]["train_s"]),
        max(r["memory"]["peak_bytes"] for r in rs),
        rs[0]["memory"].get("kind", ""),
        rs[0]["size"]["adapter_bytes"],
    )


def names(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def acc_text(c: Config) -> str:
    return f"{c.acc.mean:.3f}" + (f" ± {c.acc.std:.3f}" if c.acc.n > 1 else "")


DRIFT = 1.25  # a machine's speed drifts about this much: a smaller ratio of times is never a difference


def faster(a: G, b: G) -> bool:
    """a trains faster than b beyond noise: by TIME_RATIO or more, or by more than the drift with a paired
    t-test on log times over 3+ shared seeds saying so."""
    if b.train_s >= TIME_RATIO * a.train_s:
        return True
    if b.train_s < DRIFT * a.train_s:
        return False
    ta = {r["seed"]: math.log(max(r["time"]["train_s"], 1e-9)) for r in a.c.rs}
    tb = {r["seed"]: math.log(max(r["time"]["train_s"], 1e-9)) for r in b.c.rs}
    t = paired(tb, ta, bounds=(-math.inf, math.inf)) if len(set(ta) & set(tb)) >= 3 else None
    return t is not None and t.p < 0.05 / 2 and t.diff > 0  # one comparison's worth of Bonferroni: conservative


def memory_comparable(gs: list[G]) -> bool:
    return all(g.memory_kind.startswith(ATTRIBUTED) or g.memory_kind == "cuda_max_allocated" for g in gs)


def front(gs: list[G], cmp: Comparisons, cost) -> list[G]:
    """Configurations no other one dominates: none is both at most as costly and more accurate beyond noise."""
    keep = [g for g in gs if not any(o is not g and cost(o) <= cost(g) and cmp.better(o.label, g.label) for o in gs)]
    return sorted(keep, key=lambda g: (cost(g), -g.c.acc.mean))


def accuracy(cmp: Comparisons, gs: list[G]) -> list[str]:
    best = max(gs, key=lambda g: g.c.acc.mean)
    out = [f"Highest mean test accuracy: **{best.label}** ({acc_text(best.c)})."]
    others = [g for g in gs if g is not best]
    if others:
        same = [g.label for g in others if not cmp.better(best.label, g.label)]
        worse = [g.label for g in others if cmp.better(best.label, g.label)]
        if same:
            out.append(
                f"**Indistinguishable from it at this budget**: {names(same)} — the paired tests do not tell "
                "them apart (Holm-corrected); more seeds or data would."
            )
        if worse:
            out.append(f"Below it beyond noise: {names(worse)}.")
        out += [cmp.verdict(best.label, g.label) for g in sorted(others, key=lambda g: -g.c.acc.mean)]
    pcs = test_metrics(best.c.rs[0]).get("per_class_accuracy") or {}
    means = {c: m for c in pcs if (m := class_mean(best.c.rs, c)) is not None}  # None: no test image of c
    if means:
        lo, hi = min(means, key=means.get), max(means, key=means.get)
        out.append(
            f"Per class, {best.label} scores lowest on {lo} ({means[lo]:.3f}) and highest on {hi} ({means[hi]:.3f})."
        )
    return out


def efficiency(cmp: Comparisons, gs: list[G]) -> list[str]:
    out = []
    params = sorted(gs, key=lambda g: g.trainable)
    out.append("Trainable parameters (exact): " + ", ".join(f"{g.label} {g.trainable:,}" for g in params) + ".")
    quick = [g for g in gs if all(g is o or faster(g, o) for o in gs)]
    times = ", ".join(f"{g.label} {g.train_s:.1f} s" for g in sorted(gs, key=lambda g: g.train_s))
    out.append(
        f"Training time: {times}"
        + (
            f"; fastest beyond noise: {quick[0].label}."
            if quick
            else f"; none is faster than all the others by {TIME_RATIO:g}x or by a paired test over 3+ seeds, "
            "so they are not ranked (a machine's speed drifts by about 25% minute to minute)."
        )
    )
    if memory_comparable(gs):
        mem = sorted(gs, key=lambda g: g.peak)
        out.append(
            "Peak memory attributable to each (parameters, gradients, optimizer state, activations of one "
            "training step; independent of run order): "
            + ", ".join(f"{g.label} {human_bytes(g.peak)}" for g in mem)
            + "."
        )
    else:
        out.append(
            "Peak memory is the process's peak resident memory, which depends on what ran before in the "
            "process: it is not compared."
        )
    out.append(
        "Saved size: "
        + ", ".join(f"{g.label} {human_bytes(g.adapter)}" for g in sorted(gs, key=lambda g: g.adapter))
        + "."
    )
    for what, cost in (("trainable parameters", lambda g: g.trainable), ("training time", lambda g: g.train_s)):
        f = front([g for g in gs if g.c.method != "majority"], cmp, cost)
        out.append(
            f"Pareto front of test accuracy vs {what} (no other configuration is both at most as costly and "
            f"more accurate beyond noise): {names([g.label for g in f])}."
        )
    return out


def reliability(gs: list[G]) -> list[str]:
    fewest = min(g.c.acc.n for g in gs)
    if fewest < 2:
        return [
            "One seed per configuration: no estimate of how much accuracy varies between seeds; rerun with "
            "--seeds 0,1,2 to measure it."
        ]
    spread = ", ".join(f"{g.label} {g.c.acc.std:.3f}" for g in gs)
    out = [f"Standard deviation of test accuracy over seeds: {spread}."]
    if fewest < MIN_SPREAD_SEEDS:
        out.append(
            f"With {fewest} seeds a standard deviation is itself uncertain by roughly "
            f"±{100 / math.sqrt(2 * (fewest - 1)):.0f}%: spreads are not ranked below {MIN_SPREAD_SEEDS} seeds."
        )
    return out


def pros_cons(cmp: Comparisons, gs: list[G]) -> list[str]:
    if len(gs) < 2:
        return []
    best = max(gs, key=lambda g: g.c.acc.mean)
    fronts = {
        what: {g.label for g in front([g for g in gs if g.c.method != "majority"], cmp, cost)}
        for what, cost in (("parameters", lambda g: g.trainable), ("time", lambda g: g.train_s))
    }
    exact = [
        ("trainable parameters", lambda g: g.trainable, "fewest", "most"),
        ("saved size", lambda g: g.adapter, "smallest", "largest"),
    ]
    if memory_comparable(gs):
        exact.append(("memory", lambda g: g.peak, "lowest", "highest"))
    out = []
    for g in gs:
        pro, con = [], []
        beaten = [o.label for o in gs if cmp.better(g.label, o.label)]
        beats_me = [o.label for o in gs if cmp.better(o.label, g.label)]
        if g is best:
            pro.append("highest mean accuracy" + ("" if beaten else " (not beyond noise of any other)"))
        if beaten:
            pro.append(f"more accurate than {names(beaten)} beyond noise")
        if beats_me:
            con.append(f"less accurate than {names(beats_me)} beyond noise")
        pro += [f"on the accuracy/{what} Pareto front" for what, f in fronts.items() if g.label in f]
        for what, key, low, high in exact:
            vals = [key(o) for o in gs]
            if max(vals) == min(vals):
                continue
            if key(g) == min(vals):
                pro.append(f"{low} {what}")
            elif key(g) == max(vals):
                con.append(f"{high} {what}")
        if all(g is o or faster(g, o) for o in gs):
            pro.append("fastest training, beyond noise")
        if all(g is o or faster(o, g) for o in gs):
            con.append("slowest training, beyond noise")
        parts = ([f"advantages: {', '.join(pro)}"] if pro else []) + (
            [f"disadvantages: {', '.join(con)}"] if con else []
        )
        out.append(f"**{g.label}** — " + ("; ".join(parts) or "no difference beyond noise on any measure") + ".")
    return out
