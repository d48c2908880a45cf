"""Pretrain the bundled model: a small ViT trained from scratch on Fashion-MNIST classes 0-4.

The default fine-tuning task (classes 5-9) is never seen here, so fine-tuning it is real transfer. The
protocol is peftlab's own: a stratified validation slice of the source classes' training images chooses the
epoch kept, and their test images are scored once.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import DataOptions, TrainConfig
from ..data import load_task
from ..errors import UserError
from ..methods import Prepared
from ..models import ImageSpec, fit_head
from ..results import write_json_atomic
from ..training import fit, make_accelerator
from ..training.measure import environment

PRETRAIN_TASK = "fashion-mnist:0-4"
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # pixel mean/std of the Fashion-MNIST training images


@dataclass
class PretrainConfig:
    out: str = "pretrained/peftlab-vit-tiny"
    seed: int = 0
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    hidden_size: int = 64
    layers: int = 6
    heads: int = 4
    mlp_size: int = 256
    patch_size: int = 4
    train_size: int = 0  # source training images (0: all that the validation slice leaves); small for a smoke test

    def __post_init__(self):
        for name in ("epochs", "batch_size", "hidden_size", "layers", "heads", "mlp_size", "patch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"pretrain --{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if not self.lr > 0 or self.train_size < 0 or self.weight_decay < 0:
            raise UserError("pretrain --lr must be > 0, --train-size and --weight-decay >= 0")
        if self.hidden_size % self.heads or 28 % self.patch_size:
            raise UserError(
                f"pretrain: --hidden-size {self.hidden_size} must divide by --heads {self.heads}, and 28 pixels by "
                f"--patch-size {self.patch_size}"
            )


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


def pretrain(cfg: PretrainConfig, progress: bool = True, log=print) -> dict:
    from transformers import ViTForImageClassification, ViTImageProcessorPil

    t_start = time.perf_counter()
    spec = ImageSpec(28, 28, 1, (FMNIST_MEAN,), (FMNIST_STD,))
    options = DataOptions(PRETRAIN_TASK, train_size=cfg.train_size, test_size=0)  # 0: all
    task = load_task(options, spec, seed=cfg.seed, warn=log)
    torch.manual_seed(cfg.seed)
    model = ViTForImageClassification(vit_config(cfg, task.label_names))
    fit_head(model, task.label_names, cfg.seed)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay)
    log(
        f"pretraining on {PRETRAIN_TASK}: {len(task.train)} train / {len(task.val)} validation / "
        f"{len(task.test)} test images, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {cfg.epochs} epochs"
    )
    out = fit(Prepared(model), task, spec, tcfg, cfg.lr, cfg.seed, make_accelerator("cpu"), progress, desc="pretrain")
    for h in out.history:
        log(f"  epoch {h['epoch']}: train loss {h['train_loss']:.4f}, validation accuracy {h['val_accuracy']:.4f}")
    target = Path(cfg.out)
    target.mkdir(parents=True, exist_ok=True)
    model = out.model
    model.save_pretrained(target, safe_serialization=True)
    ViTImageProcessorPil(
        size={"height": 28, "width": 28}, image_mean=[FMNIST_MEAN], image_std=[FMNIST_STD], do_convert_rgb=False
    ).save_pretrained(target)
    weights = target / "model.safetensors"
    record = {
        "command": "peftlab pretrain " + shlex.join(sys.argv[2:])
        if sys.argv[1:2] == ["pretrain"]
        else "peftlab pretrain",
        "config": asdict(cfg),
        "data": f"Fashion-MNIST {PRETRAIN_TASK} ({', '.join(task.label_names)}): {len(task.train)} training "
        f"images, {len(task.val)} validation images (a stratified slice of the training split: it chose epoch "
        f"{out.selected_epoch}); accuracy on all {len(task.test)} test images of those classes",
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "final_accuracy": out.test["accuracy"],  # the source classes' test split, scored once
        "history": out.history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "wall_s": time.perf_counter() - t_start,
        "env": environment(),
    }
    write_json_atomic(target / "pretrain.json", record)
    log(
        f"wrote {target} ({record['weights_bytes'] / 1e6:.2f} MB), test accuracy "
        f"{record['final_accuracy']:.4f}, {record['wall_s']:.0f} s"
    )
    return record
