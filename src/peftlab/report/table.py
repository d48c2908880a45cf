"""The comparison table: one row per configuration (a reference baseline, or a method with its options)
over its seeds, the context it was measured in, and the verdict on the best one's lead (paired tests,
report.compare). Pure functions of result records."""

from __future__ import annotations

from ..results import Result, Status, is_ok, test_metrics, val_metrics
from .compare import PROBE, Comparisons, pays
from .datasize import data_size_lines
from .document import Table
from .groups import accuracy_summary, class_mean, groups, human_bytes, label, largest, ordered, sizes
from .stats import ALPHA, Paired, holm, paired

COLUMNS = [
    "method",
    "seeds",
    "trainable",
    "theory (match)",
    "% trainable",
    "val acc",
    "test acc",
    "95% CI",
    "vs linear probe",
    "top-5",
    "macro-F1",
    "train s",
    "img/s",
    "peak mem",
    "adapter",
    "infer FLOPs (vs base)",
    "infer img/s (vs base)",
]


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


def _mean(rs: list[Result], get) -> float | None:
    vals = [get(r) for r in rs]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def vs_probe_cell(name: str, cmp: Comparisons) -> str:
    """The test accuracy minus the linear probe's, paired over seeds, with its 95% interval; '*' when the
    difference is real (paired test, Holm-corrected over the report)."""
    probe = cmp.by_method(PROBE)
    if probe is None or probe.label == name:
        return "-"
    t = cmp.get(name, probe.label)
    if t is None:
        return "-"
    ci = f" [{t.low:+.3f}, {t.high:+.3f}]" if t.low is not None else ""
    return f"{t.diff:+.3f}{ci}" + (" *" if t.real else "")


def row(name: str, rs: list[Result], cmp: Comparisons) -> list[str]:
    r0, acc = rs[0], accuracy_summary(rs)
    p = r0["params"]
    final = f"{acc.mean:.3f}" + (f" ± {acc.std:.3f}" if acc.n > 1 else "")
    return [
        name,
        str(acc.n),
        f"{p['trainable']:,}",
        theory_cell(p),
        f"{p['trainable_pct']:.2f}%",
        _num(_mean(rs, lambda r: val_metrics(r).get("accuracy"))),
        final,
        f"{acc.low:.3f}–{acc.high:.3f}" if acc.n > 1 else "-",
        vs_probe_cell(name, cmp),
        _num(_mean(rs, lambda r: test_metrics(r).get("top5_accuracy"))),
        _num(_mean(rs, lambda r: test_metrics(r).get("macro_f1"))),
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


def table_rows(results: list[Result], cmp: Comparisons | None = None) -> list[list[str]]:
    """A row per configuration that ran, in registry order; one that could not apply to the model says so in
    its row ('unsupported: why')."""
    cmp = cmp or Comparisons(results)
    ran = groups(results)
    refused = unsupported(results)
    names = list(dict.fromkeys(label(r) for r in ordered(results) if label(r) in ran or label(r) in refused))
    return [row(n, ran[n], cmp) if n in ran else unsupported_row(n, refused[n]) for n in names]


def unsupported(results: list[Result]) -> dict[str, str]:
    """{configuration: why} for the configurations whose every run was unsupported on the model."""
    ok = {label(r) for r in results if is_ok(r)}
    return {
        label(r): r.get("error", "")
        for r in ordered(results)
        if r.get("status") == Status.UNSUPPORTED and label(r) not in ok
    }


def unsupported_row(name: str, why: str) -> list[str]:
    return [name, "0", f"unsupported: {why}"] + ["-"] * (len(COLUMNS) - 3)


def format_text(results: list[Result]) -> str:
    """The table as aligned text; an unsupported configuration's row is its name and the reason, unaligned
    (a reason is a sentence, wider than any column)."""
    rows = [COLUMNS] + table_rows(results)
    aligned = [r for r in rows if not r[2].startswith("unsupported: ")]
    widths = [max(len(r[i]) for r in aligned) for i in range(len(COLUMNS))]
    line = lambda cells: (  # noqa: E731
        f"{cells[0].ljust(widths[0])}  {cells[2]}"
        if cells[2].startswith("unsupported: ")
        else "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    )
    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]])


def format_markdown(results: list[Result]) -> str:
    rows = table_rows(results)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def noise_lines(results: list[Result], cmp: Comparisons | None = None) -> list[str]:
    """Is the best configuration's lead real? Each other configuration against it, paired (over seeds, or
    image by image with one seed), Holm-corrected: 'beyond noise' only where the test says so."""
    cmp = cmp or Comparisons(results)
    if len(cmp.configs) < 2:
        return []
    best = max(cmp.configs, key=lambda c: c.acc.mean)
    spread = f" ± {best.acc.std:.3f} over {best.acc.n} seeds" if best.acc.n > 1 else " (one seed)"
    out = [f"best: {best.label} ({best.acc.mean:.3f}{spread}); {cmp.count} paired comparisons, Holm-corrected"]
    for c in sorted(cmp.configs, key=lambda c: -c.acc.mean):
        if c is not best:
            out.append(cmp.verdict(best.label, c.label))
    return out + pays_lines(cmp)


def pays_lines(cmp: Comparisons) -> list[str]:
    """Does fine-tuning pay? The method chosen on validation against each reference: one verdict, each test at
    p < 0.05 (an intersection-union test, compare.pays)."""
    p = pays(cmp)
    if p is None:
        return []
    m, k = p.method.label, p.count
    out = [
        f"does fine-tuning pay? only if {m} (the method of highest validation accuracy) is above every reference: "
        f"each of these {k} tests at p < {ALPHA} (one verdict, an intersection-union test: its error is at most "
        f"{ALPHA} without a correction)"
    ]
    refs = sorted(p.tests, key=lambda r: -(p.tests[r].diff if p.tests[r] is not None else 0.0))
    out += ["  " + (part(m, r, p.tests[r]) if p.tests[r] is not None else cmp.verdict(m, r)) for r in refs]
    missing = set(p.short)
    short = [r for r in refs if r in missing]  # in the order printed
    out.append(
        f"fine-tuning pays here: {m} is above every reference, each at p < {ALPHA}"
        if not short
        else f"fine-tuning is not shown to pay here: {m} is not above {', '.join(short)} at p < {ALPHA}"
    )
    return out


def part(a: str, b: str, t: Paired) -> str:
    """One test of the verdict: the difference, its interval and uncorrected p, no claim of its own."""
    ci = f", {t.interval()}" if t.low is not None else ""
    return f"{a} vs {b}: {t.diff:+.3f}{ci} ({t.test}, p = {t.p:.3g})"


def context_lines(results: list[Result]) -> list[str]:
    """What the table was measured on: model, data, chance level, coverage, device, failures."""
    if not results:
        return []
    ok = [r for r in largest(results) if is_ok(r)]
    lines = []
    ks = sizes(results)
    if len(ks) > 1:
        shown = ", ".join("all" if k is None else str(k) for k in ks)
        lines.append(
            f"training sizes (images per class): {shown}; the table, comparisons and findings are at the largest "
            f"({'all' if ks[-1] is None else ks[-1]}), every size in 'Accuracy against training-set size'"
        )
    if ok:
        r = next((x for x in ok if x.get("kind", "method") == "method"), ok[0])  # a training run, when any
        d, m = r["data"], test_metrics(r)
        seeds = sorted({x["seed"] for x in ok})
        sel = r.get("selection") or {}
        val = f"{d['val_examples']:,} validation" + (
            " (trained on: --refit train+val)" if sel.get("refit") == "train+val" else ""
        )
        lines += [
            f"model: {r['model']} · dataset: {r['dataset']} ({len(d['label_names'])} classes) · "
            f"seeds {', '.join(map(str, seeds))}",
            f"train: {d['train_examples']:,} images · {val} · test: {d['test_examples']:,} images of split "
            f"'{d['test_split']}' · chance accuracy {m['chance_accuracy']:.3f} · "
            f"{r['train'].get('epochs', '-')} epochs",
            f"chosen on validation: {sel.get('checkpoint', '?')}"
            + (
                f", early stop after {r['train'].get('early_stop')} epochs without gain"
                if r["train"].get("early_stop")
                else ""
            )
            + f" · test scored {sel.get('test_evaluations', '?')}× per run"
            + (f" · options searched: {searched_line(ok)}" if any(x.get("tuning") for x in ok) else ""),
            f"device: {r['env']['device']} ({r['env']['device_name']}) · peak memory: {r['memory']['kind']}",
        ]
        lines += [f"note: {n}" for n in dict.fromkeys(n for x in ok for n in x["data"].get("notes", []))]
    lines += [
        f"{label(x)} seed {x.get('seed')}: {x['status']} — {x.get('error', '')}"
        for x in ordered(results)
        if not is_ok(x) and x.get("status") != Status.UNSUPPORTED  # those have their row in the table
    ]
    return lines


def searched_line(ok: list[Result]) -> str:
    """'lr for head, last (8 trials each)': what a search chose options for, with its budget."""
    by: dict[tuple, list[str]] = {}
    for r in ok:
        t = r.get("tuning")
        if t and label(r) not in by.get((tuple(t["searched"]), t["budget"]), []):
            by.setdefault((tuple(t["searched"]), t["budget"]), []).append(label(r))
    return "; ".join(f"{','.join(k[0])} for {', '.join(v)} ({k[1]} trials each)" for k, v in by.items())


def summary_markdown(results: list[Result]) -> str:
    ctx = "\n".join(f"- {line}" for line in context_lines(results) + noise_lines(results))
    sized = data_size_lines(results)
    tail = "\n## Accuracy against training-set size\n\n" + "\n".join(f"- {x}" for x in sized) + "\n" if sized else ""
    return f"# peftlab comparison\n\n{ctx}\n\n{format_markdown(results)}\n{tail}"


# ------------------------------------------------------------------------- the full report


def per_class_winners(gs: dict[str, list[Result]], names: list[str]) -> dict[str, str]:
    """{class: configuration} where one configuration is more accurate on that class than every other beyond
    noise: paired t over the seeds (per-class accuracies), Holm-corrected over every class and comparison."""
    by = {g: {r["seed"]: test_metrics(r)["per_class_accuracy"] for r in rs} for g, rs in gs.items()}
    candidates, tests = {}, []
    for c in names:
        means = {g: m for g, rs in gs.items() if (m := class_mean(rs, c)) is not None}
        if len(means) < 2:
            continue
        top = max(means, key=means.get)
        for other in means:
            if other == top:
                continue
            a = {s: v[c] for s, v in by[top].items() if v.get(c) is not None}
            b = {s: v[c] for s, v in by[other].items() if v.get(c) is not None}
            t = paired(a, b)
            if t is None:  # fewer than two shared seeds: nothing to test, no winner
                candidates[c] = None
                break
            tests.append((c, top, t))
        else:
            candidates[c] = top
    corrected = holm([t for _, _, t in tests])
    losing = {c for (c, _, _), t in zip(tests, corrected) if not (t.real and t.diff > 0)}
    return {c: top for c, top in candidates.items() if top is not None and c not in losing}


def per_class_table(results: list[Result]):
    """Per-class test accuracy (mean over seeds): one row per class, one column per configuration; in bold the
    configuration of a class that is more accurate on it than every other beyond noise (per_class_winners)."""
    gs = groups(results)
    if not gs or not all(test_metrics(r).get("per_class_accuracy") for rs in gs.values() for r in rs):
        return None
    r0 = next(iter(gs.values()))[0]
    names = r0["data"]["label_names"]
    counts = (r0.get("coverage") or {}).get("test", {}).get("per_class", {})
    winners = per_class_winners(gs, names)
    rows = []
    for c in names:
        # mean over the seeds whose test sample has this class (None: no test image of it, no accuracy)
        accs = {g: class_mean(rs, c) for g, rs in gs.items()}
        rows.append(
            [c, str(counts.get(c, 0))]
            + ["-" if a is None else f"**{a:.3f}**" if winners.get(c) == g else f"{a:.3f}" for g, a in accs.items()]
        )
    return Table(["class", "test images"] + list(gs), rows, left=1)
