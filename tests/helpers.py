"""What many tests share: the `peftlab` command line on tiny data, load_task with keyword options, and a
factory of result records shaped like runs.worker.run_one's (for report and statistics tests)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from peftlab import cli, methods
from peftlab.config import DataOptions
from peftlab.data import load_task as _load_task
from peftlab.data.sources import FMNIST_DIR
from peftlab.results import SCHEMA_VERSION

FMNIST_OK = all((FMNIST_DIR / f).exists() for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"))
needs_fmnist = pytest.mark.skipif(
    not FMNIST_OK, reason=f"Fashion-MNIST not found in {FMNIST_DIR} (apt-get install dataset-fashion-mnist)"
)


def run_args(
    model: Path,
    dataset,
    out: Path,
    *extra: str,
    epochs: int | None = 3,
    batch_size: int | None = 8,
    baselines: str | None = "none",
) -> list[str]:
    """`peftlab run` on all the data of a tiny test dataset, quietly; epochs/batch_size None leave them to
    --config or the defaults; no reference baselines unless asked (baselines=None: the default set).
    Methods and the rest come in extra."""
    args = ["run", "--model", str(model), "--dataset", str(dataset), "--out", str(out), "--quiet"]
    args += ["--train-size", "0", "--test-size", "0", "--min-per-class", "1"]
    args += ["--epochs", str(epochs)] if epochs is not None else []
    args += ["--batch-size", str(batch_size)] if batch_size is not None else []
    args += ["--baselines", baselines] if baselines is not None else []
    return args + list(extra)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """peftlab main() on args: (exit code, stdout, stderr); a traceback anywhere fails the test."""
    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def load_task(dataset, spec, *, seed: int = 0, cache=None, warn=print, roles=("train", "val", "test"), **options):
    """data.load_task with the DataOptions given as keywords (min_per_class=1, test_split='test', ...)."""
    known = {f.name for f in fields(DataOptions)}
    assert set(options) <= known, sorted(set(options) - known)
    return _load_task(DataOptions(str(dataset), **options), spec, seed=seed, cache=cache, warn=warn, roles=roles)


# ---------------------------------------------------------------- fake results
NAMES = ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TRAINABLE = {"head": 325, "last": 50_309, "lora": 12_613, "full": 304_709}


def make_result(
    method: str,
    seed: int,
    acc: float,
    *,
    baseline: float = 0.15,
    status: str = "ok",
    label: str | None = None,
    val: float | None = None,
    **params,
) -> dict:
    """A result record shaped like runs.worker.run_one's, with round numbers: 100 test images, 20 per class,
    5 classes; test accuracy acc, validation accuracy val (default: acc), baseline: the validation accuracy
    before training; params overrides entries of 'params'."""
    m = methods.get(method)
    head = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "label": label or method,
        "seed": seed,
        "model": "tiny-model",
        "dataset": "toy-data",
        "method_config": m.config_cls().options(),
        "method_info": m.info(),
        "status": status,
        "run_name": f"{label or method}-seed{seed}",
    }
    if status != "ok":
        return head | {"error": "Diverged: the loss became nan at step 3"}
    k = len(NAMES)
    correct = round(acc * 20)
    confusion = [[correct if i == j else (20 - correct if j == (i + 1) % k else 0) for j in range(k)] for i in range(k)]
    trainable = TRAINABLE.get(method, 1000)
    p = {
        "trainable": trainable,
        "total": 304_709,
        "base": 304_709,
        "added": 0,
        "peft_all_params": 304_709,
        "trainable_pct": 100 * trainable / 304_709,
        "theory_trainable": trainable,
        "theory_total": 304_709,
        "theory_match": True,
        "mismatches": [],
        "kind": "theory",
    } | params
    per_class = {
        "per_class": dict.fromkeys(NAMES, 20),
        "examples": 100,
        "classes_present": k,
        "classes_total": k,
        "missing": [],
        "min_per_class": 20,
        "below_min": [],
    }
    return head | {
        "params": p,
        "metrics": {
            "val": {
                "accuracy": acc if val is None else val,
                "start_accuracy": baseline,
                "loss": 1.0,
                "examples": 50,
                "top5_accuracy": None,
                "macro_f1": acc - 0.02,
            },
            "test": {
                "accuracy": acc,
                "top5_accuracy": None,
                "macro_f1": acc - 0.01,
                "loss": 1.0,
                "examples": 100,
                "chance_accuracy": 0.2,
                "per_class_accuracy": {n: correct / 20 for n in NAMES},
                "confusion": confusion,
            },
        },
        "selection": {
            "options": "as given (defaults or options)",
            "checkpoint": "best validation accuracy",
            "epoch": 2,
            "epochs_trained": 2,
            "refit": "train",
            "test_evaluations": 1,
        },
        "tuning": None,
        "history": [
            {"epoch": 1, "train_loss": 1.2, "val_accuracy": (baseline + acc) / 2, "val_loss": 1.1, "seconds": 5.0},
            {
                "epoch": 2,
                "train_loss": 0.9,
                "val_accuracy": acc if val is None else val,
                "val_loss": 1.0,
                "seconds": 5.0,
            },
        ],
        "time": {"train_s": 10.0 + trainable / 10_000, "eval_s": 1.0, "total_s": 12.0 + trainable / 10_000},
        "throughput": {"train_img_s": 100.0, "steps": 10},
        "memory": {"peak_bytes": 500_000_000 + 100 * trainable, "kind": "process_peak_rss"},
        "size": {"adapter_bytes": 4 * trainable, "adapter_path": "adapter"},
        "coverage": {"train": per_class | {"examples": 200, "per_class": dict.fromkeys(NAMES, 40)}, "test": per_class},
        "data": {
            "label_names": NAMES,
            "train_examples": 200,
            "val_examples": 50,
            "test_examples": 100,
            "test_split": "test",
            "notes": [],
        },
        "train": {
            "epochs": 2,
            "batch_size": 64,
            "eval_batch_size": 256,
            "weight_decay": 0.01,
            "warmup_ratio": 0.1,
            "max_grad_norm": 1.0,
            "precision": "no",
        },
        "env": {"device": "cpu", "device_name": "x86_64"},
    }
