"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, base_lines
from ..theory.lines import Line
from .registry import Capabilities, MethodConfig, Prepared, register


@dataclass
class FullConfig(MethodConfig):
    lr: float = field(default=0.00027, metadata={"help": "peak learning rate (AdamW)"})  # bench/tune_defaults.py


def _formula(an: Anatomy, cfg) -> list[Line]:
    return base_lines(an, embeddings=True, frozen_blocks=0, final_norm=True)


@register("full", FullConfig, "train every parameter", formula=_formula, caps=Capabilities(conv2d="any"))
def full(model: nn.Module, arch: Arch, cfg: FullConfig, total_steps: int) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    return Prepared(model)
