"""Pretrain the bundled model: a small ViT trained from scratch on Fashion-MNIST source classes.

The default fine-tuning task (classes 3,4,6,7,9) is never seen here, with or without labels, so fine-tuning
it is real transfer. The recipe: cross-entropy on the source labels plus a *linear* reconstruction of each
augmented view from the [CLS] feature (what a classification head reads). Cross-entropy alone keeps only
what separates the source classes (a probe on such features lost to raw pixels on the unseen classes);
the reconstruction term makes the feature keep a linear code of the image besides. The decoder is used
for pretraining only and is not saved. The protocol is peftlab's own: a stratified validation slice of
the source classes' training images chooses the epoch kept, and their test images are scored once.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DataOptions
from ..data import fmnist_classes, load_task
from ..errors import UserError
from ..models import ImageSpec, fit_head
from ..results import write_json_atomic
from ..training import make_accelerator
from ..training.measure import environment
from ..training.metrics import evaluate

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # pixel mean/std of the Fashion-MNIST training images
SIDE = 28  # Fashion-MNIST images are 28 x 28, one channel


@dataclass
class PretrainConfig:
    out: str = "pretrained/peftlab-vit-tiny"
    seed: int = 0
    classes: str = "0,1,2,5,8"  # Fashion-MNIST source labels: T-shirt/top, Trouser, Pullover, Sandal, Bag
    epochs: int = 48
    batch_size: int = 256
    lr: float = 1e-3  # peak; linear warmup over the first epoch, cosine decay to 0
    weight_decay: float = 0.05  # on tensors of 2+ dims (matrices, [CLS] token, positions); not biases, norms
    reconstruction: float = 2.0  # weight of the linear [CLS] -> pixels MSE (normalised units); 0: cross-entropy only
    crop_scale: float = 0.6  # random resized crop keeps [crop_scale, 1] of the area (1: no crop)
    flip: float = 0.5  # probability of a horizontal flip
    jitter: float = 0.2  # brightness/contrast gain in [1 - jitter, 1 + jitter], offset within +-jitter/4
    hidden_size: int = 128
    layers: int = 6
    heads: int = 4
    mlp_size: int = 512
    patch_size: int = 7
    train_size: int = 0  # source training images (0: all that the validation slice leaves); small for a smoke test

    def __post_init__(self):
        for name in ("epochs", "batch_size", "hidden_size", "layers", "heads", "mlp_size", "patch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"pretrain --{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if not self.lr > 0 or self.train_size < 0 or self.weight_decay < 0 or self.reconstruction < 0:
            raise UserError("pretrain --lr must be > 0, --train-size, --weight-decay and --reconstruction >= 0")
        if not (0 < self.crop_scale <= 1 and 0 <= self.flip <= 1 and 0 <= self.jitter < 1):
            raise UserError(
                f"pretrain: --crop-scale must be in (0, 1], --flip in [0, 1], --jitter in [0, 1) (got "
                f"{self.crop_scale}, {self.flip}, {self.jitter})"
            )
        if self.hidden_size % self.heads or SIDE % self.patch_size:
            raise UserError(
                f"pretrain: --hidden-size {self.hidden_size} must divide by --heads {self.heads}, and 28 pixels by "
                f"--patch-size {self.patch_size}"
            )
        if fmnist_classes(self.task) is None:
            raise UserError(
                f"pretrain --classes '{self.classes}': give at least 2 distinct Fashion-MNIST labels 0-9, "
                "e.g. 0,1,2,5,8 or 0-4"
            )

    @property
    def task(self) -> str:
        return f"fashion-mnist:{self.classes}"


def vit_config(cfg: PretrainConfig, label_names: list[str]):
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.mlp_size,
        image_size=28,
        patch_size=cfg.patch_size,
        num_channels=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )


def augment(x: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator) -> torch.Tensor:
    """float [N, 1, H, W] in [0, 1] -> a random view of each image, in [0, 1]: a resized crop (area share in
    [crop_scale, 1], aspect ratio in [3/4, 4/3]), a horizontal flip, brightness and contrast jitter. Every
    draw comes from gen, so the seed fixes every view."""
    n = len(x)
    u = lambda: torch.rand(n, generator=gen)  # noqa: E731
    area = cfg.crop_scale + (1 - cfg.crop_scale) * u()
    ratio = torch.exp((math.log(3 / 4) + math.log(16 / 9) * u()) * (cfg.crop_scale < 1))  # 1 when not cropping
    sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # crop side / image side
    tx, ty = (2 * u() - 1) * (1 - sx), (2 * u() - 1) * (1 - sy)  # crop centre, in [-1, 1] image units
    flip = torch.where(u() < cfg.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain, offset = 1 + cfg.jitter * (2 * u() - 1), cfg.jitter / 4 * (2 * u() - 1)
    return (x * gain.view(-1, 1, 1, 1) + offset.view(-1, 1, 1, 1)).clamp(0, 1)


def pretrain(cfg: PretrainConfig, progress: bool = True, log=print) -> dict:
    """Train, keep the epoch with the best source-validation accuracy, score the source test split once,
    write the model folder (weights, config, image processor) and its record, pretrain.json."""
    from transformers import ViTForImageClassification, ViTImageProcessorPil, get_cosine_schedule_with_warmup

    t_start = time.perf_counter()
    spec = ImageSpec(SIDE, SIDE, 1, (FMNIST_MEAN,), (FMNIST_STD,))
    task = load_task(DataOptions(cfg.task, train_size=cfg.train_size, test_size=0), spec, seed=cfg.seed, warn=log)
    torch.manual_seed(cfg.seed)
    model = ViTForImageClassification(vit_config(cfg, task.label_names))
    fit_head(model, task.label_names, cfg.seed)
    decoder = nn.Linear(cfg.hidden_size, SIDE * SIDE)  # pretraining only: [CLS] -> the view's pixels, linearly
    params = list(model.parameters()) + list(decoder.parameters())
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    n = len(task.train)
    steps = max(1, n // cfg.batch_size)  # per epoch; the last partial batch is dropped (a new order each epoch)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(steps, cfg.epochs * steps // 10), cfg.epochs * steps)
    accelerator = make_accelerator("cpu")

    def accuracy(split) -> float:  # the project's evaluation: eval mode, every image once
        logits_of = lambda idx: model(pixel_values=spec.normalize(split.images[idx])).logits  # noqa: E731
        return evaluate(model, logits_of, split, accelerator, 1000, task.num_classes)["accuracy"]

    views = torch.Generator().manual_seed(cfg.seed + 1)  # augmentation draws
    order = torch.Generator().manual_seed(cfg.seed)  # data order
    log(
        f"pretraining on {cfg.task}: {n} train / {len(task.val)} validation / {len(task.test)} test images, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {cfg.epochs} epochs x {steps} steps"
    )
    history, best, best_state, best_epoch = [], -1.0, None, 0
    for epoch in range(1, cfg.epochs + 1):
        t0, sums = time.perf_counter(), torch.zeros(2)
        model.train()
        perm = torch.randperm(n, generator=order)
        for b in range(steps):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = augment(task.train.images[idx].float().div_(255), cfg, views)
            x = (x - FMNIST_MEAN) / FMNIST_STD
            cls = model.vit(pixel_values=x).last_hidden_state[:, 0]  # final-norm [CLS]: what the head reads
            ce = F.cross_entropy(model.classifier(cls), task.train.labels[idx])
            rec = F.mse_loss(decoder(cls), x.flatten(1))
            loss = ce + cfg.reconstruction * rec
            if not math.isfinite(loss.item()):
                raise UserError(f"pretrain: the loss became {loss.item()} in epoch {epoch}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            sums += torch.tensor([ce.item(), rec.item()])
        val = accuracy(task.val)
        ce_mean, rec_mean = (sums / steps).tolist()
        history.append(
            {"epoch": epoch, "train_cross_entropy": ce_mean, "train_reconstruction_mse": rec_mean,
             "val_accuracy": val, "seconds": time.perf_counter() - t0}
        )  # fmt: skip
        if progress:
            log(f"  epoch {epoch}: cross-entropy {ce_mean:.4f}, reconstruction {rec_mean:.4f}, validation {val:.4f}")
        if val > best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    test = accuracy(task.test)  # the source classes' test split, scored once
    target = Path(cfg.out)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    ViTImageProcessorPil(
        size={"height": SIDE, "width": SIDE}, image_mean=[FMNIST_MEAN], image_std=[FMNIST_STD], do_convert_rgb=False
    ).save_pretrained(target)
    weights = target / "model.safetensors"
    record = {
        "command": "peftlab pretrain " + shlex.join(sys.argv[2:])
        if sys.argv[1:2] == ["pretrain"]
        else "peftlab pretrain",
        "config": asdict(cfg),
        "data": f"Fashion-MNIST {cfg.task} ({', '.join(task.label_names)}): {n} training images, "
        f"{len(task.val)} validation images (a stratified slice of the training split: it chose epoch "
        f"{best_epoch}); accuracy on all {len(task.test)} test images of those classes",
        "objective": f"cross-entropy + {cfg.reconstruction} x MSE of a linear reconstruction of the augmented "
        "view's normalised pixels from the final-norm [CLS] feature (decoder not saved)",
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "selected_epoch": best_epoch,
        "final_accuracy": test,
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "wall_s": time.perf_counter() - t_start,
        "env": environment(),
    }
    write_json_atomic(target / "pretrain.json", record)
    log(
        f"wrote {target} ({record['weights_bytes'] / 1e6:.2f} MB), test accuracy {test:.4f} on {cfg.task}, "
        f"{record['wall_s']:.0f} s"
    )
    return record
