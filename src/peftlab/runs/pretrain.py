"""Pretrain the bundled model: a small ViT trained from scratch on Fashion-MNIST classes 0-4.

The default fine-tuning task (classes 5-9) is never seen here, so fine-tuning it is real transfer.
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
    task = load_task(DataOptions(PRETRAIN_TASK), spec, seed=cfg.seed, warn=log)
    torch.manual_seed(cfg.seed)
    model = ViTForImageClassification(vit_config(cfg, task.label_names))
    fit_head(model, task.label_names, cfg.seed)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay)
    log(
        f"pretraining on {PRETRAIN_TASK}: {len(task.train)} train / {len(task.eval)} test images, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {cfg.epochs} epochs"
    )
    out = fit(Prepared(model), task, spec, tcfg, cfg.lr, cfg.seed, make_accelerator("cpu"), progress, desc="pretrain")
    for h in out.history:
        log(f"  epoch {h['epoch']}: train loss {h['train_loss']:.4f}, test accuracy {h['eval_accuracy']:.4f}")
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
        "data": f"Fashion-MNIST {PRETRAIN_TASK} ({', '.join(task.label_names)}): all {len(task.train)} "
        f"training images; accuracy on all {len(task.eval)} test images of those classes",
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "final_accuracy": out.final["accuracy"],
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
