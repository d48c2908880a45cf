"""The parts of a run's result record that runs and reference baselines share: test metrics with
per-image correctness, the data record, the identities file, throughput."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..data import Task, is_mapped
from ..training import FitResult
from ..training.measure import peak_flops


def test_record(test: dict, task: Task) -> dict:
    """metrics.test of a result: the scores, the chance level, per class, the confusion matrix, and each test
    image's correctness (hex of the packed bits, in test order) with the test set's digest, so that two runs
    of one seed can be compared image by image (McNemar) from their result files alone."""
    counts = np.bincount(task.test.labels.numpy(), minlength=task.num_classes)
    correct = np.asarray(test["predicted"]) == task.test.labels.numpy()
    return {
        **{k: test[k] for k in ("accuracy", "top5_accuracy", "macro_f1", "loss", "examples")},
        # the best a model that ignores the image can do: always predict the most frequent class
        "chance_accuracy": float(counts.max() / counts.sum()),
        "per_class_accuracy": dict(zip(task.label_names, test["per_class_accuracy"])),
        "confusion": test["confusion"],
        "correct": np.packbits(correct).tobytes().hex(),
        "digest": test_digest(task),
    }


def test_digest(task: Task) -> str:
    """Which test images, in which order: a hash of their content hashes (equal digests: the same test set)."""
    return hashlib.blake2b(task.test.hashes().tobytes(), digest_size=8).hexdigest()


IDENTITIES = "identities.npz"  # beside result.json: which images the run trained, validated and tested on


def save_identities(path: Path, task: Task, test: dict | None) -> None:
    """Every training, validation and test image's identity (its row in the dataset's split and a content
    hash), and the test predictions, compactly (numpy .npz): what 'peftlab eval' excludes, what paired
    tests compare image by image."""
    arrays = {}
    for role in ("train", "val", "test"):
        split = getattr(task, role)
        arrays[f"{role}_row"], arrays[f"{role}_hash"] = split.origin, split.hashes()
    arrays["test_label"] = task.test.labels.numpy()
    if test is not None:
        arrays["test_predicted"] = np.asarray(test["predicted"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _config_of(model):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def throughput(out: FitResult, accelerator) -> dict:
    """Images per second over all processes, and what that is in FLOP/s and of the device's peak."""
    img_s = out.images_seen / out.train_s
    achieved = out.flops_per_image * img_s  # FLOP/s of the training steps, all processes
    peak = peak_flops(accelerator.device, accelerator.mixed_precision)
    return {
        "train_img_s": img_s,
        "steps": out.steps,
        "processes": out.processes,
        "train_flops_per_image": out.flops_per_image,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (peak * out.processes) if peak else None,
    }


def data_record(task: Task, spec, train_examples: int) -> dict:
    """result.json's 'data': what the run read, how the splits were made, the input geometry."""
    return {
        "label_names": task.label_names,
        "train_examples": train_examples,
        # --train-sizes: this many training images per class, nested in the seed's sample (None: all of it)
        "train_per_class": task.splits.get("train", {}).get("per_class"),
        "val_examples": len(task.val),
        "test_examples": len(task.test),
        "test_split": task.test.name,
        "splits": task.splits,
        "identities": IDENTITIES,
        "notes": task.notes,
        "skipped": task.skipped,
        "storage": "memory-mapped file" if is_mapped(task.train.images) else "memory",
        "image_size": [spec.height, spec.width],
        "channels": spec.channels,
        "normalization": {
            "mean": list(spec.mean),
            "std": list(spec.std),
            "rescale": spec.rescale,
            "from": "defaults: " + spec.fallback if spec.fallback else "image processor",
        },
    }
