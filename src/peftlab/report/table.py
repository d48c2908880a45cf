"""The comparison table: one row per configuration (a method with its options) over its seeds, the
context it was measured in, and the noise verdict. Pure functions of result records."""

from __future__ import annotations

from ..results import Result, is_ok
from .document import Table
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
    "infer FLOPs (vs base)",
    "infer img/s (vs base)",
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
    if kind == "not derived":
        return "not derived"
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
    return summarize([r["metrics"]["accuracy"] for r in rs])


def _mean(rs: list[Result], get) -> float | None:
    vals = [get(r) for r in rs]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def row(name: str, rs: list[Result]) -> list[str]:
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
        *inference_cells(rs),
    ]


def human_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def inference_cells(rs: list[Result]) -> list[str]:
    """FLOPs per image and images/s of the model as deployed (merged when its method merges), each against
    the base model's, measured in the same run: '+25%' more FLOPs, '×0.80' the base's speed. '-' for
    results from before inference was measured."""
    inf = [r["inference"] for r in rs if r.get("inference")]
    if not inf:
        return ["-", "-"]
    flops, base_flops = inf[0]["flops_per_image"], inf[0]["base"]["flops_per_image"]
    extra = flops / base_flops - 1 if base_flops else 0.0
    speed = sum(i["img_s"] for i in inf) / len(inf)
    ratio = sum(i["img_s"] / i["base"]["img_s"] for i in inf) / len(inf)
    merged = ", merged" if inf[0]["deployed"] == "merged" else ""
    return [
        f"{human_count(flops)} ({'= base' if abs(extra) < 5e-4 else f'{100 * extra:+.1f}%'}{merged})",
        f"{speed:.0f} (×{ratio:.2f})",
    ]


def table_rows(results: list[Result]) -> list[list[str]]:
    return [row(name, rs) for name, rs in groups(results).items()]


def format_text(results: list[Result]) -> str:
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    line = lambda cells: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
        for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]])


def format_markdown(results: list[Result]) -> str:
    rows = table_rows(results)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def noise_lines(results: list[Result]) -> list[str]:
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


def context_lines(results: list[Result]) -> list[str]:
    """What the table was measured on: model, data, chance level, coverage, device, failures."""
    if not results:
        return []
    ok = [r for r in results if is_ok(r)]
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
        if not is_ok(x)
    ]
    return lines


def summary_markdown(results: list[Result]) -> str:
    ctx = "\n".join(f"- {line}" for line in context_lines(results) + noise_lines(results))
    return f"# peftlab comparison\n\n{ctx}\n\n{format_markdown(results)}\n"


# ------------------------------------------------------------------------- the full report


def class_mean(runs: list[Result], c: str) -> float | None:
    """Mean accuracy on class c over the runs whose eval split has it; None when none has."""
    vals = [v for r in runs if (v := r["metrics"]["per_class_accuracy"].get(c)) is not None]
    return sum(vals) / len(vals) if vals else None


def per_class_table(results: list[Result]):
    """Per-class accuracy (mean over seeds): one row per class, one column per configuration; the best
    configuration of each class in bold."""
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
