"""Full fine-tuning: every parameter trains, at one lr or with layer-wise lr decay (deeper layers faster)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, base_lines
from ..theory.lines import Line
from .registry import Capabilities, Choice, MethodConfig, Prepared, register


@dataclass
class FullConfig(MethodConfig):
    lr: float = field(default=0.00027, metadata={"help": "peak learning rate (AdamW)"})  # bench/tune_defaults.py
    layer_decay: float = field(
        default=1.0,
        metadata={
            "help": "layer-wise lr decay: the head trains at lr, block i of n at lr·decay^(n−i), the embeddings "
            "at lr·decay^(n+1); 1 = one lr for all"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._require(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]")


def _formula(an: Anatomy, cfg) -> list[Line]:
    return base_lines(an, embeddings=True, frozen_blocks=0, final_norm=True)


@register(
    "full",
    FullConfig,
    "train every parameter",
    formula=_formula,
    search={"layer_decay": Choice((1.0, 0.9, 0.75, 0.65))},  # BEiT and MAE fine-tune ViT-B at 0.65, ViT-L at 0.75
    caps=Capabilities(conv2d="any"),
)
def full(model: nn.Module, arch: Arch, cfg: FullConfig, total_steps: int) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    if cfg.layer_decay == 1:
        return Prepared(model)
    top = arch.num_blocks + 1
    scale = {n: cfg.layer_decay ** (top - arch.depth_of(n)) for n, _ in model.named_parameters()}
    return Prepared(model, lr_scale=scale)
