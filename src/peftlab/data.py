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

import gzip
import io
import os
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .models import ImageSpec

FMNIST_DIR = Path(os.environ.get("PEFTLAB_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FMNIST_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FMNIST_TASKS = {"fashion-mnist:0-4": range(0, 5), "fashion-mnist:5-9": range(5, 10), "fashion-mnist:all": range(0, 10)}
DEFAULT_DATASET = "fashion-mnist:5-9"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# files an OS or tool leaves in folders: passed over without a word (as are hidden files and folders)
JUNK_FILES = {"thumbs.db", "desktop.ini", "__macosx"}
EXAMPLES_SHOWN = 3  # example paths in a warning or error about skipped items
EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")


@dataclass
class RawSplit:
    """Labels (already 0..C-1) and one undecoded item per example; decode(item) -> PIL or array."""

    name: str
    labels: np.ndarray
    items: Sequence[Any]
    decode: Callable[[Any], Any]
    folder: Path | None = None  # image folders: the folder holding this split's class folders
    not_images: list[str] = field(default_factory=list)  # files in class folders that are not image types

    def subset(self, idx: np.ndarray, name: str | None = None) -> RawSplit:
        items = self.items.select(idx) if hasattr(self.items, "select") else [self.items[i] for i in idx]
        return RawSplit(name or self.name, self.labels[idx], items, self.decode, self.folder)

    def describe(self, i: int) -> str:
        """Where item i comes from, for messages: its path, or its row in the dataset."""
        item = self.items[i]
        if isinstance(item, (str, Path)):
            return str(item)
        row = self.items.row(i) if hasattr(self.items, "row") else i
        path = item.get("path") if isinstance(item, dict) else None
        return f"{self.name} row {row}" + (f" ({path})" if path else "")


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
    # per split ("train", "eval"): what was left out and why; see skip_stats() for the keys
    skipped: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


# ---------------------------------------------------------------- sources
def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(spec: str) -> tuple[list[str], RawSplit, RawSplit]:
    classes = list(FMNIST_TASKS[spec])
    files = {
        s: (FMNIST_DIR / f"{p}-images-idx3-ubyte.gz", FMNIST_DIR / f"{p}-labels-idx1-ubyte.gz")
        for s, p in (("train", "train"), ("test", "t10k"))
    }
    if not all(f.exists() for pair in files.values() for f in pair):
        raise UserError(
            f"Fashion-MNIST files not found in {FMNIST_DIR}; install them with "
            "'sudo apt-get install -y dataset-fashion-mnist' (or set PEFTLAB_FMNIST_DIR), "
            "or pass --dataset with another dataset"
        )
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


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_FILES


def _image_folder(root: Path) -> tuple[list[str], RawSplit, RawSplit | None]:
    try:
        return _read_image_folder(root)
    except OSError as e:  # e.g. a folder without read permission
        raise UserError(
            f"cannot read image folder '{e.filename or root}' ({e.strerror or e}); check its permissions"
        ) from e


def _class_folders(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not _hidden(p.name))


def _read_image_folder(root: Path) -> tuple[list[str], RawSplit, RawSplit | None]:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    train_dir = subdirs.get("train")
    eval_dir = next((subdirs[n] for n in EVAL_SPLIT_NAMES if n in subdirs), None) if train_dir else None
    base = train_dir or root
    names = _class_folders(base)
    if not names:
        raise UserError(
            f"image folder '{root}' has no class subfolders; lay it out as "
            "ROOT/<class>/<image> (optionally ROOT/train/<class>/... and ROOT/test/<class>/...)"
        )

    def files(d: Path) -> tuple[list[str], list[str]]:
        """Image files (by type) under d, and the other files; hidden files and folders are passed over."""
        images, others = [], []
        for f in sorted(d.rglob("*")) if d.is_dir() else []:
            if any(_hidden(part) for part in f.relative_to(d).parts) or f.is_dir():
                continue
            (images if f.suffix.lower() in IMAGE_SUFFIXES else others).append(str(f))
        return images, others

    def scan(d: Path, split: str) -> RawSplit:
        paths, labels, not_images = [], [], []
        for i, n in enumerate(names):
            images, others = files(d / n)
            paths += images
            labels += [i] * len(images)
            not_images += others
        return RawSplit(split, np.asarray(labels, dtype=np.int64), paths, _open_image, d, not_images)

    if eval_dir is not None:  # a class only in the eval folder could never be predicted right
        extra = [n for n in _class_folders(eval_dir) if n not in names and files(eval_dir / n)[0]]
        if extra:
            raise UserError(
                f"class folder '{eval_dir / extra[0]}' has images but '{base / extra[0]}' does not "
                f"exist{f' ({len(extra)} such classes)' if len(extra) > 1 else ''}; a class without "
                "training images cannot be learned: add training images or remove the class"
            )
    return names, scan(base, "train"), scan(eval_dir, eval_dir.name) if eval_dir else None


def _hf_dataset(
    dsd, image_column: str | None, label_column: str | None, train_split: str | None, eval_split: str | None
) -> tuple[list[str], RawSplit, RawSplit | None]:
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
            raise UserError(f"cannot find the {what} column (columns: {', '.join(feats)}); pass --{what}-column")
    if isinstance(feats[label_column], ClassLabel):
        names = list(feats[label_column].names)
        to_id = None
    else:  # plain values: the label set is the values seen; a missing value (None) means "no label"
        names = sorted({str(v) for s in dsd.values() for v in s[label_column] if v is not None})
        to_id = {n: i for i, n in enumerate(names)}

    def raw(split: str) -> RawSplit:
        ds = dsd[split]
        labels = ds[label_column]
        if to_id:
            labels = np.asarray([-1 if v is None else to_id[str(v)] for v in labels], dtype=np.int64)
        else:
            try:
                labels = np.asarray(labels, dtype=np.int64)
            except TypeError:  # missing labels (None) among them
                labels = np.asarray([-1 if v is None else v for v in labels], dtype=np.int64)
        if isinstance(ds.features[image_column], Image):
            ds = ds.cast_column(image_column, Image(decode=False))
        return RawSplit(split, labels, _Column(ds, image_column), _open_image)

    return names, raw(train_name), raw(eval_name) if eval_name else None


class _Column:
    """One column of a datasets.Dataset, indexable without decoding the others; rows map back to the dataset."""

    def __init__(self, ds, col: str, rows: np.ndarray | None = None):
        self.ds, self.col = ds, col
        self.rows = np.arange(len(ds)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.ds[int(self.rows[i])][self.col]

    def row(self, i: int) -> int:
        return int(self.rows[i])

    def select(self, idx) -> _Column:
        return _Column(self.ds, self.col, self.rows[np.asarray(idx, dtype=np.int64)])


def _offline() -> bool:
    from datasets import config
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or config.HF_HUB_OFFLINE)


def _load_hub_dataset(dataset: str):
    from datasets import load_dataset
    from huggingface_hub.utils import logging as hub_logging

    builtins = ", ".join(FMNIST_TASKS)
    hub_log = hub_logging.get_logger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel("ERROR")  # no network: five multi-line "Retrying in Ns" warnings before the error
    try:
        return load_dataset(dataset)
    except Exception as e:  # the hub raises many types; all mean "cannot get it"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if isinstance(e, (ConnectionError, FileNotFoundError)) and _offline():
            raise UserError(
                f"cannot load dataset '{dataset}': it is not a local folder, and HF_HUB_OFFLINE is set "
                "and it is not in the datasets cache; pass an image folder, a save_to_disk folder or "
                f"one of: {builtins}, or unset HF_HUB_OFFLINE to download it"
            ) from e
        if isinstance(e, (ConnectionError, FileNotFoundError)):
            raise UserError(
                f"cannot load dataset '{dataset}': it is not a local folder, and the hub answered: "
                f"{first.rstrip('.')}; check the name and the network, or pass an image folder, a "
                f"save_to_disk folder or one of: {builtins}"
            ) from e
        raise UserError(f"cannot load dataset '{dataset}': {first}") from e
    finally:
        hub_log.setLevel(level)


def read_source(
    dataset: str,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str | None = None,
    eval_split: str | None = None,
):
    """Any supported --dataset -> (label names, train RawSplit, eval RawSplit or None)."""
    if dataset in FMNIST_TASKS:
        return _fashion_mnist(dataset)
    if dataset.startswith("fashion-mnist:"):
        raise UserError(f"unknown built-in task '{dataset}'; built-in tasks: {', '.join(FMNIST_TASKS)}")
    path = Path(dataset).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            from datasets import load_from_disk

            try:
                dsd = load_from_disk(str(path))
            except Exception as e:  # a damaged save_to_disk folder: missing arrow files, bad json, ...
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(
                    f"cannot read save_to_disk dataset '{dataset}' ({first}); save it again with "
                    "Dataset.save_to_disk / DatasetDict.save_to_disk"
                ) from e
            return _hf_dataset(dsd, image_column, label_column, train_split, eval_split)
        return _image_folder(path)
    if path.exists() or dataset.startswith((".", "/", "~")):
        what = "is not a folder" if path.exists() else "does not exist"
        raise UserError(
            f"dataset '{dataset}' {what}; pass an image folder, a save_to_disk "
            f"folder, a hub dataset id or one of: {', '.join(FMNIST_TASKS)}"
        )
    return _hf_dataset(_load_hub_dataset(dataset), image_column, label_column, train_split, eval_split)


# ---------------------------------------------------------------- sampling and coverage
def stratified_indices(
    labels: np.ndarray, n: int, seed: int, *, what: str = "", option: str = "--train-size/--eval-size"
) -> np.ndarray:
    """n indices with each class represented in proportion (largest remainder), seeded, shuffled."""
    if n > len(labels):
        raise UserError(
            f"asked for {n} examples but the split has only {len(labels)}"
            f"{f' {what}' if what else ''}; lower {option} or pass 0 for all"
        )
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
        out.append(
            f"{split} split has fewer than {min_per_class} examples for "
            f"{len(cov['below_min'])} classes ({', '.join(cov['below_min'][:5])})"
        )
    return out


# ---------------------------------------------------------------- decoding
def _to_8bit(img):
    """A 16-bit (I;16*), 32-bit integer (I) or float (F) image -> 8-bit L, scaled by bit depth, not clipped."""
    from PIL import Image

    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        scaled = arr / 257  # 0..65535 -> 0..255
    else:  # I or F: no bit depth recorded, so judge by the value range
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if img.mode == "F" and lo >= 0 and hi <= 1:
            scaled = arr * 255
        elif lo >= 0 and hi <= 255:
            scaled = arr
        elif lo >= 0 and hi <= 65535:
            scaled = arr / 257
        else:
            scaled = (arr - lo) * 255 / (hi - lo)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _pil_to_array(img, spec: ImageSpec) -> np.ndarray:
    from PIL import Image, ImageOps

    side = max(spec.width, spec.height)  # square: an EXIF rotation swaps width and height
    img.draft("RGB" if spec.channels == 3 else "L", (side, side))  # JPEG: decode at 1/2..1/8 scale
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - damaged EXIF: keep the image as stored; damaged pixels fail below
        pass
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit: scale to 8 bits before converting
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # composite transparency on white, not black
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    img = img.convert("RGB" if spec.channels == 3 else "L").resize(
        (spec.width, spec.height), Image.BILINEAR, reducing_gap=3.0
    )
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _fit_arrays(arr: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """uint8 [N, H, W] or [N, C, H, W] -> uint8 [N, C, H', W'] matching the spec."""
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[:, None] if x.ndim == 3 else x
    if x.shape[1] != spec.channels:
        x = (
            x.float().mean(1, keepdim=True).round().to(torch.uint8)
            if spec.channels == 1
            else x[:, :1].expand(-1, spec.channels, -1, -1)
        )
    if tuple(x.shape[2:]) != (spec.height, spec.width):
        x = (
            F.interpolate(
                x.float(), size=(spec.height, spec.width), mode="bilinear", antialias=True, align_corners=False
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    return x.contiguous()


def _decode_item(raw: RawSplit, i: int, spec: ImageSpec) -> torch.Tensor:
    img = raw.decode(raw.items[i])
    if isinstance(img, np.ndarray):
        return _fit_arrays(img[None], spec)[0]
    try:
        return torch.from_numpy(_pil_to_array(img, spec))
    finally:
        if hasattr(img, "close"):
            img.close()


def _why_unreadable(e: Exception, item) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(item, dict):
        item = item.get("bytes") or item.get("path")
    if isinstance(e, UnidentifiedImageError):
        empty = (
            len(item) == 0
            if isinstance(item, (bytes, bytearray))
            else (isinstance(item, (str, Path)) and os.path.isfile(item) and os.path.getsize(item) == 0)
        )
        return "empty file" if empty else "not an image Pillow can read"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and "truncated" in str(e).lower():
        return "truncated file"
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:100]}" if first else type(e).__name__


class DecodeCache:
    """Decoded images kept across the runs of a process (the seeds and grid points of a sweep share
    preprocessing), keyed by (item, model input spec), up to a byte budget; past it, items decode again."""

    def __init__(self, limit_bytes: int):
        self.limit, self.used, self.items = limit_bytes, 0, {}
        self.hits = self.misses = 0
        self.lock = threading.Lock()  # decoding threads add to it

    def key(self, raw: RawSplit, i: int, spec: ImageSpec):
        items = raw.items
        if isinstance(items, _Column):
            return (items.ds._fingerprint, items.col, items.row(i), spec)
        item = items[i]
        return (item, spec) if isinstance(item, (str, Path)) else None  # in-memory PIL images: not cached

    def clear(self) -> None:
        with self.lock:
            self.items, self.used = {}, 0

    def get(self, key):
        hit = self.items.get(key) if key is not None else None
        self.hits += hit is not None
        self.misses += hit is None
        return hit

    def put(self, key, image: torch.Tensor) -> None:
        with self.lock:
            if key is not None and self.used + image.numel() <= self.limit and key not in self.items:
                self.items[key] = image
                self.used += image.numel()


def _memory_budget() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4  # a quarter of the RAM
    except (ValueError, OSError, AttributeError):
        return 2 << 30


CACHE = DecodeCache(_memory_budget())

# decoded splits larger than this go to a memory-mapped file instead of RAM (half of the RAM: the
# decode cache above may hold a quarter more)
IN_MEMORY_LIMIT = 2 * _memory_budget()


def cache_dir() -> Path:
    """Where decoded images that do not fit in memory are mapped: $PEFTLAB_CACHE_DIR, else ~/.cache/peftlab."""
    return Path(os.environ.get("PEFTLAB_CACHE_DIR") or Path.home() / ".cache" / "peftlab").expanduser()


def _allocate(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor for decoded images: in RAM up to IN_MEMORY_LIMIT bytes, else backed by
    a file under cache_dir(), mapped into memory. The file is unlinked at once (nothing is left behind,
    even after a kill); the OS keeps the pages it has room for and reads the rest back as batches need
    them. Its disk space is reserved up front, so a full disk is a clear error here and not a crash
    (SIGBUS) in the middle of decoding."""
    import mmap

    n = int(np.prod(shape))
    if n <= IN_MEMORY_LIMIT:
        return torch.empty(shape, dtype=torch.uint8)
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="decoded-", suffix=".u8", dir=folder)
    except OSError as e:
        raise UserError(
            f"cannot create a file in {folder} for the decoded images ({e.strerror}); set "
            "PEFTLAB_CACHE_DIR to a writable folder"
        ) from e
    try:
        os.posix_fallocate(fd, 0, n) if hasattr(os, "posix_fallocate") else os.ftruncate(fd, n)
        buf = mmap.mmap(fd, n)
    except OSError as e:
        raise UserError(
            f"the decoded images need {n / 2**30:.1f} GiB, more than fit in memory, and {folder} "
            f"cannot hold them ({e.strerror}); set PEFTLAB_CACHE_DIR to a folder with room, or "
            "lower --train-size"
        ) from e
    finally:
        os.close(fd)
        os.unlink(path)
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(shape)  # keeps buf (the mapping) alive
    t = torch.from_numpy(arr)  # keeps arr alive, as long as any tensor shares its storage
    MAPPED.add(t.untyped_storage().data_ptr())
    weakref.finalize(arr, MAPPED.discard, t.untyped_storage().data_ptr())
    return t


MAPPED: set[int] = set()  # data pointers of the tensors _allocate mapped to files


def is_mapped(images: torch.Tensor) -> bool:
    """Whether images live in a memory-mapped file (decoded splits larger than IN_MEMORY_LIMIT)."""
    return images.untyped_storage().data_ptr() in MAPPED


def _decode_indices(
    raw: RawSplit, idx: np.ndarray, spec: ImageSpec, workers: int | None = None
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode raw's items idx into one uint8 tensor (threads: PIL releases the GIL while decoding), reusing
    images this process decoded before. Returns the tensor and {position in idx: why unreadable};
    unreadable positions stay unset."""
    if isinstance(raw.items, np.ndarray):  # arrays already in memory (the built-in Fashion-MNIST)
        return _fit_arrays(raw.items[idx], spec), {}
    out = _allocate((len(idx), spec.channels, spec.height, spec.width))
    errors: dict[int, str] = {}

    def one(k: int) -> None:
        key = CACHE.key(raw, idx[k], spec)
        cached = CACHE.get(key)
        if cached is not None:
            out[k] = cached
            return
        try:
            out[k] = _decode_item(raw, idx[k], spec)
            CACHE.put(key, out[k].clone())
        except Exception as e:  # noqa: BLE001 - any failure to decode means: this item is unreadable
            errors[k] = _why_unreadable(e, raw.items[idx[k]])

    with warnings.catch_warnings():  # Pillow's warnings (odd EXIF, huge images) are no news to the user
        warnings.simplefilter("ignore")
        with ThreadPoolExecutor(workers or min(32, os.cpu_count() or 1)) as pool:
            list(pool.map(one, range(len(idx))))
    return out, errors


def decode(raw: RawSplit, spec: ImageSpec, workers: int | None = None) -> Split:
    """Decode every item once into one uint8 tensor; an unreadable item is an error (see decode_sample)."""
    images, errors = _decode_indices(raw, np.arange(len(raw.labels)), spec, workers)
    if errors:
        shown = "; ".join(f"{raw.describe(k)}: {why}" for k, why in sorted(errors.items())[:EXAMPLES_SHOWN])
        raise UserError(f"{len(errors)} unreadable image(s) in the {raw.name} split ({shown})")
    return Split(raw.name, images, torch.from_numpy(np.asarray(raw.labels, dtype=np.int64)))


def skip_stats() -> dict:
    """What one split left out: unreadable items of those tried (replaced by spares of the same class,
    or dropped, shrinking the sample), unlabelled rows (-1) and files that are not images by type."""
    return {
        "tried": 0,
        "unreadable": 0,
        "replaced": 0,
        "dropped": 0,
        "unreadable_examples": [],
        "unlabelled": 0,
        "not_images": 0,
        "not_image_examples": [],
    }


def decode_sample(
    pool: RawSplit,
    idx: np.ndarray,
    spec: ImageSpec,
    *,
    seed: int,
    max_bad_fraction: float,
    split_key: str,
    stats: dict,
    workers: int | None = None,
) -> Split:
    """Decode pool's items idx. An unreadable item is replaced by an unused pool item of the same class
    (seeded), else dropped, so labels and images stay aligned and no blank image stands in for it.
    More than max_bad_fraction unreadable among the items tried is an error."""
    source = np.asarray(idx, dtype=np.int64).copy()
    labels = pool.labels[source]
    images, errors = _decode_indices(pool, source, spec, workers)
    ok = np.ones(len(source), dtype=bool)
    failed = np.zeros(len(source), dtype=bool)
    pending = np.arange(len(source))
    spares: dict[int, list[int]] | None = None
    tried, examples = 0, []
    while True:
        tried += len(pending)
        bad = [(pending[k], pool.describe(source[pending[k]]), why) for k, why in sorted(errors.items())]
        examples += [f"{where} ({why})" for _, where, why in bad]
        failed[[pos for pos, _, _ in bad]] = True
        if len(examples) / max(tried, 1) > max_bad_fraction:
            raise UserError(
                f"{split_key} split: {len(examples)} of {tried} images tried are unreadable "
                f"({len(examples) / tried:.0%}, more than --max-bad-fraction {max_bad_fraction:g}), "
                f"e.g. {'; '.join(examples[:EXAMPLES_SHOWN])}; fix or remove those files, "
                "or raise --max-bad-fraction"
            )
        if not bad:
            break
        if spares is None:  # unused items per class, in a seeded random order
            unused = np.ones(len(pool.labels), dtype=bool)
            unused[source] = False
            cand = np.random.default_rng([seed, 1]).permutation(np.flatnonzero(unused))
            cand = cand[np.argsort(pool.labels[cand], kind="stable")]
            classes, starts = np.unique(pool.labels[cand], return_index=True)
            spares = {int(c): list(part[::-1]) for c, part in zip(classes, np.split(cand, starts[1:]))}
        nxt = []
        for pos, _, _ in bad:
            left = spares.get(int(labels[pos]))
            if left:
                source[pos] = left.pop()
                nxt.append(pos)
            else:
                ok[pos] = False
        if not nxt:
            break
        pending = np.asarray(nxt, dtype=np.int64)
        more, errors = _decode_indices(pool, source[pending], spec, workers)
        images[pending] = more
    stats.update(
        tried=stats["tried"] + tried,
        unreadable=stats["unreadable"] + len(examples),
        replaced=stats["replaced"] + int((failed & ok).sum()),
        dropped=stats["dropped"] + int((~ok).sum()),
        unreadable_examples=(stats["unreadable_examples"] + examples)[:EXAMPLES_SHOWN],
    )
    if not ok.all():  # drop the unreplaced: into a new tensor, mapped again when the first one was
        keep = torch.from_numpy(np.flatnonzero(ok))
        images = torch.index_select(images, 0, keep, out=_allocate((len(keep), *images.shape[1:])))
    return Split(pool.name, images, torch.from_numpy(labels[ok]))


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
    dataset: str,
    spec: ImageSpec,
    *,
    train_size: int = 0,
    eval_size: int = 0,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str | None = None,
    eval_split: str | None = None,
    holdout: float = 0.2,
    min_per_class: int = 5,
    strict_coverage: bool = False,
    max_bad_fraction: float = 0.1,
    warn: Callable[[str], None] = print,
    decode_train: bool = True,
) -> Task:
    """Read, sample (seeded, stratified), decode and check a dataset for one model. decode_train=False
    (evaluating a saved run) decodes the eval split only: Task.train is then empty and unchecked.

    Unreadable images are replaced by unused ones of the same class where the split has them (else the
    sample shrinks), counted in Task.skipped, noted and warned about once; more than max_bad_fraction of the
    images tried in a split is an error. Coverage is measured on what was decoded."""
    if not 0 <= max_bad_fraction <= 1:
        raise UserError(f"--max-bad-fraction must be between 0 and 1 (got {max_bad_fraction:g})")
    names, train, held = read_source(dataset, image_column, label_column, train_split, eval_split)
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
    if held is not None and len(held.labels) and (held.labels == -1).all() and eval_split is None:
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
        n_eval = max(len(names), int(round(holdout * len(train.labels))))
        ev = stratified_indices(train.labels, n_eval, seed)
        held = train.subset(ev, f"{train.name} (held out {holdout:.0%})")
        train = train.subset(np.setdiff1d(np.arange(len(train.labels)), ev))
        notes.append(f"no validation/test split: evaluating on {len(ev)} held-out training images")
        if decode_train:
            _check_every_class_trains(train, names, held_out=len(ev))
    what = f"training images in '{train.name}'" + (
        f" after holding out {n_pool - len(train.labels)} for evaluation" if len(train.labels) < n_pool else ""
    )
    tr_idx = (
        (
            stratified_indices(train.labels, train_size, seed, what=what, option="--train-size")
            if train_size
            else np.arange(len(train.labels))
        )
        if decode_train
        else np.arange(0)
    )
    ev_idx = (
        stratified_indices(
            held.labels, eval_size, seed + 1, what=f"evaluation images in '{held.name}'", option="--eval-size"
        )
        if eval_size
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
            pool, idx, spec, seed=s, max_bad_fraction=max_bad_fraction, split_key=split_key, stats=skipped[split_key]
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
            if strict_coverage:
                raise UserError(f"class coverage: {problem} (drop --strict-coverage to continue anyway)")
            warn(f"WARNING class coverage: {problem}")
            notes.append(problem)
    return Task(dataset, names, decoded["train"], decoded["eval"], cov, notes, skipped)
