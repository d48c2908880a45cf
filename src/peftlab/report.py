"""Reports are pure functions of result dicts (as written to result.json)."""

from __future__ import annotations

COLUMNS = ["method", "trainable", "theory", "% trainable", "accuracy (baseline → final)", "top-5", "macro-F1",
           "train s", "img/s", "peak mem", "adapter"]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def theory_cell(p: dict) -> str:
    """'✓' when measured counts equal the derived ones, 'MISMATCH' when not; 'structural' marks
    counts derived from module shapes rather than from the architecture's formulas."""
    kind = p.get("kind", "theory")
    match = p.get(f"{kind}_match")
    if match is None:
        return "-"
    return ("✓" if match else "MISMATCH") + (" (structural)" if kind == "structural" else "")


def row(r: dict) -> list[str]:
    m, p = r["metrics"], r["params"]
    return [
        r["method"],
        f"{p['trainable']:,}",
        theory_cell(p),
        f"{p['trainable_pct']:.2f}%",
        f"{m['baseline_accuracy']:.3f} → {m['accuracy']:.3f}",
        _pct(m.get("top5_accuracy")),
        _pct(m.get("macro_f1")),
        f"{r['time']['train_s']:.1f}",
        f"{r['throughput']['train_img_s']:.0f}",
        human_bytes(r["memory"]["peak_bytes"]),
        human_bytes(r["size"]["adapter_bytes"]),
    ]


def ordered(results: list[dict]) -> list[dict]:
    """Registry order of methods (head, last, lora, full, ...), then seed: the same order whether the
    results come from a run or from the files on disk."""
    from .methods import REGISTRY

    order = {name: i for i, name in enumerate(REGISTRY)}
    return sorted(results, key=lambda r: (order.get(r["method"], len(order)), r["method"], r.get("seed", 0)))


def table_rows(results: list[dict]) -> list[list[str]]:
    return [row(r) for r in ordered(results) if r.get("status", "ok") == "ok"]


def format_text(results: list[dict]) -> str:
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]])


def format_markdown(results: list[dict]) -> str:
    rows = table_rows(results)
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def context_lines(results: list[dict]) -> list[str]:
    """What the table was measured on: model, data, chance level, coverage, device."""
    if not results:
        return []
    r = results[0]
    d, m = r["data"], r["metrics"]
    lines = [
        f"model: {r['model']} · dataset: {r['dataset']} ({len(d['label_names'])} classes) · seed {r['seed']}",
        f"train: {d['train_examples']:,} images · eval: {d['eval_examples']:,} images of split "
        f"'{d['eval_split']}' · chance accuracy {m['chance_accuracy']:.3f} · {r['train']['epochs']} epochs",
        f"device: {r['env']['device']} ({r['env']['device_name']}) · peak memory: {r['memory']['kind']}",
    ]
    lines += [f"note: {n}" for n in d.get("notes", [])]
    failed = [x for x in results if x.get("status", "ok") != "ok"]
    lines += [f"{x['method']}: {x['status']} — {x.get('error', '')}" for x in failed]
    return lines


def summary_markdown(results: list[dict]) -> str:
    ctx = "\n".join(f"- {line}" for line in context_lines(results))
    return f"# peftlab comparison\n\n{ctx}\n\n{format_markdown(results)}\n"
