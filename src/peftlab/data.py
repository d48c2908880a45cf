"""Datasets -> decoded uint8 tensors at the model's input size, sampled by class, coverage checked.

Every source (built-in Fashion-MNIST, hub id, image folder, save_to_disk folder) is first read as
*labels plus undecoded items*; sampling happens on the labels, and only the chosen items are decoded,
once per run, in parallel. Training then indexes the uint8 tensors: no per-epoch decoding.
"""

from __future__ import annotations

import gzip
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .models import ImageSpec

FMNIST_DIR = Path(os.environ.get("PEFTLAB_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FMNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FMNIST_TASKS = {"fashion-mnist:0-4": range(0, 5), "fashion-mnist:5-9": range(5, 10),
                "fashion-mnist:all": range(0, 10)}
DEFAULT_DATASET = "fashion-mnist:5-9"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")


@dataclass
class RawSplit:
    """Labels (already 0..C-1) and one undecoded item per example; decode(item) -> PIL or array."""

    name: str
    labels: np.ndarray
    items: Sequence[Any]
    decode: Callable[[Any], Any]

    def subset(self, idx: np.ndarray, name: str | None = None) -> "RawSplit":
        items = self.items.select(idx) if hasattr(self.items, "select") else [self.items[i] for i in idx]
        return RawSplit(name or self.name, self.labels[idx], items, self.decode)


@dataclass
class Split:
    name: str
    images: torch.Tensor  # uint8 [N, C, H, W] at the model's input size
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Task:
    name: str
    label_names: list[str]
    train: Split
    eval: Split
    coverage: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------- sources
def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(spec: str) -> tuple[list[str], RawSplit, RawSplit]:
    classes = list(FMNIST_TASKS[spec])
    files = {s: (FMNIST_DIR / f"{p}-images-idx3-ubyte.gz", FMNIST_DIR / f"{p}-labels-idx1-ubyte.gz")
             for s, p in (("train", "train"), ("test", "t10k"))}
    if not all(f.exists() for pair in files.values() for f in pair):
        raise UserError(f"Fashion-MNIST files not found in {FMNIST_DIR}; install them with "
                        "'sudo apt-get install -y dataset-fashion-mnist' (or set PEFTLAB_FMNIST_DIR), "
                        "or pass --dataset with another dataset")
    remap = np.full(10, -1)
    remap[classes] = np.arange(len(classes))
    splits = []
    for name, (img_f, lab_f) in files.items():
        images, labels = _read_idx(img_f), _read_idx(lab_f)
        keep = np.flatnonzero(remap[labels] >= 0)
        splits.append(RawSplit(name, remap[labels[keep]], images[keep], _identity))
    return [FMNIST_NAMES[c] for c in classes], splits[0], splits[1]


def _identity(x):
    return x


def _open_image(item) -> Any:
    """A path, bytes, a {'bytes', 'path'} dict or a PIL image -> PIL image (lazily decoded)."""
    from PIL import Image

    if isinstance(item, dict):
        item = item.get("bytes") or item.get("path")
    if isinstance(item, (bytes, bytearray)):
        return Image.open(io.BytesIO(item))
    if isinstance(item, (str, Path)):
        return Image.open(item)
    return item


def _image_folder(root: Path) -> tuple[list[str], RawSplit, RawSplit | None]:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    train_dir = subdirs.get("train")
    eval_dir = next((subdirs[n] for n in EVAL_SPLIT_NAMES if n in subdirs), None) if train_dir else None
    base = train_dir or root
    names = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not names:
        raise UserError(f"image folder '{root}' has no class subfolders; lay it out as "
                        "ROOT/<class>/<image> (optionally ROOT/train/<class>/... and ROOT/test/<class>/...)")

    def scan(d: Path, split: str) -> RawSplit:
        paths, labels = [], []
        for i, n in enumerate(names):
            for f in sorted((d / n).rglob("*")) if (d / n).is_dir() else []:
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(str(f))
                    labels.append(i)
        return RawSplit(split, np.asarray(labels, dtype=np.int64), paths, _open_image)

    return names, scan(base, "train"), scan(eval_dir, eval_dir.name) if eval_dir else None


def _hf_dataset(dsd, image_column: str | None, label_column: str | None,
                train_split: str | None, eval_split: str | None) -> tuple[list[str], RawSplit, RawSplit | None]:
    from datasets import ClassLabel, Dataset, DatasetDict, Image

    if isinstance(dsd, Dataset):
        dsd = DatasetDict({train_split or "train": dsd})
    train_name = train_split or ("train" if "train" in dsd else next(iter(dsd)))
    if train_name not in dsd:
        raise UserError(f"dataset has no split '{train_name}'; it has: {', '.join(dsd)}")
    eval_name = eval_split or next((n for n in EVAL_SPLIT_NAMES if n in dsd and n != train_name), None)
    if eval_name is not None and eval_name not in dsd:
        raise UserError(f"dataset has no split '{eval_name}'; it has: {', '.join(dsd)}")
    feats = dsd[train_name].features
    image_column = image_column or next((k for k, v in feats.items() if isinstance(v, Image)), None)
    label_column = label_column or next((k for k, v in feats.items() if isinstance(v, ClassLabel)), None)
    label_column = label_column or next((k for k in ("label", "labels") if k in feats), None)
    for what, col in (("image", image_column), ("label", label_column)):
        if col is None or col not in feats:
            raise UserError(f"cannot find the {what} column (columns: {', '.join(feats)}); "
                            f"pass --{what}-column")
    if isinstance(feats[label_column], ClassLabel):
        names = list(feats[label_column].names)
        to_id = None
    else:
        names = sorted({str(v) for s in dsd.values() for v in s[label_column]})
        to_id = {n: i for i, n in enumerate(names)}

    def raw(split: str) -> RawSplit:
        ds = dsd[split]
        labels = ds[label_column]
        labels = np.asarray([to_id[str(v)] for v in labels] if to_id else labels, dtype=np.int64)
        if isinstance(ds.features[image_column], Image):
            ds = ds.cast_column(image_column, Image(decode=False))
        return RawSplit(split, labels, _Column(ds, image_column), _open_image)

    return names, raw(train_name), raw(eval_name) if eval_name else None


class _Column:
    """One column of a datasets.Dataset, indexable without decoding the others."""

    def __init__(self, ds, col: str):
        self.ds, self.col = ds, col

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[int(i)][self.col]

    def select(self, idx) -> "_Column":
        return _Column(self.ds.select(np.asarray(idx)), self.col)


def read_source(dataset: str, image_column: str | None = None, label_column: str | None = None,
                train_split: str | None = None, eval_split: str | None = None):
    """Any supported --dataset -> (label names, train RawSplit, eval RawSplit or None)."""
    if dataset in FMNIST_TASKS:
        return _fashion_mnist(dataset)
    if dataset.startswith("fashion-mnist:"):
        raise UserError(f"unknown built-in task '{dataset}'; built-in tasks: {', '.join(FMNIST_TASKS)}")
    path = Path(dataset).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            from datasets import load_from_disk

            return _hf_dataset(load_from_disk(str(path)), image_column, label_column, train_split, eval_split)
        return _image_folder(path)
    if path.exists() or dataset.startswith((".", "/", "~")):
        what = "is not a folder" if path.exists() else "does not exist"
        raise UserError(f"dataset '{dataset}' {what}; pass an image folder, a save_to_disk "
                        f"folder, a hub dataset id or one of: {', '.join(FMNIST_TASKS)}")
    from datasets import load_dataset

    try:
        dsd = load_dataset(dataset)
    except Exception as e:  # the hub raises many types; all mean "cannot get it"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load dataset '{dataset}': {first}") from e
    return _hf_dataset(dsd, image_column, label_column, train_split, eval_split)


# ---------------------------------------------------------------- sampling and coverage
def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices with each class represented in proportion (largest remainder), seeded, shuffled."""
    if n > len(labels):
        raise UserError(f"asked for {n} examples but the split has only {len(labels)}; "
                        "lower --train-size/--eval-size or pass 0 for all")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take)]
    return rng.permutation(np.concatenate(picked)) if picked else np.array([], dtype=int)


def coverage(labels: np.ndarray, names: list[str], min_per_class: int) -> dict:
    counts = np.bincount(labels, minlength=len(names))
    return {
        "examples": int(len(labels)),
        "classes_present": int((counts > 0).sum()),
        "classes_total": len(names),
        "missing": [names[i] for i in np.flatnonzero(counts == 0)],
        "min_per_class": int(counts.min()) if len(counts) else 0,
        "below_min": [names[i] for i in np.flatnonzero((counts > 0) & (counts < min_per_class))],
        "per_class": {n: int(c) for n, c in zip(names, counts)},
    }


def coverage_problems(cov: dict, split: str, min_per_class: int) -> list[str]:
    out = []
    if cov["missing"]:
        shown = ", ".join(cov["missing"][:5]) + (" ..." if len(cov["missing"]) > 5 else "")
        out.append(f"{split} split misses {len(cov['missing'])} of {cov['classes_total']} classes ({shown})")
    if cov["below_min"]:
        out.append(f"{split} split has fewer than {min_per_class} examples for "
                   f"{len(cov['below_min'])} classes ({', '.join(cov['below_min'][:5])})")
    return out


# ---------------------------------------------------------------- decoding
def _pil_to_array(img, spec: ImageSpec) -> np.ndarray:
    from PIL import Image, ImageOps

    img.draft("RGB" if spec.channels == 3 else "L", (spec.width, spec.height))  # JPEG: decode smaller
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit: scale to 8 bits before converting
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr * 255.0 / max(arr.max(), 1)).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # composite transparency on white, not black
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    img = img.convert("RGB" if spec.channels == 3 else "L").resize((spec.width, spec.height), Image.BILINEAR)
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _fit_arrays(arr: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """uint8 [N, H, W] or [N, C, H, W] -> uint8 [N, C, H', W'] matching the spec."""
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[:, None] if x.ndim == 3 else x
    if x.shape[1] != spec.channels:
        x = x.float().mean(1, keepdim=True).round().to(torch.uint8) if spec.channels == 1 else x[:, :1].expand(
            -1, spec.channels, -1, -1)
    if tuple(x.shape[2:]) != (spec.height, spec.width):
        x = F.interpolate(x.float(), size=(spec.height, spec.width), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def decode(raw: RawSplit, spec: ImageSpec, workers: int | None = None) -> Split:
    """Decode every item once into one uint8 tensor (threads: PIL releases the GIL while decoding)."""
    labels = torch.from_numpy(np.asarray(raw.labels, dtype=np.int64))
    if isinstance(raw.items, np.ndarray):
        return Split(raw.name, _fit_arrays(raw.items, spec), labels)
    out = torch.empty((len(raw.labels), spec.channels, spec.height, spec.width), dtype=torch.uint8)

    def one(i: int) -> None:
        img = raw.decode(raw.items[i])
        out[i] = torch.from_numpy(_pil_to_array(img, spec)) if not isinstance(img, np.ndarray) \
            else _fit_arrays(img[None], spec)[0]

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(raw.labels))))
    return Split(raw.name, out, labels)


# ---------------------------------------------------------------- the whole task
def load_task(dataset: str, spec: ImageSpec, *, train_size: int = 0, eval_size: int = 0, seed: int = 0,
              image_column: str | None = None, label_column: str | None = None,
              train_split: str | None = None, eval_split: str | None = None,
              holdout: float = 0.2, min_per_class: int = 5, strict_coverage: bool = False,
              warn: Callable[[str], None] = print) -> Task:
    """Read, sample (seeded, stratified), check coverage and decode a dataset for one model."""
    names, train, held = read_source(dataset, image_column, label_column, train_split, eval_split)
    notes: list[str] = []
    if len(names) < 2:
        raise UserError(f"dataset '{dataset}' has {len(names)} class; a classifier needs at least 2")
    for raw in (train, held):
        if raw is not None and len(raw.labels) and (raw.labels.min() < 0 or raw.labels.max() >= len(names)):
            raise UserError(f"{raw.name} split has labels outside the {len(names)} known classes")
    if len(train.labels) == 0:
        raise UserError(f"dataset '{dataset}' has no training images")
    if held is None:  # no held-out split: hold out a stratified fraction of train for evaluation
        n_eval = max(len(names), int(round(holdout * len(train.labels))))
        ev = stratified_indices(train.labels, n_eval, seed)
        held = train.subset(ev, f"{train.name} (held out {holdout:.0%})")
        train = train.subset(np.setdiff1d(np.arange(len(train.labels)), ev))
        notes.append(f"no validation/test split: evaluating on {len(ev)} held-out training images")
    if train_size:
        train = train.subset(stratified_indices(train.labels, train_size, seed))
    if eval_size:
        held = held.subset(stratified_indices(held.labels, eval_size, seed + 1))
    cov = {}
    for split_key, raw in (("train", train), ("eval", held)):
        cov[split_key] = coverage(raw.labels, names, min_per_class)
        for problem in coverage_problems(cov[split_key], split_key, min_per_class):
            if strict_coverage:
                raise UserError(f"class coverage: {problem} (drop --strict-coverage to continue anyway)")
            warn(f"WARNING class coverage: {problem}")
            notes.append(problem)
    return Task(dataset, names, decode(train, spec), decode(held, spec), cov, notes)

