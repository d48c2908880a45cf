"""What a model's image processor does to a picture, as steps peftlab applies itself: resize (to a height and
width, or the shortest edge to a length, aspect kept), centre crop, on the uint8 image through PIL with the
processor's filter; then, on the device, rescale, normalise (per channel, an affine map) and the channel
order. The same integer sizes, crops and filters as transformers' PIL processors (image_processing_pil_*),
so the uint8 pixels peftlab stores are the ones the processor computes before it rescales: the tensors
equal the processor's output up to float rounding (tests/test_archs.py checks every processor class).

Processor quirks written out here: ConvNeXt's crop_pct (resize the shortest edge to size/crop_pct, then crop
size; warp at 384 and above), LeViT's 256/224 resize, PoolFormer's crop_pct (a square size is a shortest
edge), EfficientNet's rescale offset and its second division by std (include_top), MobileViT's missing
normalisation and BGR channel order, SegFormer's crop that never happens.
"""

from __future__ import annotations

import math

import numpy as np

Step = tuple  # ("warp", h, w) | ("shortest", edge) | ("crop", h, w)
BILINEAR = 2  # PIL.Image.Resampling.BILINEAR
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def shortest_edge_size(h: int, w: int, edge: int) -> tuple[int, int]:
    """transformers' get_resize_output_image_size(default_to_square=False): the short side becomes edge, the
    long one int(edge · long / short) (truncated)."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(edge * long / short)
    return (new_long, edge) if w <= h else (edge, new_long)


def center_crop(arr: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """image_transforms.center_crop on an (H, W[, C]) array: top = (H − h)//2; zero-padded (ceil half on the
    top/left) where the crop is larger than the image."""
    h, w = arr.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return arr[top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = np.zeros((nh, nw, *arr.shape[2:]), dtype=arr.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    padded[tp : tp + h, lp : lp + w] = arr
    top, left = top + tp, left + lp
    return padded[max(0, top) : min(nh, top + ch), max(0, left) : min(nw, left + cw)]


def apply_steps(img, steps: tuple[Step, ...], resample: int) -> np.ndarray:
    """A PIL image (RGB or L) through the resize/crop steps -> uint8 array (H, W[, C])."""
    from PIL import Image

    arr = None
    for step in steps:
        if step[0] == "crop":
            arr = center_crop(np.asarray(img) if arr is None else arr, step[1], step[2])
            continue
        if arr is not None:
            img = Image.fromarray(np.ascontiguousarray(arr))
            arr = None
        w, h = img.size
        th, tw = (step[1], step[2]) if step[0] == "warp" else shortest_edge_size(h, w, step[1])
        img = img.resize((tw, th), resample=resample)  # reducing_gap None, as transformers
    return np.array(img if arr is None else arr, dtype=np.uint8)


def output_size(steps: tuple[Step, ...]) -> tuple[int, int] | None:
    """(h, w) every image has after the steps; None when it depends on the image (a shortest-edge resize with
    no crop after it)."""
    size = None
    for step in steps:
        size = (step[1], step[2]) if step[0] in ("warp", "crop") else None
    return size


def processor_steps(proc) -> tuple[tuple[Step, ...], int, str]:
    """(steps, PIL filter, note) of a transformers image processor, its quirks included; note says where the
    processor's own output size is not fixed (peftlab then crops to a square to batch)."""
    kind = type(proc).__name__.removesuffix("Pil").removesuffix("Fast").removesuffix("ImageProcessor")
    size = _size(getattr(proc, "size", None))
    crop = _size(getattr(proc, "crop_size", None))
    resample = int(getattr(proc, "resample", None) if getattr(proc, "resample", None) is not None else BILINEAR)
    steps: list[Step] = []
    if getattr(proc, "do_resize", True) and size:
        se = size.get("shortest_edge")
        if kind == "ConvNext":
            pct = getattr(proc, "crop_pct", None) or 224 / 256
            steps += [("shortest", int(se / pct)), ("crop", se, se)] if se < 384 else [("warp", se, se)]
        elif kind == "Levit" and se:
            steps.append(("shortest", int((256 / 224) * se)))
        elif kind == "PoolFormer" and getattr(proc, "crop_pct", None) is not None:
            pct = proc.crop_pct
            if se:
                steps.append(("shortest", int(se / pct)))
            elif size["height"] == size["width"]:  # a square size is treated as a shortest edge (aspect kept)
                steps.append(("shortest", int(size["height"] / pct)))
            else:
                steps.append(("warp", int(size["height"] / pct), int(size["width"] / pct)))
        elif se and not size.get("longest_edge"):
            steps.append(("shortest", se))
        elif size.get("height") and size.get("width"):
            steps.append(("warp", size["height"], size["width"]))
        else:
            raise ValueError(f"size {size} (not height/width or shortest_edge)")
    if getattr(proc, "do_center_crop", False) and crop and kind != "Segformer":  # SegFormer never crops
        steps.append(("crop", crop["height"], crop["width"]))
    note = ""
    if output_size(tuple(steps)) is None:
        edge = next((s[1] for s in reversed(steps) if s[0] == "shortest"), None)
        if edge is None:
            raise ValueError("no resize or crop gives a fixed input size")
        steps.append(("crop", edge, edge))
        note = (
            f"the image processor keeps each image's aspect ratio without cropping; peftlab crops the centre "
            f"{edge}×{edge} to batch images"
        )
    return tuple(steps), resample, note


def processor_affine(proc, channels: int) -> tuple[tuple[float, ...], tuple[float, ...], float, bool]:
    """(mean, std, rescale, bgr) such that the processor's rescale and normalisation are
    (x·rescale − mean) / std per channel of the uint8 image, then the channel order flipped when bgr."""
    kind = type(proc).__name__.removesuffix("Pil").removesuffix("Fast").removesuffix("ImageProcessor")
    rescale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0
    normalize = bool(getattr(proc, "do_normalize", False)) and kind != "MobileViT"  # MobileViT never normalises
    mean = _per_channel(proc.image_mean if normalize else 0.0, channels)
    std = _per_channel(proc.image_std if normalize else 1.0, channels)
    if kind == "EfficientNet":
        offset = 1.0 if getattr(proc, "do_rescale", True) and getattr(proc, "rescale_offset", False) else 0.0
        mean = tuple(m + offset for m in mean)  # (x·r − 1 − mean) / std
        if getattr(proc, "include_top", True):  # divides by std a second time (mean 0)
            second = _per_channel(proc.image_std, channels)
            std = tuple(s * t for s, t in zip(std, second))
    bgr = kind == "MobileViT" and bool(getattr(proc, "do_flip_channel_order", True))
    return mean, std, rescale, bgr


def _per_channel(v, channels: int) -> tuple[float, ...]:
    vals = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]
    return tuple(vals * channels if len(vals) == 1 else vals)


def _size(s) -> dict:
    if s is None:
        return {}
    if isinstance(s, int):
        return {"height": s, "width": s}
    return {k: v for k, v in (dict(s) if not isinstance(s, dict) else s).items() if v}


def describe_steps(steps: tuple[Step, ...], resample: int) -> str:
    parts = []
    for s in steps:
        if s[0] == "warp":
            parts.append(f"resize to {s[1]}×{s[2]}")
        elif s[0] == "shortest":
            parts.append(f"resize the shortest edge to {s[1]}")
        else:
            parts.append(f"centre crop {s[1]}×{s[2]}")
    return ", ".join(parts) + f" ({RESAMPLE_NAMES.get(resample, resample)})"
