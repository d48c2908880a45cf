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
def evaluate(model, split: Split, spec: ImageSpec, accelerator, batch_size: int, num_classes: int) -> dict:
    """Accuracy, top-5, macro-F1, per-class accuracy and the confusion matrix on one split. With several
    processes each scores its shard; logits are gathered and every sample counted exactly once."""
    was_training = model.training
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = shard(torch.arange(len(split)), rank, world)
    logits = []
    for i in range(0, len(mine), batch_size):
        x = spec.normalize(split.images[mine[i:i + batch_size]].to(accelerator.device, non_blocking=True))
        with accelerator.autocast():
            logits.append(model(pixel_values=x).logits.float())
    model.train(was_training)
    logits_t = torch.cat(logits) if logits else torch.empty(0, num_classes, device=accelerator.device)
    if world > 1:  # gather (index, logits) from every process; drop the padding's repeats
        order = accelerator.gather(mine.to(accelerator.device)).cpu()
        logits_t = accelerator.gather(logits_t).cpu()
        first = torch.full((len(split),), -1, dtype=torch.long)
        first[order.flip(0)] = torch.arange(len(order) - 1, -1, -1)  # position of each index's first copy
        logits_t = logits_t[first]
    return metrics_from_logits(logits_t.cpu(), split.labels, num_classes)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    pred = logits.argmax(1)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(conf, (labels.numpy(), pred.numpy()), 1)
    tp = np.diag(conf).astype(float)
    support, predicted = conf.sum(1), conf.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
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


def fit(prepared: Prepared, task: Task, spec: ImageSpec, cfg: TrainConfig, lr: float, seed: int,
        accelerator, progress: bool = True, desc: str = "") -> dict:
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
        raise UserError(f"--batch-size {cfg.batch_size} must be a multiple of the {world} processes "
                        "(it is the global batch, split across them)")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    # the scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it
    # once per process
    model, optimizer = accelerator.prepare(model, optimizer)
    evaluate_ = lambda: evaluate(model, task.eval, spec, accelerator, cfg.eval_batch_size, task.num_classes)  # noqa: E731

    t0 = time.perf_counter()
    baseline = evaluate_()
    eval_s = time.perf_counter() - t0
    history, train_s, step = [], 0.0, 0
    shuffle = torch.Generator().manual_seed(seed)  # the data order depends on the seed only
    seen = n + pad_count(n, cfg, world)  # samples per epoch, over all processes
    bar = tqdm(total=total_steps, desc=desc, disable=not (progress and accelerator.is_main_process), leave=False,
               unit="step")
    model.train()
    for epoch in range(cfg.epochs):
        _sync(device)
        t_epoch = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for batch in torch.randperm(n, generator=shuffle).split(cfg.batch_size):
            idx = shard(batch, rank, world)  # the same permutation on every process: each takes its share
            x = spec.normalize(task.train.images[idx].to(device, non_blocking=True))
            y = task.train.labels[idx].to(device, non_blocking=True)
            with accelerator.autocast():
                loss = model(pixel_values=x, labels=y).loss  # the model's loss: PEFT methods may add terms
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
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "eval_accuracy": ev["accuracy"],
                        "eval_loss": ev["loss"], "seconds": seconds})
        bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{ev['accuracy']:.3f}")
    bar.close()
    best = max(history, key=lambda h: h["eval_accuracy"])
    return {"baseline": baseline, "final": ev, "history": history, "best_epoch": best["epoch"],
            "best_accuracy": best["eval_accuracy"], "train_s": train_s, "eval_s": eval_s,
            "steps": total_steps, "images_seen": seen * cfg.epochs,
            "processes": world, "model": accelerator.unwrap_model(model)}


def pad_count(n: int, cfg: TrainConfig, world: int) -> int:
    """Samples repeated per epoch to split an uneven last batch evenly across processes."""
    return -(n % cfg.batch_size) % world if world > 1 else 0
