"""The report's Findings: the exercise's questions answered in sentences built from the result records.

Nothing here knows a particular run: every number, name and verdict comes from the results — the
meanings of options from what each result recorded of its method, every "better" from the paired tests
of report.compare. Pure: results in, document blocks out.
"""

from __future__ import annotations

from dataclasses import fields

from ..config import RunConfig
from ..results import Result, is_ok, val_metrics
from .compare import PROBE, Comparisons, pays
from .datasize import data_size_lines
from .document import Block, Bullets, Heading, Para, Table
from .groups import label, ordered
from .protocol import metric, protocol, search, start
from .stats import ALPHA
from .verdicts import G, acc_text, accuracy, efficiency, names, pros_cons, reduce, reliability


def option_help(r: Result) -> dict[str, str]:
    """{option: one-line meaning}, as the method's config dataclass said when the run was made (recorded
    in its result's method_info)."""
    return dict((r.get("method_info") or {}).get("options") or {})


# ------------------------------------------------------------------------- the sections
def references(cmp: Comparisons) -> list[str]:
    """Where the methods stand against the reference baselines; plainly, when a reference beats them all."""
    refs, methods = cmp.references, cmp.methods
    if not refs:
        return [
            "No reference baselines in these results (--baselines none): nothing says whether fine-tuning pays here."
        ]
    out = [
        "References (same training, validation and test images; their hyperparameter chosen on validation): "
        + ", ".join(f"{c.label} {acc_text(c)}" for c in sorted(refs, key=lambda c: c.acc.mean))
        + "."
    ]
    if not methods:
        return out
    best_ref = max(refs, key=lambda c: c.acc.mean)
    best = max(methods, key=lambda c: c.acc.mean)
    if best_ref.acc.mean > best.acc.mean:
        beats = all(cmp.better(best_ref.label, m.label) for m in methods)
        out.append(
            f"**A reference baseline is above every fine-tuning method: {best_ref.label} ({acc_text(best_ref)}) "
            f"against the best method, {best.label} ({acc_text(best)})** — "
            + (
                "beyond noise against each of them: on this task and budget, fine-tuning does not pay."
                if beats
                else "indistinguishable at this budget from the best methods; fine-tuning is not shown to pay."
            )
        )
    out += paying(cmp)
    probe = cmp.by_method(PROBE)
    alone = f"each method on its own (Holm over the report's {cmp.count} pairs)"
    for ref in [r for r in (probe, cmp.by_method("pixels")) if r is not None]:
        above = [m.label for m in methods if cmp.better(m.label, ref.label)]
        below = [m.label for m in methods if cmp.better(ref.label, m.label)]
        same = [m.label for m in methods if m.label not in above + below]
        parts = (
            ([f"above it beyond noise: {names(above)}"] if above else [])
            + ([f"below it beyond noise: {names(below)}"] if below else [])
            + ([f"indistinguishable from it at this budget: {names(same)}"] if same else [])
        )
        out.append(f"Against the {ref.label} ({acc_text(ref)}), {alone}: " + "; ".join(parts) + ".")
    rand = cmp.by_method("probe-random")
    if probe is not None and rand is not None:
        out.append(
            f"Pretraining, frozen: the {probe.label} scores {acc_text(probe)} on the pretrained features and "
            f"{acc_text(rand)} on a randomly initialised copy's ({rand.label}) — "
            + ("above it beyond noise." if cmp.better(probe.label, rand.label) else "not above it beyond noise.")
        )
    scratch = next((c for c in refs if c.method == "full"), None)
    if scratch is not None:
        gain = [m.label for m in methods if cmp.better(m.label, scratch.label)]
        out.append(
            f"Pretraining: the architecture trained from scratch with full fine-tuning's budget scores "
            f"{acc_text(scratch)}; "
            + (f"{names(gain)} beat it beyond noise." if gain else "no method beats it beyond noise.")
        )
    majority = cmp.by_method("majority")
    if majority is not None:
        above = [m.label for m in methods if not cmp.better(m.label, majority.label)]
        if above:
            out.append(f"Not shown to beat the chance level ({majority.label}, {acc_text(majority)}): {names(above)}.")
    return out


def paying(cmp: Comparisons) -> list[str]:
    """The one pre-specified question, in a sentence: the method chosen on validation against every reference."""
    p = pays(cmp)
    if p is None:
        return []
    m, k = p.method.label, p.count
    rest = p.short
    head = (
        f"**Does fine-tuning pay? Only if {m}**, the method of highest validation accuracy, is above every reference, "
        f"each of these {k} paired tests at p < {ALPHA} (one verdict, an intersection-union test: its error is at "
        f"most {ALPHA} without a correction): "
    )
    if not rest:
        return [head + "it is — **fine-tuning pays on this task and budget**."]
    return [
        head
        + f"it is not shown above {names(rest)} — fine-tuning is not shown to pay over "
        + ("it" if len(rest) == 1 else "them")
        + " at this budget."
    ]


def describe(g: G) -> str:
    """What a configuration is, plainly: 'head' is a head trained for the run's epochs, not a converged probe."""
    r = g.c.rs[0]
    info = r.get("method_info") or {}
    text = info.get("description", "")
    if r["method"] == "head" and g.c.kind == "method":
        text = (
            f"a new classification head trained by AdamW for {r['train'].get('epochs')} epochs at lr "
            f"{r['method_config'].get('lr')}, the rest frozen (not converged: the converged linear probe is "
            "a reference row)"
        )
    return text


def hyperparameters(gs: list[G]) -> tuple[list[str], Table]:
    rows = []
    for g in gs:
        r = g.c.rs[0]
        helps = option_help(r)
        for i, (opt, value) in enumerate(r["method_config"].items()):
            rows.append([g.label if i == 0 else "", opt, str(value), helps.get(opt, "")])
    run_help = {f.name: f.metadata.get("help", "") for f in fields(RunConfig)}
    trained = next((g for g in gs if g.c.kind == "method"), gs[0])
    shared = trained.c.rs[0].get("train", {})
    shared = {k: v for k, v in shared.items() if run_help.get(k)}  # the settings a user chooses
    rows += [
        ["every training run" if i == 0 else "", k, str(v), run_help[k]] for i, (k, v) in enumerate(shared.items())
    ]
    lines = [f"**{g.label}**: {d}." for g in gs if (d := describe(g))]
    return lines, Table(["configuration", "option", "value", "meaning"], rows, left=4)


def parameters(gs: list[G]) -> list[str]:
    out, bad = [], []
    for g in gs:
        p = g.c.rs[0]["params"]
        if g.c.kind == "reference" and g.c.method != "full":
            out.append(f"**{g.label}**: {p['trainable']:,} fitted numbers (a classical model, not a network).")
            continue
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
    checked = [
        g for g in gs if g.c.rs[0]["params"].get(f"{g.c.rs[0]['params'].get('kind', 'theory')}_match") is not None
    ]
    if checked:
        out.insert(
            0,
            f"{len(checked) - len(bad)} of {len(checked)} configurations match their derived counts"
            + (f"; mismatches: {names(bad)}." if bad else "."),
        )
    return out


def time_and_accuracy(gs: list[G]) -> list[str]:
    out = []
    for g in gs:
        acc = g.c.acc
        ci = f" (95% interval {acc.low:.3f} to {acc.high:.3f}, {acc.n} seeds)" if acc.n > 1 else ""
        if g.c.kind == "reference" and g.c.method != "full":
            chose = g.c.rs[0].get("selection", {}).get("options", "")
            out.append(f"**{g.label}**: test accuracy **{acc_text(g.c)}**{ci}, fitted in {g.train_s:.1f} s ({chose}).")
            continue
        epochs = g.c.rs[0]["train"].get("epochs", 0)
        img_s = sum(r["throughput"]["train_img_s"] for r in g.c.rs) / len(g.c.rs)
        chosen = sorted({r.get("selection", {}).get("epoch") for r in g.c.rs} - {None})
        val = [val_metrics(r).get("accuracy") for r in g.c.rs]
        val_text = (
            f"; validation {sum(val) / len(val):.3f} at the checkpoint of epoch {'/'.join(map(str, chosen))}"
            if all(v is not None for v in val)
            else ""
        )
        out.append(
            f"**{g.label}**: test accuracy **{acc_text(g.c)}**{ci} after {g.train_s:.1f} s of training "
            f"({epochs} epoch{'s' * (epochs != 1)}, {img_s:.0f} img/s){val_text}."
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
    """The Findings section as document blocks (headings, bullet lists, tables)."""
    cmp = Comparisons(results)
    gs = [reduce(c) for c in cmp.configs]
    ok = [r for g in gs for r in g.c.rs]
    blocks: list[Block] = [Heading("Findings", 2)]
    if not gs:
        return blocks + [Bullets(["No run succeeded: nothing to compare."] + failures(results))]
    hp_lines, hp_table = hyperparameters(gs)
    search_lines, search_table = search(ok)
    sized = data_size_lines(results)
    if sized:
        blocks += [Heading("Which method with how much data", 3), Para(sized[0]), Bullets(sized[1:])]
    blocks += [
        Heading("Against the references", 3),
        Bullets(references(cmp)),
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
        Heading("Comparison: accuracy", 3),
        Bullets(accuracy(cmp, gs)),
        Heading("Comparison: efficiency", 3),
        Bullets(efficiency(cmp, gs)),
        Heading("Comparison: reliability", 3),
        Bullets(reliability(gs) + failures(results)),
    ]
    if len(gs) > 1:
        blocks += [Heading("Advantages and disadvantages", 3), Bullets(pros_cons(cmp, gs))]
    return blocks + [Heading("Class coverage", 3), Bullets(coverage(ok))]
