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
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..config import DEFAULT_TEST_SIZE, DEFAULT_TRAIN_SIZE, DEFAULT_VAL_SIZE, DataOptions
from ..errors import UserError
from ..models import ImageSpec
from .decoding import DecodeCache, Split, decode_sample, skip_stats
from .sampling import coverage, coverage_problems, per_class_indices, stratified_indices
from .sources import EXAMPLES_SHOWN, IMAGE_SUFFIXES, ROLES, RawSplit, read_source


@dataclass
class Task:
    """One run's data: a training sample, a validation set (what every choice is made on) and a test set
    (scored once per final run), decoded at the model's input size; what was left out and why."""

    name: str
    label_names: list[str]
    train: Split
    val: Split
    test: Split
    coverage: dict = field(default_factory=dict)  # per role
    notes: list[str] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # per role: what was left out and why (see skip_stats)
    splits: dict = field(default_factory=dict)  # per role: source, how it was made, size; "check": disjointness

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------- the whole task
def _check_labels(raw: RawSplit, names: list[str], role: str, stats: dict) -> RawSplit:
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
        raise UserError(
            f"{raw.name} split has no labels (all {len(raw.labels)} are -1, which datasets uses "
            f"for 'no label', e.g. in hidden test splits); pass --{role}-split with a labelled split"
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
        where = f"none left after holding out {held_out} images for validation and test"
        todo = "add images, or validation and test splits (ROOT/val/<class>/, ROOT/test/<class>/ or --test-split)"
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
    """One line per kind of thing left out, over every split."""
    out = []
    roles = [r for r in ROLES if r in skipped]
    if any(skipped[r]["unlabelled"] for r in roles):
        parts = [f"{r} {skipped[r]['unlabelled']}" for r in roles if skipped[r]["unlabelled"]]
        out.append(f"skipped rows without a label (-1): {', '.join(parts)}")
    if any(skipped[r]["not_images"] for r in roles):
        n = sum(skipped[r]["not_images"] for r in roles)
        shown = ", ".join([e for r in roles for e in skipped[r]["not_image_examples"]][:EXAMPLES_SHOWN])
        out.append(
            f"ignored {n} file(s) in class folders that are not images by their type (e.g. {shown}); "
            f"image types read: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    if any(skipped[r]["unreadable"] for r in roles):
        parts = [
            f"{r} {s['unreadable']} of {s['tried']} tried"
            + (f", {s['replaced']} replaced by other images of the same class" if s["replaced"] else "")
            + (f", {s['dropped']} fewer images" if s["dropped"] else "")
            for r, s in ((r, skipped[r]) for r in roles)
            if s["unreadable"]
        ]
        shown = "; ".join([e for r in roles for e in skipped[r]["unreadable_examples"]][:EXAMPLES_SHOWN])
        out.append(f"skipped unreadable images: {'; '.join(parts)} (e.g. {shown})")
    return out


def _size(asked: int | None, default: int, available: int, option: str, what: str, notes: list[str]) -> int:
    """How many to sample: asked (0 = all; more than there are is an error), or the default, which shrinks
    to what there is rather than fail (for the training sample, the run says so)."""
    if asked is None:
        if available < default:
            if option == "--train-size":
                notes.append(f"{what}: all {available} (fewer than the default {option} {default})")
            return available
        return default
    if asked == 0:
        return available
    if asked > available:
        raise UserError(f"asked for {asked} {what} but there are only {available}; lower {option} or pass 0 for all")
    return asked


def _sample(pool: RawSplit, role: str, o: DataOptions, names: list[str], seed, default: int, notes: list[str]):
    """The indices of pool that make this role's sample: k per class (--<role>-per-class) or a stratified
    sample of --<role>-size."""
    per_class = getattr(o, f"{role}_per_class", None)
    what = f"{'training' if role == 'train' else role} images in '{pool.name}'"
    if per_class:
        return per_class_indices(pool.labels, per_class, names, seed, what=what, option=f"--{role}-per-class")
    n = _size(getattr(o, f"{role}_size"), default, len(pool.labels), f"--{role}-size", what, notes)
    if n == len(pool.labels):  # all of it: in its own order
        return np.arange(n)
    return stratified_indices(pool.labels, n, seed, what=what, option=f"--{role}-size")


def _carve(pool: RawSplit, n: int, seed, name: str) -> tuple[RawSplit, RawSplit]:
    """A stratified, seeded slice of n items out of pool -> (slice, the rest)."""
    idx = stratified_indices(pool.labels, n, seed, what=f"images in '{pool.name}'")
    rest = np.setdiff1d(np.arange(len(pool.labels)), idx)
    return pool.subset(np.sort(idx), name), pool.subset(rest)


def split_check(splits: dict[str, Split]) -> dict:
    """The three splits are disjoint: no source row in two of them (when they share a source split), and
    how many images of one are pixel-identical (content hash) to an image of another."""
    rows, dupes = {}, {}
    pairs = [("train", "val"), ("train", "test"), ("val", "test")]
    hashes = {r: set(s.hashes().tolist()) for r, s in splits.items() if len(s)}
    for a, b in pairs:
        sa, sb = splits.get(a), splits.get(b)
        if sa is None or sb is None or not len(sa) or not len(sb):
            continue
        same_source = sa.source == sb.source
        rows[f"{a}-{b}"] = len(np.intersect1d(sa.origin, sb.origin)) if same_source else 0
        dupes[f"{a}-{b}"] = len(hashes[a] & hashes[b])
    return {"shared_rows": rows, "identical_images": dupes, "disjoint": not any(rows.values())}


def load_task(
    options: DataOptions,
    spec: ImageSpec,
    *,
    seed: int = 0,
    cache: DecodeCache | None = None,
    warn: Callable[[str], None] = print,
    roles: tuple[str, ...] = ROLES,
) -> Task:
    """Read, split, sample (seeded, stratified), decode and check a dataset for one model.

    Train, validation and test: validation is the dataset's own validation split when it also has a test
    split; otherwise a stratified, seeded slice of the training split. Test is the dataset's test split,
    else its validation split (the validation set is then carved from train), else a held-out slice of the
    training split. Only the roles asked for are decoded (a saved run's eval decodes the test split only).
    The three are checked disjoint (source rows and content hashes) and the check is recorded.

    Unreadable images are replaced by unused ones of the same class where the split has them (else the
    sample shrinks), counted in Task.skipped, noted and warned about once; more than max_bad_fraction of the
    images tried in a split is an error. Coverage is measured on what was decoded."""
    o = options
    dataset, max_bad_fraction, min_per_class = o.dataset, o.max_bad_fraction, o.min_per_class
    if not 0 <= max_bad_fraction <= 1:
        raise UserError(f"--max-bad-fraction must be between 0 and 1 (got {max_bad_fraction:g})")
    names, raw = read_source(dataset, o.image_column, o.label_column, o.split_names())
    train = raw["train"]
    notes: list[str] = []
    if len(names) < 2:
        found = f" (only '{names[0]}')" if names else ""
        hint = "; lay the folder out as one subfolder per class" if train.folder is not None else ""
        raise UserError(
            f"dataset '{dataset}' has {len(names)} class{'es' if len(names) != 1 else ''}; a classifier "
            f"needs at least 2{found}{hint}"
        )
    skipped = {r: skip_stats() for r in ROLES}
    for role, split in raw.items():
        if split is not None:
            skipped[role].update(not_images=len(split.not_images), not_image_examples=split.not_images[:EXAMPLES_SHOWN])
    if len(train.labels) == 0:
        raise UserError(f"dataset '{dataset}' has no training images")
    train = _check_labels(train, names, "train", skipped["train"])
    for role in ("val", "test"):
        split = raw[role]
        if split is not None and len(split.labels) and (split.labels == -1).all() and not o.split_names()[role]:
            warn(f"WARNING the {split.name} split has no labels (all -1): not used as the {role} split")
            notes.append(f"the {split.name} split has no labels (all -1)")
            raw[role] = None
        elif split is not None:
            raw[role] = _check_labels(split, names, role, skipped[role])
            if len(raw[role].labels) == 0:
                todo = "remove the folder" if split.folder is not None else f"pass --{role}-split with another split"
                raise UserError(f"the {split.name} split has no images; add some, or {todo}")
    if "train" in roles:
        _check_every_class_trains(train, names)
    val, test = raw["val"], raw["test"]
    how = {"train": f"sample of the '{train.name}' split"}
    if test is None and val is not None and not o.val_split:  # the dataset's one held-out split is the test
        test, val = val, None
        notes.append(f"no test split: the '{test.name}' split is the test split; validation is carved from training")
    n_pool = len(train.labels)
    if test is None:  # hold out a stratified share of train as the test split
        n_test = max(len(names), int(round(o.holdout * len(train.labels))))
        test, train = _carve(train, n_test, [seed, 3], f"{train.name} (held out {o.holdout:.0%})")
        notes.append(f"no test split: testing on {len(test.labels)} held-out training images")
        how["test"] = f"held-out {o.holdout:.0%} of the '{train.source}' split"
    else:
        how["test"] = f"the dataset's '{test.name}' split"
    if val is None:  # carve the validation set out of what is left for training
        if o.val_per_class:
            idx = per_class_indices(
                train.labels,
                o.val_per_class,
                names,
                [seed, 1],
                what=f"training images in '{train.name}'",
                option="--val-per-class",
            )
            val, train = (
                train.subset(np.sort(idx), f"{train.name} (validation)"),
                train.subset(np.setdiff1d(np.arange(len(train.labels)), idx)),
            )
        else:
            default = min(DEFAULT_VAL_SIZE, max(len(names), int(round(o.val_fraction * len(train.labels)))))
            n_val = _size(o.val_size, default, len(train.labels), "--val-size", f"images in '{train.name}'", notes)
            if n_val >= len(train.labels):
                raise UserError(
                    f"--val-size {n_val} leaves no training images in '{train.name}' "
                    f"({len(train.labels)} after any test hold-out); lower --val-size"
                )
            val, train = _carve(train, n_val, [seed, 1], f"{train.name} (validation)")
        how["val"] = f"stratified slice of the '{train.source}' split, disjoint from the training sample"
        val_idx = np.arange(len(val.labels))
    else:
        how["val"] = f"the dataset's '{val.name}' split"
        val_idx = _sample(val, "val", o, names, [seed, 1], DEFAULT_VAL_SIZE, notes)
    if "train" in roles:
        _check_every_class_trains(train, names, held_out=n_pool - len(train.labels))
    tr_idx = _sample(train, "train", o, names, [seed, 0], DEFAULT_TRAIN_SIZE, notes) if "train" in roles else []
    te_idx = _sample(test, "test", o, names, [seed, 2], DEFAULT_TEST_SIZE, notes)
    decoded: dict[str, Split] = {}
    for role, pool, idx, s in (
        ("train", train, tr_idx, seed),
        ("val", val, val_idx, seed + 2),
        ("test", test, te_idx, seed + 1),
    ):
        if role not in roles:
            decoded[role] = Split(
                pool.name,
                torch.empty((0, spec.channels, spec.height, spec.width), dtype=torch.uint8),
                torch.empty(0, dtype=torch.int64),
                np.zeros(0, dtype=np.int64),
                pool.source,
            )
            continue
        decoded[role] = decode_sample(
            pool,
            np.asarray(idx),
            spec,
            seed=s,
            max_bad_fraction=max_bad_fraction,
            split_key=role,
            stats=skipped[role],
            cache=cache,
        )
        if len(decoded[role]) == 0:
            raise UserError(
                f"no readable images left in the {role} split ({pool.name}); fix or remove the unreadable files"
            )
    for line in _skip_warnings(skipped):
        warn(f"WARNING {line}")
        notes.append(line)
    cov = {}
    for role in roles:
        cov[role] = coverage(decoded[role].labels.numpy(), names, min_per_class)
        for problem in coverage_problems(cov[role], role, min_per_class):
            if o.strict_coverage:
                raise UserError(f"class coverage: {problem} (drop --strict-coverage to continue anyway)")
            warn(f"WARNING class coverage: {problem}")
            notes.append(problem)
    check = split_check({r: decoded[r] for r in roles})
    if not check["disjoint"]:  # by construction this cannot happen: a bug, never a silent leak
        raise RuntimeError(f"train/validation/test share source rows: {check['shared_rows']}")
    for pair, n in check["identical_images"].items():
        if n:
            a, b = pair.split("-")
            line = (
                f"{n} {b} image(s) are pixel-identical to {a} images (the dataset holds duplicates across "
                "splits): scores on them are not held-out"
            )
            warn(f"WARNING {line}")
            notes.append(line)
    splits = {role: {"source": decoded[role].source, "how": how[role], "size": len(decoded[role])} for role in roles}
    return Task(
        dataset,
        names,
        decoded["train"],
        decoded["val"],
        decoded["test"],
        cov,
        notes,
        {r: skipped[r] for r in roles},
        splits | {"check": check},
    )


def per_class_subsample(task: Task, k: int) -> tuple[Task, np.ndarray]:
    """The task with only the first k training images of each class (the training sample is in seeded random
    order, so these are a random k, and the samples of growing k are nested); validation and test unchanged.
    Returns it and the kept positions in task.train (for reusing what was computed on the whole sample)."""
    labels = task.train.labels.numpy()
    keep = []
    for c, name in enumerate(task.label_names):
        pos = np.flatnonzero(labels == c)
        if len(pos) < k:
            raise UserError(
                f"class '{name}' has only {len(pos)} training images in the sample, fewer than the --train-sizes "
                f"entry {k}; lower it, or raise --train-size (0 = the whole split)"
            )
        keep.append(pos[:k])
    idx = np.sort(np.concatenate(keep))  # the sample's own (random) order
    tr = task.train
    train = Split(tr.name, tr.images[idx], tr.labels[idx], tr.origin[idx], tr.source)
    cov = task.coverage | {"train": coverage(train.labels.numpy(), task.label_names, 1)}  # k each, as asked
    splits = task.splits | {"train": task.splits["train"] | {"size": len(train), "per_class": k}}
    notes = task.notes + [f"training sample: the first {k} images of each class of the seed's sample"]
    return replace(task, train=train, coverage=cov, splits=splits, notes=notes), idx
