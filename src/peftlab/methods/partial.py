"""Methods that train a part of the model as it is: the head, the last N blocks, all but the first N
blocks, every bias (BitFit). Nothing is added; the trained tensors are saved as they are."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import UserError
from ..models.arch import Arch
from ..theory.anatomy import Anatomy, base_lines
from ..theory.lines import Line
from .registry import Capabilities, Choice, MethodConfig, Prepared, freeze_all_but, register

# nothing is added: the trained tensors replace the base's, so nothing is left to merge at inference
AS_IS = Capabilities(conv2d=True)


# ---------------------------------------------------------------- parameter formulas
def _head(an: Anatomy, cfg) -> list[Line]:
    return base_lines(an)


def _last(an: Anatomy, cfg) -> list[Line]:
    if cfg.blocks > an.num_blocks:
        raise UserError(f"last.blocks={cfg.blocks} but the model has {an.num_blocks} blocks")
    return base_lines(
        an, frozen_blocks=an.num_blocks - cfg.blocks, final_norm=bool(cfg.final_norm and an.arch.final_norm)
    )


def _freeze_first(an: Anatomy, cfg) -> list[Line]:
    return base_lines(an, frozen_blocks=cfg.frozen_blocks(an.num_blocks), final_norm=True)


def _bitfit(an: Anatomy, cfg) -> list[Line]:
    p = an.biases_all()  # every parameter named *.bias outside the head (whose bias is in the head line)
    return base_lines(an) + [
        Line(
            "biases (patch embedding, blocks incl. LayerNorm β, final norm)",
            p.symbols,
            p.numbers,
            p.count,
            True,
            "subset",
        )
    ]


# ---------------------------------------------------------------- head
@dataclass
class HeadConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})


@register("head", HeadConfig, "train the classification head only (linear probe)", formula=_head, caps=AS_IS)
def head(model: nn.Module, arch: Arch, cfg: HeadConfig, total_steps: int) -> Prepared:
    freeze_all_but(model, [arch.classifier])
    return Prepared(model)


# ---------------------------------------------------------------- last N blocks
@dataclass
class LastConfig(MethodConfig):
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    blocks: int = field(default=1, metadata={"help": "number of final transformer blocks to train"})
    final_norm: bool = field(default=False, metadata={"help": "also train the norm after the last block"})

    def __post_init__(self):
        super().__post_init__()
        if self.blocks < 1:
            raise UserError(f"last.blocks must be >= 1 (got {self.blocks}); use 'head' for none")


@register(
    "last",
    LastConfig,
    "train the last N transformer blocks and the head, the rest frozen",
    formula=_last,
    search={"blocks": Choice((1, 2, 3)), "final_norm": Choice((False, True))},
    caps=AS_IS,
)
def last(model: nn.Module, arch: Arch, cfg: LastConfig, total_steps: int) -> Prepared:
    if cfg.blocks > arch.num_blocks:
        raise UserError(f"last.blocks={cfg.blocks} but the model has {arch.num_blocks} blocks")
    train = arch.block_names()[-cfg.blocks :] + [arch.classifier]
    if cfg.final_norm and arch.final_norm:
        train.append(arch.final_norm)
    freeze_all_but(model, train)
    return Prepared(model)


# ---------------------------------------------------------------- first N blocks frozen
@dataclass
class FreezeFirstConfig(MethodConfig):
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    blocks: int | None = field(
        default=None,
        metadata={
            "help": "number of first transformer blocks to freeze (with the embeddings); "
            "default: half the model's blocks, rounded down"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._require(self.blocks is None or self.blocks >= 0, "blocks", ">= 0")

    def frozen_blocks(self, num_blocks: int) -> int:
        """The number of frozen blocks for a model with num_blocks blocks."""
        n = num_blocks // 2 if self.blocks is None else self.blocks
        if n > num_blocks:
            raise UserError(f"freeze-first.blocks={n} but the model has {num_blocks} blocks")
        return n


@register(
    "freeze-first",
    FreezeFirstConfig,
    "freeze the embeddings and the first N blocks; train the later blocks, final norm and head",
    "Yosinski et al. 2014, How transferable are features in deep neural networks?",
    formula=_freeze_first,
    caps=AS_IS,
)
def freeze_first(model: nn.Module, arch: Arch, cfg: FreezeFirstConfig, total_steps: int) -> Prepared:
    n = cfg.frozen_blocks(arch.num_blocks)
    freeze_all_but(model, arch.block_names()[n:] + [arch.final_norm] * bool(arch.final_norm) + [arch.classifier])
    return Prepared(model)


# ---------------------------------------------------------------- BitFit
@dataclass
class BitFitConfig(MethodConfig):
    lr: float = field(default=2e-2, metadata={"help": "peak learning rate (AdamW)"})


@register(
    "bitfit",
    BitFitConfig,
    "train every bias (Linear, LayerNorm β, patch embedding) and the head",
    "Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based "
    "Masked Language-models",
    formula=_bitfit,
    caps=AS_IS,
)
def bitfit(model: nn.Module, arch: Arch, cfg: BitFitConfig, total_steps: int) -> Prepared:
    freeze_all_but(model, [arch.classifier])
    for name, p in model.named_parameters():
        if name == "bias" or name.endswith(".bias"):
            p.requires_grad_(True)
    return Prepared(model)
