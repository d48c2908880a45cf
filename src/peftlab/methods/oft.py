"""Orthogonal fine-tuning (OFT) through PEFT."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import nn

from ..errors import Unsupported
from ..models.arch import Arch
from ..theory.anatomy import Anatomy, Shape, per_shape, with_peft
from ..theory.lines import Line
from .peftwrap import TARGETS_HELP, linear_dims, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register


# ---------------------------------------------------------------- OFT
@dataclass
class OftConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    block_size: int = field(
        default=32,
        metadata={"help": "size of the orthogonal blocks (PEFT moves it to the nearest divisor of each input width)"},
    )
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    block_share: bool = field(default=False, metadata={"help": "one rotation block shared by all blocks of a Linear"})
    cayley_neumann: bool = field(
        default=True,
        metadata={"help": "approximate the Cayley transform by a Neumann series (faster, slightly less orthogonal)"},
    )
    module_dropout: float = field(default=0.0, metadata={"help": "probability of setting a rotation block to identity"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.block_size >= 1, "block_size", ">= 1")
        self._require(0 <= self.module_dropout < 1, "module_dropout", "in [0, 1)")


def _oft_block(d_in: int, size: int) -> int:
    """The block size PEFT's OFT uses for an input width: size if it divides d_in (at most d_in), else the
    nearest divisor of d_in, the smaller one on a tie."""
    if size >= d_in:
        return d_in
    if d_in % size == 0:
        return size
    up = size
    while up <= d_in and d_in % up:
        up += 1
    down = size
    while down > 1 and d_in % down:
        down -= 1
    return down if size - down <= up - size else up


def oft_roles(arch: Arch, cfg) -> list[str]:
    """The roles OFT adapts; PEFT's OFT reads any 4-D input as a conv's (N, C, H, W) and fails on a Linear fed a
    channels-last (B, H, W, C) map (ConvNeXt's pointwise Linears)."""
    roles = method_roles(arch, cfg)
    last = [r for r in roles if r in arch.channels_last]
    if last:
        raise Unsupported(
            f"oft cannot adapt {', '.join(last)}: PEFT's OFT takes a 4-D input for a conv's (N, C, H, W) and this "
            "model's Linear layers there read channels-last (B, H, W, C) maps"
        )
    return roles


def _oft(an: Anatomy, cfg) -> list[Line]:
    """Per Linear: d_in/s skew-symmetric s×s blocks of s·(s−1)/2 free entries (one block if block_share)."""
    roles = oft_roles(an.arch, cfg)

    def per_layer(sh: Shape):
        s = _oft_block(sh.din, cfg.block_size)
        expr = "s·(s−1)/2" if cfg.block_share else f"({sh.din_sym}/s)·s·(s−1)/2"
        return expr, {"s": s}, f"block s={s}" + (", shared" if cfg.block_share else "")

    return with_peft(an, per_shape(an, roles, "OFT rotations", per_layer))


@register(
    "oft",
    OftConfig,
    "block-diagonal orthogonal rotation (Cayley-parametrised) of the inputs of chosen Linears",
    "Qiu et al. 2023, Controlling Text-to-Image Diffusion by Orthogonal Finetuning",
    formula=_oft,
    search={"block_size": Choice((8, 16, 32, 64))},
    caps=Capabilities(peft_format=True, conv2d="1x1"),
)
def oft(model: nn.Module, arch: Arch, cfg: OftConfig, total_steps: int) -> Prepared:
    import peft

    roles = oft_roles(arch, cfg)
    config = peft.OFTConfig(
        r=0,
        oft_block_size=cfg.block_size,
        block_share=cfg.block_share,
        use_cayley_neumann=cfg.cayley_neumann,
        module_dropout=cfg.module_dropout,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    used = sorted({_oft_block(d_in, cfg.block_size) for d_in, _ in linear_dims(model, arch, roles)})
    adjusted = {"block_size": {"asked": cfg.block_size, "used": used}} if used != [cfg.block_size] else None
    with warnings.catch_warnings():  # PEFT's multi-line notice of the change: recorded and told once instead
        warnings.filterwarnings("ignore", message="Invalid `oft_block_size`")
        return Prepared(wrap(model, config), adjusted=adjusted)
