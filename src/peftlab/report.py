"""Reports are pure functions of result dicts (as written to result.json); write_report is the one
function that touches files: report.md (+ its plots folder) and a self-contained report.html."""

from __future__ import annotations

import errno
from pathlib import Path

from .results import write_bytes_atomic
from .stats import Summary, summarize

COLUMNS = [
    "method",
    "seeds",
    "trainable",
    "theory (match)",
    "% trainable",
    "accuracy (baseline → final)",
    "95% CI",
    "top-5",
    "macro-F1",
    "train s",
    "img/s",
    "peak mem",
    "adapter",
]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def theory_cell(p: dict) -> str:
    """The derived trainable count and '✓' when measured counts equal the derived ones, 'MISMATCH' when
    not; 'structural' marks counts derived from module shapes rather than from the architecture's formulas."""
    kind = p.get("kind", "theory")
    match = p.get(f"{kind}_match")
    if match is None:
        return "-"
    derived = p.get(f"{kind}_trainable")
    return (
        (f"{derived:,} " if derived is not None else "")
        + ("✓" if match else "MISMATCH")
        + (" (structural)" if kind == "structural" else "")
    )


def label(r: dict) -> str:
    """What a row compares: the method, with the options a sweep varied (e.g. 'lora r=4 lr=0.001')."""
    return r.get("label") or r["method"]


def ordered(results: list[dict]) -> list[dict]:
    """Registry order of methods (head, last, lora, full, ...), then label and seed: the same order
    whether the results come from a run or from the files on disk."""
    from .methods import REGISTRY

    order = {name: i for i, name in enumerate(REGISTRY)}
    return sorted(results, key=lambda r: (order.get(r["method"], len(order)), label(r), r.get("seed", 0)))


def groups(results: list[dict]) -> dict[str, list[dict]]:
    """Successful results grouped by label (one group = one method configuration over its seeds)."""
    out: dict[str, list[dict]] = {}
    for r in ordered(results):
        if r.get("status", "ok") == "ok":
            out.setdefault(label(r), []).append(r)
    return out


def accuracy_summary(rs: list[dict]) -> Summary:
    return summarize([r["metrics"]["accuracy"] for r in rs])


def _mean(rs: list[dict], get) -> float | None:
    vals = [get(r) for r in rs]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def row(name: str, rs: list[dict]) -> list[str]:
    r0, acc = rs[0], accuracy_summary(rs)
    p = r0["params"]
    base = summarize([r["metrics"]["baseline_accuracy"] for r in rs]).mean
    final = f"{acc.mean:.3f}" + (f" ± {acc.std:.3f}" if acc.n > 1 else "")
    return [
        name,
        str(acc.n),
        f"{p['trainable']:,}",
        theory_cell(p),
        f"{p['trainable_pct']:.2f}%",
        f"{base:.3f} → {final}",
        f"{acc.low:.3f}–{acc.high:.3f}" if acc.n > 1 else "-",
        _num(_mean(rs, lambda r: r["metrics"].get("top5_accuracy"))),
        _num(_mean(rs, lambda r: r["metrics"].get("macro_f1"))),
        _num(_mean(rs, lambda r: r["time"]["train_s"]), ".1f"),
        _num(_mean(rs, lambda r: r["throughput"]["train_img_s"]), ".0f"),
        human_bytes(max(r["memory"]["peak_bytes"] for r in rs)),
        human_bytes(r0["size"]["adapter_bytes"]),
    ]


def table_rows(results: list[dict]) -> list[list[str]]:
    return [row(name, rs) for name, rs in groups(results).items()]


def format_text(results: list[dict]) -> str:
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    line = lambda cells: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
        for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]])


def format_markdown(results: list[dict]) -> str:
    rows = table_rows(results)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def noise_lines(results: list[dict]) -> list[str]:
    """Is the best configuration's lead real? Compares 95% intervals of the mean accuracy over seeds."""
    gs = {name: accuracy_summary(rs) for name, rs in groups(results).items()}
    if len(gs) < 2:
        return []
    best = max(gs, key=lambda k: gs[k].mean)
    if any(s.n < 2 for s in gs.values()):
        return [
            f"best: {best} ({gs[best].mean:.3f}); one seed per method gives no noise estimate — "
            "rerun with --seeds 0,1,2 to tell real differences from noise"
        ]
    out = [f"best: {best} ({gs[best].mean:.3f} ± {gs[best].std:.3f} over {gs[best].n} seeds)"]
    for name, s in sorted(gs.items(), key=lambda kv: -kv[1].mean):
        if name == best:
            continue
        gap = gs[best].mean - s.mean
        verdict = (
            "within noise (95% intervals overlap)"
            if s.overlaps(gs[best])
            else "a real difference (95% intervals do not overlap)"
        )
        out.append(f"{best} vs {name}: {gap:+.3f} accuracy — {verdict}")
    return out


def context_lines(results: list[dict]) -> list[str]:
    """What the table was measured on: model, data, chance level, coverage, device, failures."""
    if not results:
        return []
    ok = [r for r in results if r.get("status", "ok") == "ok"]
    lines = []
    if ok:
        r = ok[0]
        d, m = r["data"], r["metrics"]
        seeds = sorted({x["seed"] for x in ok})
        lines += [
            f"model: {r['model']} · dataset: {r['dataset']} ({len(d['label_names'])} classes) · "
            f"seeds {', '.join(map(str, seeds))}",
            f"train: {d['train_examples']:,} images · eval: {d['eval_examples']:,} images of split "
            f"'{d['eval_split']}' · chance accuracy {m['chance_accuracy']:.3f} · {r['train']['epochs']} epochs",
            f"device: {r['env']['device']} ({r['env']['device_name']}) · peak memory: {r['memory']['kind']}",
        ]
        lines += [f"note: {n}" for n in dict.fromkeys(n for x in ok for n in x["data"].get("notes", []))]
    lines += [
        f"{label(x)} seed {x.get('seed')}: {x['status']} — {x.get('error', '')}"
        for x in ordered(results)
        if x.get("status", "ok") != "ok"
    ]
    return lines


def summary_markdown(results: list[dict]) -> str:
    ctx = "\n".join(f"- {line}" for line in context_lines(results) + noise_lines(results))
    return f"# peftlab comparison\n\n{ctx}\n\n{format_markdown(results)}\n"


# ------------------------------------------------------------------------- the full report
REPORT_PLOTS = "report-plots"  # report.md's PNG files, beside it; report.html carries its own copies


def class_mean(runs: list[dict], c: str) -> float | None:
    """Mean accuracy on class c over the runs whose eval split has it; None when none has."""
    vals = [v for r in runs if (v := r["metrics"]["per_class_accuracy"].get(c)) is not None]
    return sum(vals) / len(vals) if vals else None


def per_class_table(results: list[dict]):
    """Per-class accuracy (mean over seeds): one row per class, one column per configuration; the best
    configuration of each class in bold."""
    from .document import Table

    gs = groups(results)
    if not gs or not all(r["metrics"].get("per_class_accuracy") for rs in gs.values() for r in rs):
        return None
    r0 = next(iter(gs.values()))[0]
    names = r0["data"]["label_names"]
    counts = (r0.get("coverage") or {}).get("eval", {}).get("per_class", {})
    rows = []
    for c in names:
        # mean over the seeds whose eval sample has this class (None: no eval image of it, no accuracy)
        accs = {g: class_mean(rs, c) for g, rs in gs.items()}
        known = [a for a in accs.values() if a is not None]
        top = max(known) if known else None
        rows.append(
            [c, str(counts.get(c, 0))]
            + [
                "-" if a is None else f"**{a:.3f}**" if a == top and len(known) > 1 else f"{a:.3f}"
                for a in accs.values()
            ]
        )
    return Table(["class", "eval images"] + list(gs), rows, left=1)


def report_blocks(results: list[dict], figures: list) -> list:
    """The report's content: context, comparison table, plots, per-class accuracy, findings."""
    from .document import Bullets, Heading, Para, Table
    from .findings import findings

    ok = [r for r in results if r.get("status", "ok") == "ok"]
    title = f"peftlab report: {ok[0]['model']} on {ok[0]['dataset']}" if ok else "peftlab report"
    blocks = [Heading(title, 1), Bullets(context_lines(results)), Heading("Comparison", 2)]
    if ok:
        blocks += [
            Table(COLUMNS, table_rows(results)),
            Para(
                "Accuracy is the mean over seeds ± standard deviation; 95% CI is the interval of that mean. "
                "Time, img/s: mean per run; peak memory: largest over seeds; adapter: the saved trained part."
            ),
        ]
    else:
        blocks.append(Para("No run succeeded."))
    if figures:
        blocks += [Heading("Plots", 2)] + list(figures)
    pc = per_class_table(results)
    if pc is not None:
        blocks += [
            Heading("Per-class accuracy", 2),
            Para("Accuracy on each class's eval images, mean over seeds; bold: the best configuration."),
            pc,
        ]
    return blocks + findings(results)


def build_report(results: list[dict]) -> tuple[str, str, dict[str, bytes]]:
    """(report.md text, report.html text, {plot file name: PNG bytes}): the same results give the
    same bytes."""
    from .document import to_html, to_markdown
    from .plots import figures

    figs = figures(results)
    blocks = report_blocks(results, figs)
    title = blocks[0].text
    return to_markdown(blocks, REPORT_PLOTS), to_html(blocks, title), {f"{f.name}.png": f.png for f in figs}


def write_report(out: str | Path, results: list[dict]) -> list[Path]:
    """Write report.md, its plots (report-plots/*.png) and report.html into out; return their paths."""
    from .errors import UserError

    out = Path(out)
    md, page, pngs = build_report(results)
    plots = out / REPORT_PLOTS
    written = []
    try:
        plots.mkdir(parents=True, exist_ok=True)
        for old in plots.glob("*.png"):
            if old.name not in pngs:
                old.unlink()  # a plot the results no longer have
        for name, data in pngs.items():
            write_bytes_atomic(plots / name, data)
            written.append(plots / name)
        for name, text in (("report.md", md), ("report.html", page)):
            write_bytes_atomic(out / name, text.encode())
            written.append(out / name)
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(f"cannot write the report into {out}: {why}") from e
    return written
