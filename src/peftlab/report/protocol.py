"""The Findings' opening sections: the metric and chance level, the protocol (the three splits and what
chose what), the validation accuracy before training, and each configuration's search. Pure: results in,
lines (and one table) out."""

from __future__ import annotations

from ..results import Result, test_metrics, val_metrics
from .document import Table
from .stats import summarize
from .table import label


def metric(ok: list[Result]) -> list[str]:
    r, m = ok[0], test_metrics(ok[0])
    k, n = len(r["data"]["label_names"]), r["data"]["test_examples"]
    chances = sorted({round(test_metrics(x)["chance_accuracy"], 6) for x in ok})
    chance = f"{chances[0]:.3f}" if len(chances) == 1 else f"{chances[0]:.3f}–{chances[-1]:.3f} (by seed)"
    top5 = (
        "top-5 accuracy (the true class among the 5 most likely)"
        if m.get("top5_accuracy") is not None
        else f"no top-5 accuracy: with {k} classes it would always be 1"
    )
    return [
        f"Metric: **test accuracy**, the share of the {n:,} test images (split '{r['data']['test_split']}') whose "
        f"most likely class is the true one. **Chance level: {chance}**, the accuracy of always predicting the "
        f"most frequent of the {k} classes.",
        f"Also reported: macro-F1 (the mean of the per-class F1 scores: every class weighs the same, whatever "
        f"its size), per-class accuracy, the confusion matrix and the test loss; {top5}.",
        "Other options: balanced accuracy, per-class precision and recall, log-loss, calibration error.",
    ]


def protocol(ok: list[Result]) -> list[str]:
    """How the numbers were made: the three splits, what validation chose, how often test was looked at."""
    r = ok[0]
    d, sel = r["data"], r.get("selection") or {}
    splits = d.get("splits") or {}
    out = []
    if splits:
        parts = [
            f"{role} {splits[role]['size']:,} ({splits[role]['how']})"
            for role in ("train", "val", "test")
            if role in splits
        ]
        out.append("Splits (seed " + str(r["seed"]) + "): " + "; ".join(parts) + ".")
        check = splits.get("check") or {}
        dupes = {k: v for k, v in (check.get("identical_images") or {}).items() if v}
        out.append(
            ("They share no source row" if check.get("disjoint") else "**They share source rows**")
            + (
                " and no image is pixel-identical across them."
                if not dupes
                else "; **pixel-identical images across splits**: "
                + ", ".join(f"{k} {v}" for k, v in dupes.items())
                + " (duplicates in the dataset itself)."
            )
        )
    out.append(
        f"Every choice is made on the validation split: the checkpoint ({sel.get('checkpoint', '?')}), "
        + (
            f"early stopping after {r['train'].get('early_stop')} epochs without gain, "
            if r["train"].get("early_stop")
            else ""
        )
        + ("the options searched (see Search), " if any(x.get("tuning") for x in ok) else "")
        + f"and the test split is scored {sel.get('test_evaluations', '?')} time(s) per final run, with the "
        "weights chosen."
    )
    if sel.get("refit") == "train+val":
        out.append("Final runs trained on train + validation (--refit train+val): their last epoch is tested.")
    return out


def start(ok: list[Result]) -> list[str]:
    """The validation accuracy before training: the pretrained model with its new, untrained head."""
    by_seed: dict[int, list[float]] = {}
    for r in ok:
        if "start_accuracy" in val_metrics(r):
            by_seed.setdefault(r["seed"], []).append(val_metrics(r)["start_accuracy"])
    if not by_seed:
        return ["No validation accuracy before training was recorded (validation was trained on)."]
    same = all(max(v) - min(v) < 1e-9 for v in by_seed.values())
    per_seed = {s: sum(v) / len(v) for s, v in sorted(by_seed.items())}
    s = summarize(list(per_seed.values()))
    k = len(ok[0]["data"]["label_names"])
    text = (
        f"**Before training** (the pretrained model with its new, untrained {k}-class head), validation "
        f"accuracy: **{s.mean:.3f}**"
    )
    if s.n > 1:
        text += " (mean over seeds; " + ", ".join(f"seed {q}: {v:.3f}" for q, v in per_seed.items()) + ")"
    text += (
        "; the same for every method, which all start from the same new head."
        if same
        else f"; it differs between methods at the same seed ({min(min(v) for v in by_seed.values()):.3f}–"
        f"{max(max(v) for v in by_seed.values()):.3f})."
    )
    return [
        text,
        "A fresh random head measures chance, not the pretrained features; the reference baselines "
        "in the table say what fine-tuning must beat.",
    ]


def search(ok: list[Result]) -> tuple[list[str], Table | None]:
    """What each configuration's search tried and chose (the same budget for every one)."""
    seen, lines, rows = set(), [], []
    for r in ok:
        t = r.get("tuning")
        if not t or label(r) in seen:
            continue
        seen.add(label(r))
        space = "; ".join(
            f"{k} {'log-uniform ' + str(v['log_uniform']) if 'log_uniform' in v else v}" for k, v in t["space"].items()
        )
        chosen = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["chosen"].items())
        pruned = sum(x["state"] == "pruned" for x in t["trials"])
        lines.append(
            f"**{label(r)}**: {t['budget']} trials over {space} ({t['sampler']}; {pruned} pruned) → **{chosen}** "
            f"(validation accuracy {t['best_value']:.3f}, trial {t['best_trial']})."
        )
        for x in t["trials"]:
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in x["params"].items())
            value = "-" if x["value"] is None else f"{x['value']:.3f}"
            mark = " (chosen)" if x["number"] == t["best_trial"] else " (diverged)" if x.get("diverged") else ""
            rows.append([label(r), str(x["number"]), params, value + mark, f"{x['state']} after {x['epochs']} ep."])
    table = Table(["configuration", "trial", "options", "validation accuracy", "state"], rows, left=3) if rows else None
    return lines, table
