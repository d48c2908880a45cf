"""Accuracy against training-set size (--train-sizes): per size, every configuration's test accuracy over
seeds, which are indistinguishable from the best (each configuration's paired test against the most
accurate one at that size, Holm-corrected over those tests: the family the question asks about, not every
pair), the table, and the plot where the lines cross."""

from __future__ import annotations

from ..results import Result
from .compare import Comparisons, compare, pays
from .document import Figure, Table
from .groups import at_size, sizes
from .plots import _chance, _new, _png, colours
from .stats import ALPHA, Paired, Summary, holm


def size_name(k: int | None) -> str:
    return "all" if k is None else f"{k}/class"


def per_class_images(rs: list[Result]) -> float:
    """Training images per class of these runs (mean over seeds): k under --train-sizes, else the sample's."""
    return sum(r["data"]["train_examples"] / len(r["data"]["label_names"]) for r in rs) / len(rs)


def by_size(results: list[Result]) -> list[tuple[int | None, Comparisons]]:
    """[(size, its comparisons)] smallest first; empty with fewer than two sizes."""
    ks = sizes(results)
    return [(k, Comparisons(at_size(results, k))) for k in ks] if len(ks) > 1 else []


def against_best(cmp: Comparisons, skip: tuple[str, ...] = ()) -> tuple[object, dict[str, Paired | None]]:
    """The most accurate configuration at one size (leaving out skip) and, for every other one, its paired
    test against it (best minus it), Holm-corrected over these tests; None where no test applies."""
    configs = [c for c in cmp.configs if c.label not in skip]
    best = max(configs, key=lambda c: c.acc.mean)
    others = [c for c in configs if c is not best]
    raw = {c.label: compare(best, c) for c in others}
    tested = [k for k, v in raw.items() if v is not None]
    return best, {k: None for k in raw} | dict(zip(tested, holm([raw[k] for k in tested])))


def _below(t: Paired | None) -> bool:
    return t is not None and t.real and t.diff > 0


def data_size_table(results: list[Result]) -> Table | None:
    """Rows: configurations; columns: training sizes; cells: mean test accuracy [95% interval] over seeds."""
    per = by_size(results)
    if not per:
        return None
    labels = list(dict.fromkeys(c.label for _, cmp in per for c in cmp.configs))
    header = ["configuration"]
    for k, cmp in per:
        n = per_class_images([r for c in cmp.configs for r in c.rs])
        header.append(f"{size_name(k)} ({n:,.0f} per class)" if k is None else size_name(k))
    tested = [against_best(cmp) for _, cmp in per]  # once per size
    rows = []
    for label in labels:
        cells = [label]
        for (_, cmp), (best, tests) in zip(per, tested):
            c = next((c for c in cmp.configs if c.label == label), None)
            if c is None:
                cells.append("-")
                continue
            text = f"{c.acc.mean:.3f}" + (f" [{c.acc.low:.3f}, {c.acc.high:.3f}]" if c.acc.n > 1 else "")
            tied = c is best or not _below(tests.get(c.label))
            cells.append(f"**{text}**" if tied else text)
        rows.append(cells)
    return Table(header, rows)


def data_size_lines(results: list[Result]) -> list[str]:
    """Per size: the most accurate configuration, those indistinguishable from it, and what is below it
    beyond noise; then where the most accurate configuration changes with the data."""
    per = by_size(results)
    lines, bests = [], []
    for k, cmp in per:
        configs = [c for c in cmp.configs if c.label != "majority class (chance)"]
        if not configs:
            continue
        best, tests = against_best(cmp, skip=("majority class (chance)",))
        bests.append((k, best, tests))
        tied = [c for c in configs if c is not best and not _below(tests[c.label])]
        below = [c for c in configs if c is not best and _below(tests[c.label])]
        seeds = best.acc.n
        line = f"{size_name(k)}: most accurate {best.label} ({best.acc.mean:.3f} over {seeds} seed(s))"
        if tied:
            line += "; indistinguishable from it at this budget: " + ", ".join(
                f"{c.label} ({c.acc.mean - best.acc.mean:+.3f})" for c in tied
            )
        if below:
            line += "; below it beyond noise: " + ", ".join(c.label for c in below)
        lines.append(line + "." + paying(cmp))
    if not lines:
        return []
    intro = (
        "Test accuracy at each training size (images per class; the validation and test images are the same at "
        "every size, the training samples nested); at each size every configuration is tested against the most "
        "accurate one (paired tests over seeds, Holm-corrected over that size's tests):"
    )
    leaders = [b.label for _, b, _ in bests]
    if len(set(leaders)) > 1:
        changes = []
        for (k0, b0, _), (k1, b1, tests1) in zip(bests, bests[1:]):
            if b1.label != b0.label:
                if _below(tests1.get(b0.label)):
                    how = "beyond noise"
                else:
                    how = "though not beyond noise"
                changes.append(f"{b1.label} overtakes {b0.label} between {size_name(k0)} and {size_name(k1)} ({how})")
        tail = "The most accurate configuration changes with the data: " + "; ".join(changes) + "."
    else:
        tail = f"{leaders[0]} is the most accurate at every size (above: which others are indistinguishable from it)."
    return [intro] + lines + [tail]


def paying(cmp: Comparisons) -> str:
    """' Fine-tuning pays: ...' — the method chosen on validation against every reference (compare.pays)."""
    p = pays(cmp)
    if p is None:
        return ""
    short = p.short
    if not short:
        return (
            f" Fine-tuning pays: {p.method.label} (chosen on validation) is above every reference (each p < {ALPHA})."
        )
    return (
        f" Fine-tuning is not shown to pay: {p.method.label} (chosen on validation) is not above {', '.join(short)} "
        f"at p < {ALPHA}."
    )


def data_size_figure(results: list[Result]) -> Figure | None:
    """Test accuracy (mean over seeds, 95% interval) against training images per class, log x, one line per
    configuration; the majority class drawn as the chance line."""
    per = by_size(results)
    if not per:
        return None
    lines: dict[str, list[tuple[float, Summary]]] = {}
    chance = None
    for _, cmp in per:
        for c in cmp.configs:
            if c.label == "majority class (chance)":
                chance = c.acc.mean if chance is None else chance
                continue
            lines.setdefault(c.label, []).append((per_class_images(c.rs), c.acc))
    colour = colours(list(lines))
    fig, ax = _new(6.4, 4.4)
    for i, (label, pts) in enumerate(lines.items()):
        dodge = 1.04 ** (i - (len(lines) - 1) / 2)  # side by side in log x, so the intervals stay readable
        xs, accs = [x * dodge for x, _ in pts], [a for _, a in pts]
        reference = any(c.kind == "reference" for _, cmp in per for c in cmp.configs if c.label == label)
        ax.errorbar(
            xs,
            [a.mean for a in accs],
            yerr=[[a.mean - a.low for a in accs], [a.high - a.mean for a in accs]],
            color=colour[label],
            linestyle=":" if reference else "-",
            marker="s" if reference else "o",
            markersize=5,
            capsize=3,
            label=label,
        )
    _chance(ax, chance)
    ax.set_xscale("log")
    ticks = sorted({round(x) for pts in lines.values() for x, _ in pts})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("test accuracy")
    title = "Accuracy against training-set size"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    seeds = max(c.acc.n for _, cmp in per for c in cmp.configs)
    return Figure(
        "accuracy-vs-data",
        title,
        _png(fig),
        f"Test accuracy against training images per class (log scale), mean over {seeds} seed(s) with its 95% "
        "interval; solid: fine-tuning methods, dotted: reference baselines; dashed grey: the majority class. "
        "Where the lines cross, the better choice changes with the amount of data; the table 'Accuracy against "
        "training-set size' says which differences pass the paired test.",
    )
