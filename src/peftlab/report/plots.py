"""The report's plots: pure functions of result dicts -> PNG bytes (matplotlib, no pyplot, no display).

Each configuration (a report.groups entry: one method configuration over its seeds) keeps one colour
in every plot. Accuracy points are means over seeds with ± one standard deviation as error bars.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from ..results import Result, test_metrics, val_metrics
from .compare import Comparisons
from .document import Figure
from .groups import accuracy_summary, groups
from .stats import Summary

DPI = 120  # 672 x 480 px at the default size: sharp at half a page's width
CHANCE_STYLE = {"color": "#8c959f", "linestyle": "--", "linewidth": 1}


@dataclass(frozen=True)
class Point:
    label: str
    acc: Summary
    trainable: int
    train_s: float
    peak_bytes: int
    infer_flops: float | None = None  # FLOPs per image of the model as deployed (None: not measured)


def points(results: list[Result]) -> list[Point]:
    return [
        Point(
            name,
            accuracy_summary(rs),
            rs[0]["params"]["trainable"],
            sum(r["time"]["train_s"] for r in rs) / len(rs),
            max(r["memory"]["peak_bytes"] for r in rs),
            (rs[0].get("inference") or {}).get("flops_per_image"),
        )
        for name, rs in groups(results).items()
    ]


def colours(labels: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(labels)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # no version stamp: same bytes
    return buf.getvalue()


def _new(width: float = 5.6, height: float = 4.0, layout: str | None = None):
    """A figure with one axes; fixed margins unless a layout engine is asked for (that costs a draw)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), layout=layout)
    if layout is None:
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    return fig, fig.subplots()


def _chance(ax, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, **CHANCE_STYLE, label=f"chance {chance:.3f}")


def accuracy_vs(pts: list[Point], x: str, chance: float | None, colour: dict, title: str, cmp: Comparisons) -> bytes:
    """Mean accuracy (± std over seeds) against a cost: 'trainable', 'train_s' or 'peak_bytes'.
    The Pareto front (no configuration both at most as costly and more accurate beyond noise, by the paired
    tests of cmp) is joined by a line."""
    xlabel = {
        "trainable": "trainable parameters (log scale)",
        "train_s": "training time (s)",
        "peak_bytes": "peak memory (MB)",
        "infer_flops": "inference MFLOPs per image (as deployed)",
    }[x]
    scale = 1e6 if x in ("peak_bytes", "infer_flops") else 1
    pts = [p for p in pts if getattr(p, x) is not None]  # the references have no inference cost
    xs = [getattr(p, x) / scale for p in pts]
    ys = [p.acc.mean for p in pts]
    fig, ax = _new()
    dominated = {
        i
        for i, p in enumerate(pts)
        for j, o in enumerate(pts)
        if j != i and xs[j] <= xs[i] and cmp.better(o.label, p.label)
    }
    front = sorted(
        (i for i in range(len(pts)) if i not in dominated and pts[i].label != "majority class (chance)"),
        key=lambda i: (xs[i], -ys[i]),
    )
    if len(front) > 1:
        ax.plot(
            [xs[i] for i in front], [ys[i] for i in front], color="#d0d7de", linewidth=3, zorder=1, label="Pareto front"
        )
    for i, p in enumerate(pts):
        on = i in front
        ax.errorbar(
            xs[i],
            ys[i],
            yerr=p.acc.std if p.acc.n > 1 else None,
            fmt="o",
            color=colour[p.label],
            markersize=9 if on else 7,
            markeredgecolor="black" if on else colour[p.label],
            markeredgewidth=1.5 if on else 0.5,
            capsize=3,
            zorder=3,
        )
    log = x == "trainable" or (min(xs) > 0 and max(xs) / min(xs) > 50)
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.15 if log else 0.12)
    _chance(ax, chance)
    _labels(ax, xs, ys, [p.label for p in pts], log)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _labels(ax, xs: list[float], ys: list[float], labels: list[str], log: bool) -> None:
    """Name each point beside it, moving a name up or down until it overlaps no name placed before
    (positions in axes fractions; a character is taken as 1.3 % of the width, a line as 4.5 % of the height)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fx = (lambda v: math.log10(v / x0) / math.log10(x1 / x0)) if log else (lambda v: (v - x0) / (x1 - x0))
    placed: list[tuple[float, float, float, float]] = []
    for i in sorted(range(len(xs)), key=lambda i: (-ys[i], xs[i])):
        px, py, w = fx(xs[i]) + 0.02, (ys[i] - y0) / (y1 - y0), 0.013 * len(labels[i])
        for dy in (0.01, -0.055, 0.065, -0.11, 0.12, -0.165, 0.175):
            box = (px, py + dy, px + w, py + dy + 0.045)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(
            labels[i],
            (xs[i], ys[i]),
            xytext=(box[0], box[1]),
            textcoords="axes fraction",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "#8c959f", "lw": 0.5} if abs(dy) > 0.05 else None,
        )


def _curve(r: Result) -> list[float]:
    """Validation accuracy per epoch, epoch 0 before training (older results: their one 'eval' split)."""
    start = val_metrics(r).get("start_accuracy", r["metrics"].get("baseline_accuracy"))
    after = [e.get("val_accuracy", e.get("eval_accuracy")) for e in r.get("history", [])]
    return [v for v in [start, *after] if v is not None]


def learning_curves(results: list[Result], chance: float | None, colour: dict, title: str) -> bytes | None:
    """Validation accuracy per epoch (epoch 0: before training), mean over seeds; shaded: min to max.
    Beyond 6 configurations the legend moves out of the axes, to their right. None without validation."""
    gs = {name: rs for name, rs in groups(results).items() if all(len(_curve(r)) > 1 for r in rs)}
    if not gs:
        return None
    many = len(gs) > 6
    fig, ax = _new(7.4 if many else 5.6)
    if many:
        fig.subplots_adjust(left=0.09, right=0.75)
    for name, rs in gs.items():
        curves = [_curve(r) for r in rs]
        n = min(len(c) for c in curves)
        epochs = list(range(n))
        mean = [sum(c[e] for c in curves) / len(curves) for e in epochs]
        ax.plot(epochs, mean, marker="o", markersize=4, color=colour[name], label=name)
        if len(curves) > 1:
            ax.fill_between(
                epochs,
                [min(c[e] for c in curves) for e in epochs],
                [max(c[e] for c in curves) for e in epochs],
                color=colour[name],
                alpha=0.15,
            )
    _chance(ax, chance)
    ax.set_xlabel("epoch (0 = before fine-tuning)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(
            fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, ncol=2 if len(gs) > 16 else 1
        )
    else:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def confusion_matrix(matrix: list[list[int]], names: list[str], title: str) -> bytes:
    """Counts, rows true class, columns predicted; colour is the row's share (recall on the diagonal)."""
    k = len(names)
    side = max(4.0, min(9.0, 1.6 + 0.5 * k))
    fig, ax = _new(side + 1.0, side, layout="constrained")  # class names of any length
    shares = [[v / max(1, sum(row)) for v in row] for row in matrix]
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(matrix[i][j]),
                    ha="center",
                    va="center",
                    fontsize=8 if k <= 12 else 6,
                    color="white" if shares[i][j] > 0.6 else "black",
                )
    # past 30 classes, name every n-th class only (the per-class table names them all): 200 rotated
    # labels under a constrained layout cost seconds and cannot be read anyway
    step = 1 if k <= 30 else math.ceil(k / 25)
    ticks = list(range(0, k, step))
    shown = [names[i] for i in ticks]
    turn = max(map(len, shown)) > 3
    ax.set_xticks(ticks, shown, rotation=45 if turn else 0, ha="right" if turn else "center", fontsize=8)
    ax.set_yticks(ticks, shown, fontsize=8)
    ax.set_xlabel("predicted class" + (f" (one class in {step} named)" if step > 1 else ""))
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    return _png(fig)


def inference_axis(pts: list[Point], results: list[Result]) -> list[tuple[str, str, str, str]]:
    """The accuracy-vs-inference-cost plot, when every method's inference was measured (the references, which
    are not deployed networks, are left out of it)."""
    if sum(p.infer_flops is not None for p in pts) < 2 or any(
        not r.get("inference") for r in results if r.get("kind", "method") == "method"
    ):
        return []
    base = next(r["inference"]["base"]["flops_per_image"] for r in results if r.get("inference"))
    return [
        (
            "accuracy-vs-inference",
            "Accuracy vs inference cost",
            "infer_flops",
            "Test accuracy against the FLOPs per image of the model as it would be deployed: merged into "
            f"the base weights when the method allows it (then at the base model's {base / 1e6:.3g} MFLOPs), "
            "else with what the method adds (prompt tokens, adapter layers).",
        )
    ]


def best_label(results: list[Result]) -> str | None:
    gs = {name: accuracy_summary(rs).mean for name, rs in groups(results).items()}
    return max(gs, key=gs.get) if gs else None


def search_plot(results: list[Result], colour: dict) -> Figure | None:
    """Validation accuracy of every trial against its learning rate, one colour per configuration; the
    chosen trial outlined. None when no run searched lr."""
    searches = {}
    for name, rs in groups(results).items():
        t = rs[0].get("tuning")
        if t and "lr" in t["searched"]:
            searches[name] = t
    if not searches:
        return None
    fig, ax = _new()
    for name, t in searches.items():
        done = [x for x in t["trials"] if x["value"] is not None and x["state"] == "complete"]
        ax.scatter(
            [x["params"]["lr"] for x in done],
            [x["value"] for x in done],
            color=colour[name],
            s=28,
            label=name,
            zorder=3,
        )
        pruned = [x for x in t["trials"] if x["state"] == "pruned" and "lr" in x["params"]]
        if pruned:
            ax.scatter([x["params"]["lr"] for x in pruned], [0] * len(pruned), marker="x", color=colour[name], s=20)
        chosen = next(x for x in t["trials"] if x["number"] == t["best_trial"])
        ax.scatter(
            [chosen["params"]["lr"]],
            [chosen["value"]],
            facecolors="none",
            edgecolors="black",
            s=110,
            linewidths=1.5,
            zorder=4,
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("validation accuracy")
    title = "Search: validation accuracy against learning rate"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    budget = sorted({t["budget"] for t in searches.values()})
    return Figure(
        "search-lr",
        title,
        _png(fig),
        f"Each trial of each configuration's search ({'/'.join(map(str, budget))} trials each, on the validation "
        "split of the first seed): its learning rate and the validation accuracy of its kept checkpoint; crosses at "
        "0: pruned trials; outlined: the chosen one.",
    )


def figures(results: list[Result]) -> list[Figure]:
    """Every plot of the report, in order; none when no run succeeded."""
    pts = points(results)
    if not pts:
        return []
    gs = groups(results)
    cmp = Comparisons(results)
    r0 = next(iter(gs.values()))[0]
    chance = test_metrics(r0).get("chance_accuracy")
    colour = colours([p.label for p in pts])
    seeds = "mean ± std over seeds" if any(p.acc.n > 1 for p in pts) else "one seed each: no error bars"
    kind = r0["memory"].get("kind", "")
    mem_kind = (
        "the memory each attributes to one training step (parameters, gradients, optimizer state, activations)"
        if kind.startswith("attributed")
        else {
            "process_peak_rss": "the process's peak resident memory",
            "cuda_max_allocated": "peak GPU memory allocated",
        }.get(kind, "peak memory")
    )
    axes = [
        (
            "accuracy-vs-trainable",
            "Accuracy vs trainable parameters",
            "trainable",
            f"Test accuracy ({seeds}) against trainable parameters, log scale. Outlined points and the "
            "grey line: the Pareto front (no other configuration is both smaller and more accurate beyond noise, "
            "by the paired tests of the Findings).",
        ),
        (
            "accuracy-vs-time",
            "Accuracy vs training time",
            "train_s",
            f"Test accuracy ({seeds}) against mean training time per run.",
        ),
        (
            "accuracy-vs-memory",
            "Accuracy vs peak memory",
            "peak_bytes",
            f"Test accuracy ({seeds}) against {mem_kind} (largest over seeds).",
        ),
    ]
    axes += inference_axis(pts, results)
    # a scatter of one configuration compares nothing: the trade-off plots need two
    out = (
        [
            Figure(name, title, accuracy_vs(pts, x, chance, colour, title, cmp), caption)
            for name, title, x, caption in axes
        ]
        if len(pts) > 1
        else []
    )
    title = "Learning curves"
    curves = learning_curves(results, chance, colour, title)
    if curves is not None:
        out.append(
            Figure(
                "learning-curves",
                title,
                curves,
                "Validation accuracy after each epoch, mean over seeds (shaded: lowest to highest seed); "
                "epoch 0 is the accuracy before fine-tuning. The test split is not looked at during training.",
            )
        )
    searched = search_plot(results, colour)
    if searched is not None:
        out.append(searched)
    best = best_label(results)
    rs = [r for r in gs[best] if test_metrics(r).get("confusion")]
    if rs:
        k = len(test_metrics(rs[0])["confusion"])
        matrix = [[sum(test_metrics(r)["confusion"][i][j] for r in rs) for j in range(k)] for i in range(k)]
        over = f", summed over {len(rs)} seeds" if len(rs) > 1 else ""
        title = f"Confusion matrix of {best}"
        out.append(
            Figure(
                "confusion-best",
                title,
                confusion_matrix(
                    matrix,
                    r0["data"]["label_names"],
                    f"{best}: highest mean accuracy" + (f"\n(counts{over[1:]})" if over else ""),
                ),
                f"The configuration with the highest mean accuracy, {best}: rows are the true class, "
                f"columns the predicted one; counts of test images{over}; colour: share of the row.",
            )
        )
    return out
