"""The training loop. One loop for every method: methods act through hooks (Prepared.after_step), the
data path through DataPath, early stopping and search pruning through epoch callbacks; nothing here
branches on a method's name.

Only the validation split chooses: the checkpoint (best epoch, or the last), early stopping, a search's
pruning. The test split is scored once, at the end, with the weights chosen; FitResult counts it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data import Task
from ..errors import UserError
from ..methods import Prepared
from ..models import ImageSpec
from .batches import data_path
from .ddp import _sync, pad_count, shard
from .measure import attributed_memory, step_flops
from .metrics import evaluate
from .modes import train_mode


@dataclass
class FitResult:
    """What one training run produced. start: validation metrics before training; val: validation metrics
    of the selected epoch; test: test metrics of the selected weights (None when not scored); history: per
    epoch train loss and validation metrics; times in seconds; the data path's record; the model, holding
    the selected weights."""

    start: dict | None
    val: dict | None
    test: dict | None
    history: list[dict]
    selected_epoch: int
    selection: str  # what chose the weights: "best validation accuracy", "last epoch (...)"
    stopped_early: int | None  # the epoch after which early stopping ended training
    train_s: float
    eval_s: float
    steps: int
    images_seen: int
    processes: int
    path: dict
    flops_per_image: float
    model: torch.nn.Module
    test_evaluations: int = 0  # how many times the test split was scored (1 when scored)
    memory: dict | None = None  # on the CPU: the peak memory one training step attributes to the method
    extra: dict = field(default_factory=dict)


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopTraining(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an epoch callback to end training after this epoch (early stopping)."""


EpochCallback = Callable[[dict], None]  # called with each epoch's record; may raise StopTraining


class EarlyStopping:
    """Stop when validation accuracy has not improved for `patience` epochs."""

    def __init__(self, patience: int):
        self.patience, self.best, self.since = patience, -math.inf, 0

    def __call__(self, record: dict) -> None:
        if record["val_accuracy"] > self.best:
            self.best, self.since = record["val_accuracy"], 0
        else:
            self.since += 1
            if self.since >= self.patience:
                raise StopTraining


def _better(ev: dict, best: dict | None) -> bool:
    """Higher validation accuracy; on a tie, lower validation loss."""
    return best is None or (ev["accuracy"], -ev["loss"]) > (best["accuracy"], -best["loss"])


@contextlib.contextmanager
def untouched(model: torch.nn.Module):
    """A measuring step leaves no trace: the random state (dropout masks) and every buffer (BatchNorm
    statistics) are as before it."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        yield
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: the trainable parameters and every buffer (e.g. BatchNorm statistics)."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
    return {n: t.detach().clone() for n, t in model.state_dict().items() if n in keep}


def param_groups(model: torch.nn.Module, lr: float, scale: dict[str, float] | None) -> list[dict]:
    """The optimizer's groups: one per lr multiplier (layer-wise decay), in parameter order. The scheduler
    scales every group's lr by the same factor, so the ratios hold through warmup and decay."""
    groups: dict[float, list] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((scale or {}).get(n, 1.0), []).append(p)
    return [{"params": ps, "lr": lr * k} for k, ps in groups.items()]


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
    callbacks: Sequence[EpochCallback] = (),
    score_test: bool = True,
    measure_memory: bool = True,
) -> FitResult:
    """Train prepared.model on task.train; evaluate on task.val before training and after every epoch;
    keep the weights cfg.checkpoint says (the best validation epoch, or the last; the last when there is
    no validation set); then score task.test once with them (unless score_test is False: a search's trial)."""
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    model = prepared.model
    params = [p for p in model.parameters() if p.requires_grad]
    device = accelerator.device
    optimizer = torch.optim.AdamW(
        param_groups(model, lr, prepared.lr_scale), lr=lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
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
    raw = accelerator.unwrap_model(model)
    path = data_path(model, task, spec, cfg, accelerator, seed, prepared.caps)
    train_s = path.info.get("cache_s", 0.0)  # building a prefix cache is training work: it counts
    has_val = len(task.val) > 0
    score = lambda role: evaluate(  # noqa: E731
        model,
        lambda idx: path.logits(role, idx),
        getattr(task, role),
        accelerator,
        cfg.eval_batch_size,
        task.num_classes,
    )
    labels = task.train.labels.to(device)  # once: no host-to-device copy per step

    first = shard(torch.arange(min(n, 4 * world), device=device), rank, world)  # FLOPs scale with the batch:
    with untouched(raw), accelerator.autocast():  # 4 images do; counted on a real batch, gradients dropped
        flops_per_image = step_flops(path.train_loss, first, labels[first]) / len(first)
    optimizer.zero_grad(set_to_none=True)
    memory = None
    if measure_memory and device.type != "cuda":  # GPUs count allocations themselves (max_memory_allocated)
        batch = shard(torch.arange(min(n, cfg.batch_size), device=device), rank, world)

        def one_step() -> None:
            with accelerator.autocast():
                loss = path.train_loss(batch, labels[batch])
            loss.backward()

        with untouched(raw):
            memory = attributed_memory(
                one_step, sum(p.numel() * p.element_size() for p in params), path.info.get("cache_bytes", 0)
            )
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    start = score("val") if has_val else None
    eval_s = time.perf_counter() - t0
    history, step, stopped = [], 0, None
    best, best_epoch, best_state = None, 0, None
    keep_best = has_val and cfg.checkpoint == "best"
    shuffle = torch.Generator().manual_seed(seed)  # the data order depends on the seed only
    seen = n + pad_count(n, cfg, world)  # samples per epoch, over all processes
    # disable=None: tqdm draws no bar when stderr is not a terminal (a log file gets one line per epoch instead)
    bar = tqdm(
        total=total_steps,
        desc=desc,
        disable=None if progress and accelerator.is_main_process else True,
        leave=False,
        unit="step",
    )
    train_mode(model)  # BatchNorms that do not train stay in eval mode
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
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "seconds": seconds,
            "lr": lr * scheduler.get_last_lr()[0] / scheduler.base_lrs[0],
        }
        if has_val:
            t0 = time.perf_counter()
            ev = score("val")
            eval_s += time.perf_counter() - t0
            record |= {"val_accuracy": ev["accuracy"], "val_loss": ev["loss"]}
            if _better(ev, best):
                best, best_epoch = ev, epoch + 1
                best_state = _snapshot(raw) if keep_best and epoch + 1 < cfg.epochs else None
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{ev['accuracy']:.3f}")
        history.append(record)
        try:
            for callback in callbacks:
                callback(record)
        except StopTraining:
            stopped = epoch + 1
            break
    bar.close()
    last = len(history)
    if keep_best:
        if best_state is not None and best_epoch != last:  # back to the best validation epoch's weights
            raw.load_state_dict(best_state, strict=False)
        selected, selection, val = best_epoch, "best validation accuracy", best
    else:
        why = "no validation set" if not has_val else "--checkpoint last"
        val = ev if has_val else None
        selected, selection = last, f"last epoch ({why})"
    test, evaluations = None, 0
    if score_test:
        t0 = time.perf_counter()
        test, evaluations = score("test"), 1  # the one time the test split is looked at
        eval_s += time.perf_counter() - t0
    if path.restore:
        path.restore()  # the model leaves as it came: its own last block
    return FitResult(
        start=start,
        val=val,
        test=test,
        history=history,
        selected_epoch=selected,
        selection=selection,
        stopped_early=stopped,
        train_s=train_s,
        eval_s=eval_s,
        steps=step,
        images_seen=seen * last,
        processes=world,
        path=path.info,
        flops_per_image=flops_per_image,
        model=raw,
        test_evaluations=evaluations,
        memory=memory,
    )
