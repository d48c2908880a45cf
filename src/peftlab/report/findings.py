"""The report's Findings: the exercise's questions answered in sentences built from the result dicts.

Nothing here knows a particular run: every number, name and verdict comes from the results, the
meanings of options from the method config dataclasses' field help, the noise verdicts from
report.noise_lines / stats.Summary.overlaps. Pure: results in, document blocks out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..config import RunConfig
from ..results import Result, is_ok, test_metrics, val_metrics
from .document import Block, Bullets, Heading, Table
from .protocol import metric, protocol, search, start
from .stats import Summary, pareto_front
from .table import accuracy_summary, class_mean, groups, human_bytes, label, noise_lines, ordered


@dataclass(frozen=True)
class G:
    """One configuration over its seeds, reduced to the numbers the findings compare."""

    label: str
    rs: list
    acc: Summary  # test accuracy over seeds
    val: float | None  # mean validation accuracy of the chosen checkpoints (None: validation was trained on)
    trainable: int
    train_s: float
    img_s: float
    peak: int
    adapter: int


def _g(name: str, rs: list[Result]) -> G:
    mean = lambda get: sum(get(r) for r in rs) / len(rs)  # noqa: E731
    return G(
        name,
        rs,
        accuracy_summary(rs),
        mean(lambda r: val_metrics(r)["accuracy"]) if all(val_metrics(r) for r in rs) else None,
        rs[0]["params"]["trainable"],
        mean(lambda r: r["time"]["train_s"]),
        mean(lambda r: r["throughput"]["train_img_s"]),
        max(r["memory"]["peak_bytes"] for r in rs),
        rs[0]["size"]["adapter_bytes"],
    )


def _acc(s: Summary) -> str:
    return f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.n > 1 else "")


def _names(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def option_help(r: Result) -> dict[str, str]:
    """{option: one-line meaning}, as the method's config dataclass said when the run was made (recorded
    in its result's method_info)."""
    return dict((r.get("method_info") or {}).get("options") or {})


# ------------------------------------------------------------------------- the sections
def hyperparameters(gs: list[G]) -> tuple[list[str], Table]:
    rows = []
    for g in gs:
        r = g.rs[0]
        helps = option_help(r)
        for i, (opt, value) in enumerate(r["method_config"].items()):
            rows.append([g.label if i == 0 else "", opt, str(value), helps.get(opt, "")])
    run_help = {f.name: f.metadata.get("help", "") for f in fields(RunConfig)}
    shared = gs[0].rs[0].get("train", {})
    shared = {k: v for k, v in shared.items() if run_help.get(k)}  # the settings a user chooses
    rows += [
        ["every configuration" if i == 0 else "", k, str(v), run_help[k]] for i, (k, v) in enumerate(shared.items())
    ]
    described = [(g, (g.rs[0].get("method_info") or {}).get("description")) for g in gs]
    lines = [f"**{g.label}**: {d}." for g, d in described if d]
    return lines, Table(["configuration", "option", "value", "meaning"], rows, left=4)


def parameters(gs: list[G]) -> list[str]:
    out, bad = [], []
    for g in gs:
        p = g.rs[0]["params"]
        kind = p.get("kind", "theory")
        line = (
            f"**{g.label}**: {p['trainable']:,} trainable of {p.get('total', p.get('base', 0)):,} parameters "
            f"({p['trainable_pct']:.2f} % of the {p.get('base', 0):,} of the base model with its new head"
            + (f"; the method adds {p['added']:,}" if p.get("added") else "")
            + "). "
        )
        derived = p.get(f"{kind}_trainable")
        what = "Derived from the architecture" if kind == "theory" else "Counted from module shapes"
        if kind == "not derived":
            line += "Not derived: the method registers no parameter formula."
        elif derived is None:
            line += "No derived count recorded."
        elif p.get(f"{kind}_match"):
            line += f"{what}: {derived:,} trainable, {p[f'{kind}_total']:,} total — **match**."
        else:
            bad.append(g.label)
            line += f"{what}: **MISMATCH** — " + "; ".join(
                f"{m['what']} {m[kind]:,} derived vs {m['measured']:,} measured" for m in p.get("mismatches", [])
            )
        extra = p.get("peft_all_params", p.get("total")) - p.get("total", 0) if "total" in p else 0
        if extra:
            line += (
                f" PEFT's own \"all params\" is {p['peft_all_params']:,} (+{extra:,}: the head's trainable "
                "copy, counted beside the frozen original)."
            )
        out.append(line)
    checked = [g for g in gs if g.rs[0]["params"].get(f"{g.rs[0]['params'].get('kind', 'theory')}_match") is not None]
    if checked:
        out.insert(
            0,
            f"{len(checked) - len(bad)} of {len(checked)} configurations match their derived counts"
            + (f"; mismatches: {_names(bad)}." if bad else "."),
        )
    return out


def time_and_accuracy(gs: list[G]) -> list[str]:
    out = []
    for g in gs:
        epochs = g.rs[0]["train"]["epochs"]
        chosen = sorted({r.get("selection", {}).get("epoch") for r in g.rs} - {None})
        line = (
            f"**{g.label}**: test accuracy **{_acc(g.acc)}**"
            + (f" (95% interval {g.acc.low:.3f} to {g.acc.high:.3f}, {g.acc.n} seeds)" if g.acc.n > 1 else "")
            + f" after {g.train_s:.1f} s of training ({epochs} epoch{'s' * (epochs != 1)}, {g.img_s:.0f} img/s)"
            + (
                f"; validation {g.val:.3f} at the checkpoint of epoch {'/'.join(map(str, chosen))}"
                if g.val is not None
                else ""
            )
            + "."
        )
        out.append(line)
    return out


def _extremes(gs: list[G], key, fmt, low: str, high: str) -> str | None:
    vals = [key(g) for g in gs]
    if max(vals) == min(vals):
        return None
    lo, hi = gs[vals.index(min(vals))], gs[vals.index(max(vals))]
    ratio = f", {max(vals) / min(vals):.1f}×" if min(vals) > 0 else ""
    return f"{low[0].upper()}{low[1:]}: {lo.label} ({fmt(key(lo))}); {high}: {hi.label} ({fmt(key(hi))}{ratio})"


def comparison(gs: list[G], results: list[Result]) -> dict[str, list[str]]:
    best = max(gs, key=lambda g: g.acc.mean)
    others = [g for g in gs if g is not best]
    noisy = all(g.acc.n > 1 for g in gs)
    acc = [f"Highest mean test accuracy: **{best.label}** ({_acc(best.acc)})."]
    if others and noisy:
        within = [g.label for g in others if g.acc.overlaps(best.acc)]
        acc.append(
            f"{len(within)} of {len(others)} other configurations are **within noise** of it (95% intervals "
            "overlap)" + (f": {_names(within)} — these runs cannot rank them by accuracy." if within else ".")
        )
    noise = noise_lines(results)
    acc += noise[1:] if noisy else noise  # noise[0] names the best, as the first line here does
    pcs = test_metrics(best.rs[0]).get("per_class_accuracy") or {}
    means = {c: m for c in pcs if (m := class_mean(best.rs, c)) is not None}  # None: no eval image of c
    if means:
        lo, hi = min(means, key=means.get), max(means, key=means.get)
        acc.append(
            f"Per class, {best.label} is weakest on {lo} ({means[lo]:.3f}) and strongest on {hi} ({means[hi]:.3f})."
        )
    kind = gs[0].rs[0]["memory"].get("kind", "")
    eff = [
        x
        for x in [
            _extremes(gs, lambda g: g.trainable, lambda v: f"{v:,}", "fewest trainable parameters", "most"),
            _extremes(gs, lambda g: g.train_s, lambda v: f"{v:.1f} s", "fastest training", "slowest"),
            _extremes(gs, lambda g: g.peak, human_bytes, "lowest peak memory", "highest"),
            _extremes(gs, lambda g: g.adapter, human_bytes, "smallest saved adapter", "largest"),
        ]
        if x
    ]
    if kind == "process_peak_rss":
        eff.append(
            "Peak memory is the whole process's peak resident memory (Python, libraries and the decoded data "
            "included), so the differences between methods are smaller than the totals suggest."
        )
    for cost, what in (("trainable", "trainable parameters"), ("train_s", "training time")):
        front = [gs[i] for i in pareto_front([(getattr(g, cost), g.acc.mean) for g in gs])]
        fragile = noisy and any(a.acc.overlaps(b.acc) for a, b in zip(front, front[1:]))
        eff.append(
            f"Pareto front of mean accuracy vs {what} (no other configuration both cheaper and more "
            f"accurate): {_names([g.label for g in front])}"
            + ("; its accuracy steps are within noise, so cost decides between them." if fragile else ".")
        )
    rel = []
    if noisy:
        spread = ", ".join(f"{g.label} {g.acc.std:.3f}" for g in sorted(gs, key=lambda g: g.acc.std))
        fewest = min(g.acc.n for g in gs)
        rel.append(
            f"Spread of accuracy over seeds (std): {spread}"
            + (f"; with {fewest} seeds these are rough estimates." if fewest < 5 else ".")
        )
    else:
        rel.append(
            "One seed per configuration: no estimate of how much accuracy varies between seeds; "
            "rerun with --seeds 0,1,2 to measure it."
        )
    rel += failures(results)
    return {"Accuracy": acc, "Efficiency": eff, "Reliability": rel, "Advantages and disadvantages": pros_cons(gs)}


def pros_cons(gs: list[G]) -> list[str]:
    if len(gs) < 2:
        return []
    best = max(gs, key=lambda g: g.acc.mean)
    fronts = {
        what: {gs[i].label for i in pareto_front([(cost(g), g.acc.mean) for g in gs])}
        for what, cost in (("parameters", lambda g: g.trainable), ("time", lambda g: g.train_s))
    }
    # values compared as shown (rounded), so that ties in the text are ties here
    criteria = [
        ("trainable parameters", lambda g: g.trainable, "fewest", "most"),
        ("training time", lambda g: round(g.train_s, 1), "shortest", "longest"),
        ("peak memory", lambda g: round(g.peak, -5), "lowest", "highest"),
        ("adapter size", lambda g: round(g.adapter, -2), "smallest", "largest"),
    ]
    noisy = all(g.acc.n > 1 for g in gs)
    if noisy:
        criteria.append(("spread over seeds", lambda g: round(g.acc.std, 3), "smallest", "largest"))
    out = []
    for g in gs:
        pro, con = [], []
        if g is best and not noisy:
            pro.append("highest accuracy (one seed: no noise estimate)")
        elif g is best:
            close = [o.label for o in gs if o is not g and o.acc.overlaps(g.acc)]
            pro.append("highest mean accuracy" + (f" (within noise of {_names(close)})" if close else ", beyond noise"))
        elif noisy and not g.acc.overlaps(best.acc):
            con.append(f"less accurate than {best.label} beyond noise")
        pro += [f"on the accuracy/{what} Pareto front" for what, front in fronts.items() if g.label in front]
        for what, key, low, high in criteria:
            vals = [key(o) for o in gs]
            if max(vals) == min(vals):
                continue
            if key(g) == min(vals):
                pro.append(f"{low} {what}")
            elif key(g) == max(vals):
                con.append(f"{high} {what}")
        out.append(
            f"**{g.label}** — "
            + (
                "; ".join(
                    ([f"advantages: {', '.join(pro)}"] if pro else [])
                    + ([f"disadvantages: {', '.join(con)}"] if con else [])
                )
                or "neither the best nor the worst on any measure"
            )
            + "."
        )
    return out


def coverage(ok: list[Result]) -> list[str]:
    out, seen = [], {}
    for r in ok:
        seen.setdefault(r["seed"], r)
    for seed, r in sorted(seen.items()):
        cov = r.get("coverage") or {}
        parts = []
        for split, c in cov.items():
            counts = list(c.get("per_class", {}).values())
            part = f"{split}: {c['classes_present']} of {c['classes_total']} classes, {c['examples']:,} images" + (
                f" ({min(counts)}–{max(counts)} per class)"
                if counts and min(counts) != max(counts)
                else f" ({counts[0]} per class)"
                if counts
                else ""
            )
            if c.get("missing"):
                part += f", **missing: {', '.join(map(str, c['missing']))}**"
            if c.get("below_min"):
                need = r.get("config", {}).get("min_per_class", "the minimum")
                part += (
                    f", **fewer than {need} images: "
                    + ", ".join(f"{n} ({c['per_class'].get(n, '?')})" for n in c["below_min"])
                    + "**"
                )
            parts.append(part)
        if parts:
            out.append((f"seed {seed} — " if len(seen) > 1 else "") + "; ".join(parts) + ".")
    if len(out) > 1 and len({o.split(" — ", 1)[1] for o in out}) == 1:
        out = [f"every seed — {out[0].split(' — ', 1)[1]}"]
    notes = list(dict.fromkeys(n for r in ok for n in r["data"].get("notes", [])))
    out += [f"Note: {n}" for n in notes] or ["No notes from loading the data."]
    return out


def failures(results: list[Result]) -> list[str]:
    bad = [r for r in ordered(results) if not is_ok(r)]
    if not bad:
        return [f"All {len(results)} runs finished: none failed or diverged."]
    return [f"{len(bad)} of {len(results)} runs did not finish:"] + [
        f"{label(r)} seed {r.get('seed')}: **{r['status']}** — {r.get('error', '')}" for r in bad
    ]


def findings(results: list[Result]) -> list[Block]:
    """The Findings section as document blocks (headings, bullet lists, one table)."""
    gs = [_g(name, rs) for name, rs in groups(results).items()]
    ok = [r for g in gs for r in g.rs]
    blocks: list[Block] = [Heading("Findings", 2)]
    if not gs:
        return blocks + [Bullets(["No run succeeded: nothing to compare."] + failures(results))]
    hp_lines, hp_table = hyperparameters(gs)
    search_lines, search_table = search(ok)
    blocks += [
        Heading("Metric and chance level", 3),
        Bullets(metric(ok)),
        Heading("Protocol: what chose what", 3),
        Bullets(protocol(ok)),
        Heading("Before training", 3),
        Bullets(start(ok)),
        Heading("Hyperparameters and their meaning", 3),
        Bullets(hp_lines),
        hp_table,
    ]
    if search_lines:
        blocks += [Heading("Search", 3), Bullets(search_lines), search_table]
    blocks += [
        Heading("Parameter counts and the theory check", 3),
        Bullets(parameters(gs)),
        Heading("Time and accuracy", 3),
        Bullets(time_and_accuracy(gs)),
    ]
    for title, lines in comparison(gs, results).items():
        if lines:
            blocks += [
                Heading(f"Comparison: {title.lower()}" if title != "Advantages and disadvantages" else title, 3),
                Bullets(lines),
            ]
    return blocks + [Heading("Class coverage", 3), Bullets(coverage(ok))]
