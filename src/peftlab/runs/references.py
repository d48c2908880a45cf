"""Reference baselines as result records: each fitted on the run's training sample, chosen on its
validation split and scored once on its test split (peftlab.baselines does the fitting)."""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import theory
from ..baselines import REFERENCES, fit_reference
from ..baselines.classical import pool_pixels
from ..config import RunConfig, size_suffix
from ..data import Task
from ..results import SCHEMA_VERSION, Result, Status
from ..training import metrics_from_logits
from ..training.measure import environment
from .records import data_record, test_record


def reference_run_name(name: str, seed: int, per_class: int | None = None) -> str:
    """A reference baseline's folder name, e.g. 'ref-probe-seed0' or (--train-sizes) 'ref-probe-n20-seed0'."""
    return f"ref-{name}{size_suffix(per_class)}-seed{seed}"


def reference_header(cfg: RunConfig, name: str, seed: int, per_class: int | None = None) -> Result:
    """What identifies a reference baseline's result (as _header does a run's)."""
    ref = REFERENCES[name]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "reference",
        "method": name,
        "label": ref.label,
        "method_config": {},
        "method_info": {
            "description": ref.description,
            "paper": "scikit-learn",
            "options": {},
            "order": ref.order,
            "kind": "reference",
        },
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": seed,
        "run_name": reference_run_name(name, seed, per_class),
        "config": cfg.fingerprint()
        | {"reference": name, "seed": seed}
        | ({"per_class": per_class} if per_class is not None else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def reference_results(
    cfg: RunConfig, names: list[str], task: Task, spec, features: dict, seed: int, per_class: int | None = None
) -> list[Result]:
    """Each reference baseline fitted on the task's training sample, chosen on its validation split, scored
    once on its test split: result records shaped like a run's. features: {input kind: {role: frozen features}}
    (the probes' and k-NN's input), computed once for the seed's whole sample ('images': how many that pass
    encoded, so that a smaller training size is charged its share)."""
    out = []
    y = {r: getattr(task, r).labels.numpy() for r in ("train", "val", "test")}
    for name in names:
        ref = REFERENCES[name]
        if ref.input == "pixels":
            x = {r: pool_pixels(getattr(task, r).images.numpy()) for r in ("train", "val", "test")}
        elif ref.input == "labels":  # the majority class reads no input
            x = {r: np.zeros((len(y[r]), 0), np.float32) for r in ("train", "val", "test")}
        else:
            x = {r: features[ref.input][r].numpy() for r in ("train", "val", "test")}
        fit = fit_reference(name, x["train"], y["train"], x["val"], y["val"], x["test"], task.num_classes, seed)
        logits = torch.from_numpy(np.log(np.clip(fit.test_logits, 1e-12, None))).float()
        test = metrics_from_logits(logits, task.test.labels, task.num_classes)
        inputs = 0 if ref.input == "labels" else sum(a.nbytes for a in x.values())
        used = sum(len(v) for v in x.values())  # images whose features this reference read
        f = features.get(ref.input)
        feature_s = f["seconds"] * used / f["images"] if f else 0.0
        option = ", ".join(f"{k}={v}" for k, v in fit.chosen.items())
        out.append(
            reference_header(cfg, name, seed, per_class)
            | {
                "status": Status.OK.value,
                "method_config": fit.chosen | {"grid": fit.grid},
                "params": {
                    "trainable": fit.parameters,
                    "total": fit.parameters,
                    "base": fit.parameters,
                    "added": 0,
                    "trainable_pct": 100.0,
                    "kind": theory.NOT_DERIVED,
                    "mismatches": [],
                },
                "metrics": {
                    "val": {"accuracy": fit.val_accuracy, "examples": len(task.val), "scores": fit.val_scores},
                    "test": test_record(test, task),
                },
                "selection": {
                    "options": (
                        f"{ref.option} chosen on the validation split ({option})" if ref.option else "nothing to choose"
                    ),
                    "checkpoint": "the fitted model",
                    "test_evaluations": 1,
                },
                "tuning": None,
                "history": [],
                "time": {
                    "train_s": fit.fit_s + feature_s,
                    "eval_s": fit.predict_s,
                    "features_s": feature_s,
                    "total_s": fit.fit_s + fit.predict_s + feature_s,
                    "data_s": 0.0,
                },
                "throughput": {"train_img_s": len(task.train) / max(fit.fit_s + feature_s, 1e-9)},
                # what the reference holds: its inputs (pixels or features of the three splits) and its model
                "memory": {"peak_bytes": int(inputs + 8 * fit.parameters), "kind": "attributed"},
                "size": {"adapter_bytes": 4 * fit.parameters, "adapter_path": ""},
                "coverage": task.coverage,
                "data": data_record(task, spec, len(task.train)),
                "train": {"input": ref.input, **fit.extra},
                "env": environment(torch.device("cpu")),
            }
        )
    return out
