"""Datasets -> decoded uint8 tensors at the model's input size, sampled by class, coverage checked.

Every source (built-in Fashion-MNIST, hub id, image folder, save_to_disk folder) is first read as
*labels plus undecoded items*; sampling happens on the labels, and only the chosen items are decoded,
once per run, in parallel. Training then indexes the uint8 tensors: no per-epoch decoding.

Bad input never reaches training silently: an item that cannot be decoded (empty, truncated, not an
image) is skipped, replaced by an unused item of the same class where the split has one, counted in
Task.skipped and reported once; past ``max_bad_fraction`` of the items tried it is an error. Unlabelled
rows (-1) are dropped and counted; labels outside the label set, and classes without any training
example, are errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import DataOptions
from ..errors import UserError
from ..models import ImageSpec
from .decoding import DecodeCache, Split, decode_sample, skip_stats
from .sampling import coverage, coverage_problems, stratified_indices
from .sources import EXAMPLES_SHOWN, IMAGE_SUFFIXES, RawSplit, read_source


@dataclass
class Task:
    name: str
    label_names: list[str]
    train: Split
    eval: Split
    coverage: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # per split ("train", "eval"): what was left out and why; see skip_stats() for the keys
    skipped: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------- the whole task
def _check_labels(raw: RawSplit, names: list[str], split_key: str, stats: dict) -> RawSplit:
    """Labels outside 0..C-1 are an error; unlabelled rows (-1, datasets' "no label") are dropped and counted."""
    outside = (raw.labels < -1) | (raw.labels >= len(names))
    if outside.any():
        values = ", ".join(str(v) for v in np.unique(raw.labels[outside])[:5])
        raise UserError(
            f"{raw.name} split has {int(outside.sum())} label(s) outside the {len(names)} classes "
            f"(values {values}; valid are 0..{len(names) - 1}, or -1 for 'no label'); fix the label "
            "column or its ClassLabel names"
        )
    unlabelled = raw.labels == -1
    if unlabelled.all() and len(raw.labels):
        option = "--train-split" if split_key == "train" else "--eval-split"
        raise UserError(
            f"{raw.name} split has no labels (all {len(raw.labels)} are -1, which datasets uses "
            f"for 'no label', e.g. in hidden test splits); pass {option} with a labelled split"
        )
    if unlabelled.any():
        stats["unlabelled"] += int(unlabelled.sum())
        raw = raw.subset(np.flatnonzero(~unlabelled))
    return raw


def _check_every_class_trains(train: RawSplit, names: list[str], held_out: int = 0) -> None:
    empty = [names[i] for i in np.flatnonzero(np.bincount(train.labels, minlength=len(names)) == 0)]
    if not empty:
        return
    shown = ", ".join(f"'{n}'" for n in empty[:5]) + (" ..." if len(empty) > 5 else "")
    many = len(empty) > 1
    if held_out:
        where = f"none left after holding out {held_out} images for evaluation"
        todo = "add images, or an evaluation split (ROOT/test/<class>/ or --eval-split)"
    elif train.folder is not None:
        where = (
            f"folder '{train.folder / empty[0]}' has" if not many else f"their folders in '{train.folder}' have"
        ) + " no image files"
        todo = "add images, or remove the folder" + ("s" if many else "")
    else:
        where = f"none in the {train.name} split"
        todo = "pass a --train-split that has every class, or a dataset whose class names match its labels"
    raise UserError(
        f"class{'es' if many else ''} {shown} ha{'ve' if many else 's'} no training examples "
        f"({where}); a class without training examples cannot be learned: {todo}"
    )


def _skip_warnings(skipped: dict) -> list[str]:
    """One line per kind of thing left out, over both splits."""
    out = []
    tr, ev = skipped["train"], skipped["eval"]
    if tr["unlabelled"] or ev["unlabelled"]:
        parts = [f"{k} {s['unlabelled']}" for k, s in skipped.items() if s["unlabelled"]]
        out.append(f"skipped rows without a label (-1): {', '.join(parts)}")
    if tr["not_images"] or ev["not_images"]:
        n = tr["not_images"] + ev["not_images"]
        shown = ", ".join((tr["not_image_examples"] + ev["not_image_examples"])[:EXAMPLES_SHOWN])
        out.append(
            f"ignored {n} file(s) in class folders that are not images by their type (e.g. {shown}); "
            f"image types read: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    if tr["unreadable"] or ev["unreadable"]:
        parts = [
            f"{k} {s['unreadable']} of {s['tried']} tried"
            + (f", {s['replaced']} replaced by other images of the same class" if s["replaced"] else "")
            + (f", {s['dropped']} fewer images" if s["dropped"] else "")
            for k, s in (("train", tr), ("eval", ev))
            if s["unreadable"]
        ]
        shown = "; ".join((tr["unreadable_examples"] + ev["unreadable_examples"])[:EXAMPLES_SHOWN])
        out.append(f"skipped unreadable images: {'; '.join(parts)} (e.g. {shown})")
    return out


def load_task(
    options: DataOptions,
    spec: ImageSpec,
    *,
    seed: int = 0,
    cache: DecodeCache | None = None,
    warn: Callable[[str], None] = print,
    decode_train: bool = True,
) -> Task:
    """Read, sample (seeded, stratified), decode and check a dataset for one model. decode_train=False
    (evaluating a saved run) decodes the eval split only: Task.train is then empty and unchecked. cache
    (owned by the caller, e.g. a Worker) lets later calls reuse images decoded here.

    Unreadable images are replaced by unused ones of the same class where the split has them (else the
    sample shrinks), counted in Task.skipped, noted and warned about once; more than max_bad_fraction of the
    images tried in a split is an error. Coverage is measured on what was decoded."""
    o = options
    dataset, max_bad_fraction, min_per_class = o.dataset, o.max_bad_fraction, o.min_per_class
    if not 0 <= max_bad_fraction <= 1:
        raise UserError(f"--max-bad-fraction must be between 0 and 1 (got {max_bad_fraction:g})")
    names, train, held = read_source(dataset, o.image_column, o.label_column, o.train_split, o.eval_split)
    notes: list[str] = []
    if len(names) < 2:
        found = f" (only '{names[0]}')" if names else ""
        hint = "; lay the folder out as one subfolder per class" if train.folder is not None else ""
        raise UserError(
            f"dataset '{dataset}' has {len(names)} class{'es' if len(names) != 1 else ''}; a classifier "
            f"needs at least 2{found}{hint}"
        )
    skipped = {"train": skip_stats(), "eval": skip_stats()}
    for split_key, raw in (("train", train), ("eval", held)):
        if raw is not None:
            skipped[split_key].update(
                not_images=len(raw.not_images), not_image_examples=raw.not_images[:EXAMPLES_SHOWN]
            )
    if len(train.labels) == 0:
        raise UserError(f"dataset '{dataset}' has no training images")
    train = _check_labels(train, names, "train", skipped["train"])
    if held is not None and len(held.labels) and (held.labels == -1).all() and o.eval_split is None:
        warn(f"WARNING the {held.name} split has no labels (all -1): holding out part of {train.name} instead")
        notes.append(f"the {held.name} split has no labels (all -1)")
        held = None
    if held is not None:
        held = _check_labels(held, names, "eval", skipped["eval"])
        if len(held.labels) == 0:
            todo = "remove the folder" if held.folder is not None else "pass --eval-split with another split"
            raise UserError(
                f"the {held.name} split has no images; add some, or {todo} to evaluate on a held-out "
                f"part of {train.name}"
            )
    if decode_train:
        _check_every_class_trains(train, names)
    n_pool = len(train.labels)
    if held is None:  # no held-out split: hold out a stratified fraction of train for evaluation
        n_eval = max(len(names), int(round(o.holdout * len(train.labels))))
        ev = stratified_indices(train.labels, n_eval, seed)
        held = train.subset(ev, f"{train.name} (held out {o.holdout:.0%})")
        train = train.subset(np.setdiff1d(np.arange(len(train.labels)), ev))
        notes.append(f"no validation/test split: evaluating on {len(ev)} held-out training images")
        if decode_train:
            _check_every_class_trains(train, names, held_out=len(ev))
    what = f"training images in '{train.name}'" + (
        f" after holding out {n_pool - len(train.labels)} for evaluation" if len(train.labels) < n_pool else ""
    )
    tr_idx = (
        (
            stratified_indices(train.labels, o.train_size, seed, what=what, option="--train-size")
            if o.train_size
            else np.arange(len(train.labels))
        )
        if decode_train
        else np.arange(0)
    )
    ev_idx = (
        stratified_indices(
            held.labels, o.eval_size, seed + 1, what=f"evaluation images in '{held.name}'", option="--eval-size"
        )
        if o.eval_size
        else np.arange(len(held.labels))
    )
    decoded = {}
    for split_key, pool, idx, s in (("train", train, tr_idx, seed), ("eval", held, ev_idx, seed + 1)):
        if split_key == "train" and not decode_train:
            decoded["train"] = Split(
                pool.name,
                torch.empty((0, spec.channels, spec.height, spec.width), dtype=torch.uint8),
                torch.empty(0, dtype=torch.int64),
            )
            continue
        decoded[split_key] = decode_sample(
            pool,
            idx,
            spec,
            seed=s,
            max_bad_fraction=max_bad_fraction,
            split_key=split_key,
            stats=skipped[split_key],
            cache=cache,
        )
        if len(decoded[split_key]) == 0:
            raise UserError(
                f"no readable images left in the {split_key} split ({pool.name}); fix or remove the unreadable files"
            )
    for line in _skip_warnings(skipped):
        warn(f"WARNING {line}")
        notes.append(line)
    cov = {}
    for split_key in ("train", "eval") if decode_train else ("eval",):
        cov[split_key] = coverage(decoded[split_key].labels.numpy(), names, min_per_class)
        for problem in coverage_problems(cov[split_key], split_key, min_per_class):
            if o.strict_coverage:
                raise UserError(f"class coverage: {problem} (drop --strict-coverage to continue anyway)")
            warn(f"WARNING class coverage: {problem}")
            notes.append(problem)
    return Task(dataset, names, decoded["train"], decoded["eval"], cov, notes, skipped)
