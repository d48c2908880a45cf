"""How batches reach the model: augmentation done batched on the device, images resident on the GPU,
and the data path of a run (the plain forward, or a cached frozen prefix and the [CLS]-row last block)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig
from ..data import Task
from ..methods import Capabilities
from ..models import ImageSpec
from .fastpaths import PrefixCache, same_logits, trim_last_block
from .modes import evaluating
from .prefixmemo import prefix_memo

ROLES = ("train", "val", "test")


@dataclass
class DataPath:
    """What the loop calls: train_loss(idx, y) -> loss on training images idx; logits(role, idx) -> logits
    of images idx of the 'val' or 'test' split; info for result.json (path, prefix-cache facts); restore()
    undoes the [CLS]-row last block (None when not trimmed)."""

    train_loss: Callable
    logits: Callable
    info: dict = field(default_factory=dict)
    restore: Callable[[], None] | None = None


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop (scale 0.08-1, aspect 3/4-4/3, as torchvision's default) and/or horizontal
    flip for a whole batch at once: one affine grid per image, sampled bilinearly on x's device."""
    if kind == "none":
        return x
    n = len(x)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    sx = sy = torch.ones(n)
    tx = ty = torch.zeros(n)
    if kind == "crop-flip":
        area = torch.empty(n).uniform_(0.08, 1.0, generator=gen)
        log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
        ratio = log_r.exp()
        sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # crop side / image side
        tx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sx)  # crop centre, in [-1, 1] coordinates
        ty = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sy)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = torch.nn.functional.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resident(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Where a split's uint8 images wait for their batches. On a GPU: moved there once when they take
    under a quarter of its free memory (a batch is then a gather on the device: no host copy, no sync
    per step); else, and on the CPU, where they are (each batch is then gathered and copied)."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # the allocator's spare
    return images.to(device) if images.numel() * images.element_size() < free / 4 else images


def data_path(
    model, task: Task, spec: ImageSpec, cfg: TrainConfig, accelerator, seed: int, caps: Capabilities | None = None
) -> DataPath:
    """How batches reach the model. With a frozen prefix (and no augmentation, one process) the prefix
    runs once per image and only the rest trains. Either way the last block computes only the [CLS] row
    where it can; DataPath.restore (or None) undoes that.

    caps are the method's (Prepared.caps): a method that adds tokens (caps.keeps_tokens False, e.g. VPT's
    prompts) changes what the blocks read after the embeddings, so no prefix is cached for it, wherever
    its parameters live. Its [CLS] row stays at position 0, which is all the [CLS]-row last block needs
    (checked against the whole forward, as for every method)."""
    caps = caps or Capabilities()
    device = accelerator.device
    raw = accelerator.unwrap_model(model)
    stored = {role: getattr(task, role).images for role in ROLES}  # where batches are gathered from
    pixels = lambda role, idx: spec.normalize(  # noqa: E731
        stored[role][idx.to(stored[role].device)].to(device, non_blocking=True)
    )
    probe_role = next(r for r in ("val", "test", "train") if len(getattr(task, r)))
    probe = pixels(probe_role, torch.arange(min(8, len(getattr(task, probe_role)))))  # for the self-checks
    low = accelerator.mixed_precision != "no"
    restore = None
    if cfg.prefix_cache:  # the last block's other rows never reach the head: compute the [CLS] row only
        whole = _eval_logits(model, raw, probe, accelerator)
        restore = trim_last_block(
            raw,
            lambda: (
                whole is not None
                and ((t := _eval_logits(model, raw, probe, accelerator)) is not None and same_logits(t, whole, low))
            ),
        )
    k = (
        PrefixCache.frozen_blocks(raw)
        if cfg.prefix_cache and cfg.augment == "none" and accelerator.num_processes == 1 and caps.keeps_tokens
        else 0
    )
    cache = PrefixCache(raw, k) if k and PrefixCache.deterministic(raw, k) else None
    info = {"last_block_cls_only": restore is not None}
    if cache is not None:
        # under the training's autocast: a model prepared for bf16 autocasts its own forward
        with accelerator.autocast():
            same = cache.matches_model(probe, low_precision=low)
        if not same:
            cache, info["prefix_cache"] = None, "not used: its forward differs from the model's own"
    if cache is None:  # every epoch reads every image: on a GPU, from its memory when they fit there
        stored.update({role: resident(getattr(task, role).images, device) for role in ROLES})
        gen = torch.Generator().manual_seed(seed + 1)  # augmentation draws, seeded apart from the data order

        def train_loss(idx, y):
            x = augment_batch(pixels("train", idx), cfg.augment, gen)
            out = model(pixel_values=x, labels=y)  # the model's loss: PEFT methods may add terms
            # a distilled model (DeiT, LeViT with teacher) takes no labels: its logits (the mean of its heads)
            loss = getattr(out, "loss", None)
            return loss if loss is not None else torch.nn.functional.cross_entropy(out.logits, y)

        logits = lambda role, idx: model(pixel_values=pixels(role, idx)).logits  # noqa: E731
        return DataPath(train_loss, logits, {"path": "full"} | info, restore)
    t0 = time.perf_counter()
    key = (k, cache.cls_only, spec, cfg.eval_batch_size, accelerator.mixed_precision, str(device))
    feats = prefix_memo.get(task, cache, key)
    reused = feats is not None
    if feats is None:
        feats = {}
        with evaluating(raw):
            for role in ROLES:
                parts, size = [], len(getattr(task, role))
                for i in range(0, size, cfg.eval_batch_size):
                    with accelerator.autocast():
                        parts.append(cache.features(pixels(role, torch.arange(i, min(i + cfg.eval_batch_size, size)))))
                feats[role] = torch.cat(parts) if parts else None
        prefix_memo.put(task, cache, key, feats)
    info = {
        "path": f"cached prefix: embeddings + {k} of {k + len(cache.suffix)} blocks run once per image",
        **info,
        "prefix_blocks": k,
        "cache_s": time.perf_counter() - t0,
        "cache_bytes": sum(f.numel() * f.element_size() for f in feats.values() if f is not None),
        **({"prefix_cache_reused": True} if reused else {}),
    }

    def train_loss(idx, y):
        return torch.nn.functional.cross_entropy(cache.logits(feats["train"][idx.to(device)]), y)

    return DataPath(train_loss, lambda role, idx: cache.logits(feats[role][idx.to(device)]), info, restore)


@torch.no_grad()
def _eval_logits(model, raw, x: torch.Tensor, accelerator) -> torch.Tensor | None:
    """The model's logits for x in eval mode under the training's autocast; None if the forward fails."""
    with evaluating(raw):
        try:
            with accelerator.autocast():
                return model(pixel_values=x).logits.float()
        except Exception:  # noqa: BLE001 - e.g. a trimmed block the model's forward does not fit
            return None
