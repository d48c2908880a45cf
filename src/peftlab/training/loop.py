"""The training loop. One loop for every method: methods act through hooks (Prepared.after_step), the
data path through DataPath; nothing here branches on a method's name."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data import Task
from ..errors import UserError
from ..methods import Prepared
from ..models import ImageSpec
from .batches import data_path
from .ddp import _sync, pad_count, shard
from .measure import step_flops
from .metrics import evaluate


@dataclass
class FitResult:
    """What one training run produced: metrics before training (baseline) and after the last epoch
    (final), per-epoch history, times (s), counts, the data path's record, and the trained model."""

    baseline: dict
    final: dict
    history: list[dict]
    best_epoch: int
    best_accuracy: float
    train_s: float
    eval_s: float
    steps: int
    images_seen: int
    processes: int
    path: dict
    flops_per_image: float
    model: torch.nn.Module


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


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
) -> FitResult:
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
    path = data_path(model, task, spec, cfg, accelerator, seed, prepared.caps)
    train_s = path.info.get("cache_s", 0.0)  # building a prefix cache is training work: it counts
    evaluate_ = lambda: evaluate(model, path.eval_logits, task.eval, accelerator, cfg.eval_batch_size, task.num_classes)
    labels = task.train.labels.to(device)  # once: no host-to-device copy per step

    first = shard(torch.arange(min(n, 4 * world), device=device), rank, world)  # FLOPs scale with the batch:
    with accelerator.autocast():  # 4 images do; counted on a real batch, then the gradients are dropped
        flops_per_image = step_flops(path.train_loss, first, labels[first]) / len(first)
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
                loss = path.train_loss(idx, y)
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
    if path.restore:
        path.restore()  # the model leaves as it came: its own last block
    best = max(history, key=lambda h: h["eval_accuracy"])
    return FitResult(
        baseline=baseline,
        final=ev,
        history=history,
        best_epoch=best["epoch"],
        best_accuracy=best["eval_accuracy"],
        train_s=train_s,
        eval_s=eval_s,
        steps=total_steps,
        images_seen=seen * cfg.epochs,
        processes=world,
        path=path.info,
        flops_per_image=flops_per_image,
        model=accelerator.unwrap_model(model),
    )
