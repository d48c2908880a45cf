"""Dataset sources, each read as *labels plus undecoded items* (a RawSplit): the built-in Fashion-MNIST
tasks, image folders (one subfolder per class, optionally train/ and test|val/), datasets'
save_to_disk folders and hub dataset ids. Nothing is decoded here."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

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
# the bundled model's pretraining classes, the default task (never seen in pretraining), and the rest
FMNIST_TASKS = {
    "fashion-mnist:3,4,6,7,9": (3, 4, 6, 7, 9),
    "fashion-mnist:0,1,2,5,8": (0, 1, 2, 5, 8),
    "fashion-mnist:0-4": range(0, 5),
    "fashion-mnist:5-9": range(5, 10),
    "fashion-mnist:all": range(0, 10),
}
FMNIST_PREFIX = "fashion-mnist:"  # + "all", a range "a-b" or a list "a,b,c" (ranges allowed in it) of labels 0-9
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# files an OS or tool leaves in folders: passed over without a word (as are hidden files and folders)
JUNK_FILES = {"thumbs.db", "desktop.ini", "__macosx"}
EXAMPLES_SHOWN = 3  # example paths in a warning or error about skipped items
VAL_SPLIT_NAMES = ("validation", "valid", "val")  # a dataset's validation split, by any of these names
TEST_SPLIT_NAMES = ("test",)
ROLES = ("train", "val", "test")


@dataclass
class RawSplit:
    """Labels (already 0..C-1) and one undecoded item per example; decode(item) -> PIL or array."""

    name: str
    labels: np.ndarray
    items: Sequence[Any]
    decode: Callable[[Any], Any]
    folder: Path | None = None  # image folders: the folder holding this split's class folders
    not_images: list[str] = field(default_factory=list)  # files in class folders that are not image types
    origin: np.ndarray | None = None  # each item's row in the dataset's split `source` (None: 0..N-1)
    source: str = ""  # the dataset's split these items come from (default: name)

    def __post_init__(self):
        if self.origin is None:
            self.origin = np.arange(len(self.labels), dtype=np.int64)
        self.source = self.source or self.name

    def subset(self, idx: np.ndarray, name: str | None = None) -> RawSplit:
        idx = np.asarray(idx, dtype=np.int64)
        items = self.items.select(idx) if hasattr(self.items, "select") else [self.items[i] for i in idx]
        return RawSplit(
            name or self.name, self.labels[idx], items, self.decode, self.folder, [], self.origin[idx], self.source
        )

    def describe(self, i: int) -> str:
        """Where item i comes from, for messages: its path, or its row in the dataset."""
        item = self.items[i]
        if isinstance(item, (str, Path)):
            return str(item)
        row = self.items.row(i) if hasattr(self.items, "row") else i
        path = item.get("path") if isinstance(item, dict) else None
        return f"{self.name} row {row}" + (f" ({path})" if path else "")


# ---------------------------------------------------------------- sources
def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fmnist_classes(spec: str) -> list[int] | None:
    """The Fashion-MNIST labels a built-in task names, in its order ("fashion-mnist:3,4,6-7" -> [3, 4, 6, 7]);
    None when spec does not name one (not the prefix, a label outside 0-9, a repeat, fewer than 2 classes)."""
    if not spec.startswith(FMNIST_PREFIX):
        return None
    body = spec[len(FMNIST_PREFIX) :]
    if body == "all":
        return list(range(10))
    classes: list[int] = []
    for part in body.split(","):
        a, _, b = part.partition("-")
        if not (a.isdigit() and (b.isdigit() or not _)) or int(b or a) < int(a):
            return None
        classes += range(int(a), int(b or a) + 1)
    if len(classes) < 2 or len(set(classes)) != len(classes) or max(classes) > 9:
        return None
    return classes


def _fashion_mnist(classes: list[int]) -> tuple[list[str], dict[str, RawSplit | None]]:
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
    splits: dict[str, RawSplit | None] = {"val": None}
    for name, (img_f, lab_f) in files.items():
        images, labels = _read_idx(img_f), _read_idx(lab_f)
        keep = np.flatnonzero(remap[labels] >= 0)  # origin: the row in the IDX file
        splits[name] = RawSplit(name, remap[labels[keep]], images[keep], _identity, origin=keep)
    return [FMNIST_NAMES[c] for c in classes], splits


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


def _image_folder(root: Path, names: dict[str, str | None]) -> tuple[list[str], dict[str, RawSplit | None]]:
    try:
        return _read_image_folder(root, names)
    except OSError as e:  # e.g. a folder without read permission
        raise UserError(
            f"cannot read image folder '{e.filename or root}' ({e.strerror or e}); check its permissions"
        ) from e


def _class_folders(d: Path) -> list[str]:
    """The class folders of d by name; a link is refused: it would read the same images again under a second
    label (`ln -s . d/c`), or images from outside the dataset."""
    names = []
    for p in d.iterdir():
        if _hidden(p.name) or not p.is_dir():
            continue
        if p.is_symlink():
            raise UserError(
                f"class folder '{p}' is a link (to '{os.readlink(p)}'); peftlab reads no linked class folders "
                "(the same images could count under two labels): copy the images into a real folder or remove the link"
            )
        names.append(p.name)
    return sorted(names)


def label_name(folder: str) -> str:
    """A class folder's name as a label: bytes that are not UTF-8 (read as lone surrogates) shown as \\xNN, so
    that every report, plot and terminal can print it and two such names stay apart."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in folder)


def _read_image_folder(root: Path, asked: dict[str, str | None]) -> tuple[list[str], dict[str, RawSplit | None]]:
    """ROOT/<class>/... (one pool), or ROOT/train/<class>/... with ROOT/val|validation|valid/ and/or
    ROOT/test/ beside it; --train-split/--val-split/--test-split name other subfolders."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}

    def named(role: str, defaults: tuple[str, ...]) -> Path | None:
        if asked.get(role):
            if asked[role].lower() not in subdirs:
                raise UserError(
                    f"image folder '{root}' has no split folder '{asked[role]}' (--{role}-split); "
                    f"it has: {', '.join(sorted(subdirs)) or 'none'}"
                )
            return subdirs[asked[role].lower()]
        return next((subdirs[n] for n in defaults if n in subdirs), None)

    train_dir = named("train", ("train",))
    split_dirs = {"val": named("val", VAL_SPLIT_NAMES), "test": named("test", TEST_SPLIT_NAMES)} if train_dir else {}
    base = train_dir or root
    names = _class_folders(base)
    if not names:
        raise UserError(
            f"image folder '{root}' has no class subfolders; lay it out as "
            "ROOT/<class>/<image> (optionally ROOT/train/<class>/..., ROOT/val/<class>/... and ROOT/test/<class>/...)"
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

    for d in split_dirs.values():  # a class only in a val/test folder could never be predicted right
        extra = [n for n in _class_folders(d) if n not in names and files(d / n)[0]] if d is not None else []
        if extra:
            raise UserError(
                f"class folder '{d / extra[0]}' has images but '{base / extra[0]}' does not "
                f"exist{f' ({len(extra)} such classes)' if len(extra) > 1 else ''}; a class without "
                "training images cannot be learned: add training images or remove the class"
            )
    splits = {role: scan(d, d.name) if d is not None else None for role, d in split_dirs.items()}
    labels = [label_name(n) for n in names]
    return labels, {"train": scan(base, "train"), "val": splits.get("val"), "test": splits.get("test")}


def _hf_dataset(
    dsd, image_column: str | None, label_column: str | None, asked: dict[str, str | None]
) -> tuple[list[str], dict[str, RawSplit | None]]:
    from datasets import ClassLabel, Dataset, DatasetDict, Image

    if isinstance(dsd, Dataset):
        dsd = DatasetDict({asked.get("train") or "train": dsd})
    train_name = asked.get("train") or ("train" if "train" in dsd else next(iter(dsd)))
    chosen = {"train": train_name}
    for role, defaults in (("val", VAL_SPLIT_NAMES), ("test", TEST_SPLIT_NAMES)):
        chosen[role] = asked.get(role) or next((n for n in defaults if n in dsd and n != train_name), None)
    for role, name in chosen.items():
        if name is not None and name not in dsd:
            raise UserError(f"dataset has no split '{name}' (--{role}-split); it has: {', '.join(dsd)}")
    feats = dsd[train_name].features
    image_column = image_column or next((k for k, v in feats.items() if isinstance(v, Image)), None)
    label_column = label_column or next((k for k, v in feats.items() if isinstance(v, ClassLabel)), None)
    label_column = label_column or next((k for k in ("label", "labels") if k in feats), None)
    for what, col in (("image", image_column), ("label", label_column)):
        if col is None or col not in feats:
            raise UserError(f"cannot find the {what} column (columns: {', '.join(feats)}); pass --{what}-column")
    _check_columns(feats, image_column, label_column)
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

    return names, {role: raw(name) if name else None for role, name in chosen.items()}


def _check_columns(feats, image_column: str, label_column: str) -> None:
    """The image column holds images (or file paths, or bytes) and the label column class labels (a ClassLabel,
    integers, strings or booleans): anything else is a one-line error naming the columns that would fit."""
    from datasets import ClassLabel, Image, Value

    def dtype(f) -> str:
        return f.dtype if isinstance(f, Value) else type(f).__name__

    def is_image(f) -> bool:
        return isinstance(f, Image) or dtype(f) in ("string", "large_string", "binary", "large_binary")

    def is_label(f) -> bool:
        return isinstance(f, ClassLabel) or dtype(f).startswith(("int", "uint", "bool", "string", "large_string"))

    if image_column == label_column:
        raise UserError(f"--image-column and --label-column both name '{image_column}'; name two columns")
    for what, col, fits in (("image", image_column, is_image), ("label", label_column, is_label)):
        if not fits(feats[col]):
            others = [k for k, f in feats.items() if fits(f) and k not in (image_column, label_column)]
            raise UserError(
                f"{what} column '{col}' holds {dtype(feats[col])} values, not {what}s; pass --{what}-column with "
                f"{'one of: ' + ', '.join(others) if others else 'a column of ' + what + 's'}"
            )


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


def _saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def read_source(
    dataset: str,
    image_column: str | None = None,
    label_column: str | None = None,
    split_names: dict[str, str | None] | None = None,
) -> tuple[list[str], dict[str, RawSplit | None]]:
    """Any supported --dataset -> (label names, {"train": RawSplit, "val": RawSplit or None, "test": RawSplit
    or None}): the dataset's own splits as they are; split_names picks them by name (--train-split ...)."""
    split_names = split_names or {}
    path = Path(dataset).expanduser()
    columns = [f"--{w}-column '{c}'" for w, c in (("image", image_column), ("label", label_column)) if c]
    builtin = fmnist_classes(dataset)
    if columns and (builtin is not None or (path.is_dir() and not _saved_dataset(path))):
        raise UserError(
            f"{' and '.join(columns)}: '{dataset}' has no columns (an image folder's labels are its class "
            "folders); leave --image-column/--label-column out, or pass a dataset with columns"
        )
    if builtin is not None:
        return _fashion_mnist(builtin)
    if dataset.startswith(FMNIST_PREFIX):
        raise UserError(
            f"unknown built-in task '{dataset}'; built-in tasks: {', '.join(FMNIST_TASKS)}, or "
            f"{FMNIST_PREFIX}<labels 0-9>, at least 2 and none twice, e.g. {FMNIST_PREFIX}3,4,6,7,9"
        )
    if path.is_dir():
        if _saved_dataset(path):
            from datasets import load_from_disk

            try:
                dsd = load_from_disk(str(path))
            except Exception as e:  # a damaged save_to_disk folder: missing arrow files, bad json, ...
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(
                    f"cannot read save_to_disk dataset '{dataset}' ({first}); save it again with "
                    "Dataset.save_to_disk / DatasetDict.save_to_disk"
                ) from e
            return _hf_dataset(dsd, image_column, label_column, split_names)
        return _image_folder(path, split_names)
    if path.exists() or dataset.startswith((".", "/", "~")):
        what = "is not a folder" if path.exists() else "does not exist"
        raise UserError(
            f"dataset '{dataset}' {what}; pass an image folder, a save_to_disk "
            f"folder, a hub dataset id or one of: {', '.join(FMNIST_TASKS)}"
        )
    return _hf_dataset(_load_hub_dataset(dataset), image_column, label_column, split_names)
