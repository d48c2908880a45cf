"""Decoding: undecoded items -> one uint8 tensor [N, C, H, W] at the model's input size, in parallel
threads, reusing images decoded before (DecodeCache); unreadable items replaced by unused ones of the
same class, or dropped, and counted."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..models import ImageSpec, geometry
from .sources import EXAMPLES_SHOWN, RawSplit, _Column
from .storage import _allocate, memory_budget


@dataclass
class Split:
    name: str
    images: torch.Tensor  # uint8 [N, C, H, W] at the model's input size
    labels: torch.Tensor  # int64 [N]
    origin: np.ndarray | None = None  # each image's row in the dataset's split `source` (its identity)
    source: str = ""  # the dataset's split the images come from

    def __post_init__(self):
        if self.origin is None:
            self.origin = np.arange(len(self.labels), dtype=np.int64)
        self.source = self.source or self.name

    def __len__(self) -> int:
        return len(self.labels)

    def hashes(self) -> np.ndarray:
        """A 64-bit content hash of each decoded image (blake2b of its pixels at the model's input size):
        the same picture has the same hash, whatever file or row it came from. Computed once."""
        if self.__dict__.get("_hashes") is None or len(self.__dict__["_hashes"]) != len(self):
            self.__dict__["_hashes"] = content_hashes(self.images)
        return self.__dict__["_hashes"]


def content_hashes(images: torch.Tensor) -> np.ndarray:
    flat = images.reshape(len(images), -1).numpy()
    return np.array(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in flat],
        dtype=np.uint64,
    )


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
    """A PIL image -> uint8 [C, H, W] as the model's image processor makes it before rescaling: upright (EXIF),
    16/32-bit scaled to 8, transparency composited on white, RGB (or L for a 1-channel model), then its
    resize and crop steps (models.geometry). A JPEG more than twice the size its first resize needs is
    decoded at a reduced scale (1/2 to 1/8, still at least twice that size: a 12-megapixel photo decodes ~10×
    faster); every other image is decoded whole, as the processor sees it, and comes out bit for bit the same."""
    from PIL import Image, ImageOps

    first = next((s for s in spec.geometry if s[0] != "crop"), None)
    if first is not None:
        side = 2 * max(first[1:])  # a shortest-edge resize: both sides at least twice the edge
        img.draft("RGB" if spec.channels == 3 else "L", (side, side))
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
    img = img.convert("RGB" if spec.channels == 3 else "L")
    arr = geometry.apply_steps(img, spec.geometry, spec.resample)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def _fit_arrays(arr: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """uint8 [N, H, W] or [N, C, H, W] -> uint8 [N, C, H', W'] matching the spec: channels averaged (to 1) or
    repeated (to 3), then each image through the processor's resize and crop steps (PIL, as for files)."""
    from PIL import Image

    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[:, None] if x.ndim == 3 else x
    if x.shape[1] != spec.channels:
        x = (
            x.float().mean(1, keepdim=True).round().to(torch.uint8)
            if spec.channels == 1
            else x[:, :1].expand(-1, spec.channels, -1, -1)
        )
    if spec.geometry == (("warp", x.shape[2], x.shape[3]),):
        return x.contiguous()
    mode = "L" if spec.channels == 1 else "RGB"
    hwc = x.permute(0, 2, 3, 1).numpy()
    out = _allocate((len(x), spec.channels, spec.height, spec.width))
    for i, a in enumerate(hwc):
        img = Image.fromarray(np.ascontiguousarray(a[..., 0] if mode == "L" else a), mode)
        r = geometry.apply_steps(img, spec.geometry, spec.resample)
        out[i] = torch.from_numpy(r[None] if r.ndim == 2 else r.transpose(2, 0, 1).copy())
    return out


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
    """Decoded images kept across the runs of one owner (a Worker: the seeds, methods and grid points it
    runs share preprocessing), keyed by (item, model input spec), up to a byte budget (default: a quarter
    of the RAM); past it, items decode again."""

    def __init__(self, limit_bytes: int | None = None):
        limit_bytes = memory_budget() if limit_bytes is None else limit_bytes
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


NO_CACHE = DecodeCache(0)  # keeps nothing: decoding without an owner to share with


def _decode_indices(
    raw: RawSplit, idx: np.ndarray, spec: ImageSpec, cache: DecodeCache | None = None, workers: int | None = None
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode raw's items idx into one uint8 tensor (threads: PIL releases the GIL while decoding), reusing
    images in cache (decoded before by the same owner, e.g. the runs of one Worker). Returns the tensor and
    {position in idx: why unreadable}; unreadable positions stay unset."""
    cache = cache or NO_CACHE
    if isinstance(raw.items, np.ndarray):  # arrays already in memory (the built-in Fashion-MNIST)
        return _fit_arrays(raw.items[idx], spec), {}
    out = _allocate((len(idx), spec.channels, spec.height, spec.width))
    errors: dict[int, str] = {}

    def one(k: int) -> None:
        key = cache.key(raw, idx[k], spec)
        cached = cache.get(key)
        if cached is not None:
            out[k] = cached
            return
        try:
            out[k] = _decode_item(raw, idx[k], spec)
            cache.put(key, out[k].clone())
        except Exception as e:  # noqa: BLE001 - any failure to decode means: this item is unreadable
            errors[k] = _why_unreadable(e, raw.items[idx[k]])

    with warnings.catch_warnings():  # Pillow's warnings (odd EXIF, huge images) are no news to the user
        warnings.simplefilter("ignore")
        with ThreadPoolExecutor(workers or min(32, os.cpu_count() or 1)) as pool:
            list(pool.map(one, range(len(idx))))
    return out, errors


def decode(raw: RawSplit, spec: ImageSpec, cache: DecodeCache | None = None, workers: int | None = None) -> Split:
    """Decode every item once into one uint8 tensor; an unreadable item is an error (see decode_sample)."""
    images, errors = _decode_indices(raw, np.arange(len(raw.labels)), spec, cache, workers)
    if errors:
        shown = "; ".join(f"{raw.describe(k)}: {why}" for k, why in sorted(errors.items())[:EXAMPLES_SHOWN])
        raise UserError(f"{len(errors)} unreadable image(s) in the {raw.name} split ({shown})")
    return Split(raw.name, images, torch.from_numpy(np.asarray(raw.labels, dtype=np.int64)), raw.origin, raw.source)


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
    cache: DecodeCache | None = None,
    workers: int | None = None,
) -> Split:
    """Decode pool's items idx. An unreadable item is replaced by an unused pool item of the same class
    (seeded), else dropped, so labels and images stay aligned and no blank image stands in for it.
    More than max_bad_fraction unreadable among the items tried is an error."""
    source = np.asarray(idx, dtype=np.int64).copy()
    labels = pool.labels[source]
    images, errors = _decode_indices(pool, source, spec, cache, workers)
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
        more, errors = _decode_indices(pool, source[pending], spec, cache, workers)
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
    return Split(pool.name, images, torch.from_numpy(labels[ok]), pool.origin[source[ok]], pool.source)
