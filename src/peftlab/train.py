"""The training loop and evaluation. One loop for every method: methods act through hooks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import Split, Task
from .errors import UserError
from .measure import step_flops
from .methods import Prepared
from .models import ImageSpec


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # fraction of all steps spent warming the lr up linearly from 0
    max_grad_norm: float = 1.0  # gradient clipping on the global L2 norm; 0 turns it off
    augment: str = "none"  # none | flip | crop-flip (random resized crop + flip), batched on the device
    prefix_cache: bool = True  # train a frozen prefix's outputs once computed (exact; off with augmentation)


def make_accelerator(device: str = "auto", precision: str = "auto"):
    """An Accelerator for one process: bf16 autocast on GPUs that have it, fp32 on the CPU
    (bf16 gains only ~1.2x for small ViTs on CPU and costs accuracy checks their determinism)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    precision = {"fp32": "no"}.get(precision, precision)
    AcceleratorState._reset_state(reset_partial_state=False)  # allow several runs in one process
    GradientState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=precision)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shard(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's share of a batch of indices: positions rank, rank+W, ... after padding the batch
    to a multiple of W by wrapping around (only an uneven last batch repeats a few samples). Each
    optimizer step thus sees the same global batch as one process would, whatever the process count."""
    if world == 1:
        return idx
    pad = -len(idx) % world
    return torch.cat([idx, idx[:pad]])[rank::world]


@torch.no_grad()
def evaluate(model, logits_of, split: Split, accelerator, batch_size: int, num_classes: int) -> dict:
    """Accuracy, top-5, macro-F1, per-class accuracy and the confusion matrix on one split.
    logits_of(indices) scores a batch of the split. With several processes each scores its shard;
    logits are gathered and every sample counted exactly once."""
    was_training = model.training
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = shard(torch.arange(len(split), device=accelerator.device), rank, world)
    logits = []
    for i in range(0, len(mine), batch_size):
        with accelerator.autocast():
            logits.append(logits_of(mine[i : i + batch_size]).float())
    model.train(was_training)
    logits_t = torch.cat(logits) if logits else torch.empty(0, num_classes, device=accelerator.device)
    if world > 1:  # gather (index, logits) from every process; drop the padding's repeats
        order = accelerator.gather(mine.to(accelerator.device)).cpu()
        logits_t = accelerator.gather(logits_t).cpu()
        first = torch.full((len(split),), -1, dtype=torch.long)
        first[order.flip(0)] = torch.arange(len(order) - 1, -1, -1)  # position of each index's first copy
        logits_t = logits_t[first]
    return metrics_from_logits(logits_t.cpu(), split.labels, num_classes)


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


def data_path(model, task: Task, spec: ImageSpec, cfg: TrainConfig, accelerator, seed: int):
    """How batches reach the model: (train_loss(idx, y), eval_logits(idx), info, restore). With a frozen
    prefix (and no augmentation, one process) the prefix runs once per image and only the rest trains.
    Either way the last block computes only the [CLS] row where it can; restore() (or None) undoes that."""
    from .prefix import PrefixCache, same_logits, trim_last_block

    device = accelerator.device
    raw = accelerator.unwrap_model(model)
    stored = {id(split): split.images for split in (task.train, task.eval)}  # where batches are gathered from
    pixels = lambda split, idx: spec.normalize(  # noqa: E731
        stored[id(split)][idx.to(stored[id(split)].device)].to(device, non_blocking=True)
    )
    probe = pixels(task.eval, torch.arange(min(8, len(task.eval))))  # a few images for the self-checks
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
        if cfg.prefix_cache and cfg.augment == "none" and accelerator.num_processes == 1
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
        stored.update({id(split): resident(split.images, device) for split in (task.train, task.eval)})
        gen = torch.Generator().manual_seed(seed + 1)  # augmentation draws, seeded apart from the data order

        def train_loss(idx, y):
            x = augment_batch(pixels(task.train, idx), cfg.augment, gen)
            return model(pixel_values=x, labels=y).loss  # the model's loss: PEFT methods may add terms

        eval_logits = lambda idx: model(pixel_values=pixels(task.eval, idx)).logits  # noqa: E731
        return train_loss, eval_logits, {"path": "full"} | info, restore
    t0 = time.perf_counter()
    feats = {}
    raw.eval()
    for name, split in (("train", task.train), ("eval", task.eval)):
        parts = []
        for i in range(0, len(split), cfg.eval_batch_size):
            with accelerator.autocast():
                parts.append(cache.features(pixels(split, torch.arange(i, min(i + cfg.eval_batch_size, len(split))))))
        feats[name] = torch.cat(parts)
    raw.train()
    info = {
        "path": f"cached prefix: embeddings + {k} of {k + len(cache.suffix)} blocks run once per image",
        **info,
        "prefix_blocks": k,
        "cache_s": time.perf_counter() - t0,
        "cache_bytes": sum(f.numel() * f.element_size() for f in feats.values()),
    }

    def train_loss(idx, y):
        return torch.nn.functional.cross_entropy(cache.logits(feats["train"][idx.to(device)]), y)

    return train_loss, lambda idx: cache.logits(feats["eval"][idx.to(device)]), info, restore


@torch.no_grad()
def _eval_logits(model, raw, x: torch.Tensor, accelerator) -> torch.Tensor | None:
    """The model's logits for x in eval mode under the training's autocast; None if the forward fails."""
    was = raw.training
    raw.eval()
    try:
        with accelerator.autocast():
            return model(pixel_values=x).logits.float()
    except Exception:  # noqa: BLE001 - e.g. a trimmed block the model's forward does not fit
        return None
    finally:
        raw.train(was)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    pred = logits.argmax(1)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(conf, (labels.numpy(), pred.numpy()), 1)
    tp = np.diag(conf).astype(float)
    support, predicted = conf.sum(1), conf.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0  # macro-F1 over the classes that occur in this split
    # top-5 says something only with more than 5 classes (with 5 it is always 1)
    top5 = float((logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean()) if num_classes > 5 else None
    return {
        "examples": len(labels),  # how many samples the metrics count (each exactly once)
        "accuracy": float((pred == labels).float().mean()),
        "top5_accuracy": top5,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "per_class_accuracy": [float(r) if s else None for r, s in zip(recall, support)],
        "confusion": conf.tolist(),
    }


def fit(
    prepared: Prepared,
    task: Task,
    spec: ImageSpec,
    cfg: TrainConfig,
    lr: float,
    seed: int,
    accelerator,
    progress: bool = True,
    desc: str = "",
) -> dict:
    """Train prepared.model on task.train; evaluate before, and after every epoch, on task.eval."""
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    model = prepared.model
    params = [p for p in model.parameters() if p.requires_grad]
    device = accelerator.device
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    n = len(task.train)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise UserError(
            f"--batch-size {cfg.batch_size} must be a multiple of the {world} processes "
            "(it is the global batch, split across them)"
        )
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    # the scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it
    # once per process
    model, optimizer = accelerator.prepare(model, optimizer)
    train_loss_of, eval_logits_of, path, restore = data_path(model, task, spec, cfg, accelerator, seed)
    train_s = path.get("cache_s", 0.0)  # building a prefix cache is training work: it counts
    evaluate_ = lambda: evaluate(
        model,
        eval_logits_of,
        task.eval,
        accelerator,
        cfg.eval_batch_size,  # noqa: E731
        task.num_classes,
    )
    labels = task.train.labels.to(device)  # once: no host-to-device copy per step

    first = shard(torch.arange(min(n, 4 * world), device=device), rank, world)  # FLOPs scale with the batch:
    with accelerator.autocast():  # 4 images do; counted on a real batch, then the gradients are dropped
        flops_per_image = step_flops(train_loss_of, first, labels[first]) / len(first)
    optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    baseline = evaluate_()
    eval_s = time.perf_counter() - t0
    history, step = [], 0
    shuffle = torch.Generator().manual_seed(seed)  # the data order depends on the seed only
    seen = n + pad_count(n, cfg, world)  # samples per epoch, over all processes
    bar = tqdm(
        total=total_steps, desc=desc, disable=not (progress and accelerator.is_main_process), leave=False, unit="step"
    )
    model.train()
    for epoch in range(cfg.epochs):
        _sync(device)
        t_epoch = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        # the same permutation on every process (drawn on the CPU: the order depends on the seed alone,
        # not on the device); moved to the device once per epoch
        for batch in torch.randperm(n, generator=shuffle).to(device).split(cfg.batch_size):
            idx = shard(batch, rank, world)  # each process takes its share
            y = labels[idx]
            with accelerator.autocast():
                loss = train_loss_of(idx, y)
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            if prepared.after_step:
                prepared.after_step(step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * len(idx)
            bar.update(1)
        # mean over the epoch's samples; one device sync per epoch, not per step
        train_loss = float(accelerator.reduce(loss_sum, "sum")) / seen
        _sync(device)
        seconds = time.perf_counter() - t_epoch
        train_s += seconds
        if not math.isfinite(train_loss):
            bar.close()
            raise Diverged(f"training loss became {train_loss} in epoch {epoch + 1}; lower the learning rate")
        t0 = time.perf_counter()
        ev = evaluate_()
        eval_s += time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "eval_accuracy": ev["accuracy"],
                "eval_loss": ev["loss"],
                "seconds": seconds,
            }
        )
        bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{ev['accuracy']:.3f}")
    bar.close()
    if restore:
        restore()  # the model leaves as it came: its own last block
    best = max(history, key=lambda h: h["eval_accuracy"])
    return {
        "baseline": baseline,
        "final": ev,
        "history": history,
        "best_epoch": best["epoch"],
        "best_accuracy": best["eval_accuracy"],
        "train_s": train_s,
        "eval_s": eval_s,
        "steps": total_steps,
        "images_seen": seen * cfg.epochs,
        "processes": world,
        "path": path,
        "flops_per_image": flops_per_image,
        "model": accelerator.unwrap_model(model),
    }


def pad_count(n: int, cfg: TrainConfig, world: int) -> int:
    """Samples repeated per epoch to split an uneven last batch evenly across processes."""
    return -(n % cfg.batch_size) % world if world > 1 else 0
