"""Methods that train a part of the model as it is: the head, the last N blocks, all but the first N
blocks, every bias (BitFit). Nothing is added; the trained tensors are saved as they are."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import Unsupported, UserError
from ..models.arch import Arch
from ..theory.anatomy import Anatomy, base_lines
from ..theory.lines import Line
from .registry import Capabilities, Choice, MethodConfig, Prepared, freeze_all_but, register

# nothing is added: the trained tensors replace the base's, so nothing is left to merge at inference
AS_IS = Capabilities(conv2d="any")


# ---------------------------------------------------------------- parameter formulas
def _head(an: Anatomy, cfg) -> list[Line]:
    return base_lines(an)


def _last(an: Anatomy, cfg) -> list[Line]:
    n = last_blocks(an.arch, cfg)
    return base_lines(an, frozen_blocks=an.num_blocks - n, final_norm=bool(cfg.final_norm and an.arch.neck))


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
    lr: float = field(default=0.014, metadata={"help": "peak learning rate (AdamW)"})  # bench/tune_defaults.py


@register("head", HeadConfig, "train the classification head only (linear probe)", formula=_head, caps=AS_IS)
def head(model: nn.Module, arch: Arch, cfg: HeadConfig, total_steps: int) -> Prepared:
    freeze_all_but(model, list(arch.heads))
    return Prepared(model)


# ---------------------------------------------------------------- last N blocks
@dataclass
class LastConfig(MethodConfig):
    lr: float = field(default=0.0038, metadata={"help": "peak learning rate (AdamW)"})  # bench/tune_defaults.py
    blocks: int = field(default=1, metadata={"help": "number N of final blocks (or stages, with unit=stages) to train"})
    final_norm: bool = field(
        default=False,
        metadata={
            "help": "also train what lies between the last block and the head (the final norm; a CNN's last conv)"
        },
    )
    unit: str = field(
        default="blocks",
        metadata={"help": "blocks: the last N blocks in forward order, across stages; stages: the last N stages whole"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.blocks < 1:
            raise UserError(f"last.blocks must be >= 1 (got {self.blocks}); use 'head' for none")
        self._require(self.unit in ("blocks", "stages"), "unit", "blocks or stages")


def last_blocks(arch: Arch, cfg: LastConfig) -> int:
    """How many final blocks train: N, or every block of the last N stages."""
    if cfg.unit == "stages":
        stages = sorted(set(arch.stages))
        if len(stages) < 2:
            raise Unsupported("last.unit=stages: this model's blocks are one stack, without stages")
        if cfg.blocks > len(stages):
            raise Unsupported(f"last.blocks={cfg.blocks} stages but the model has {len(stages)} stages")
        return sum(1 for s in arch.stages if s >= stages[-cfg.blocks])
    if cfg.blocks > arch.num_blocks:
        raise Unsupported(f"last.blocks={cfg.blocks} but the model has {arch.num_blocks} blocks")
    return cfg.blocks


@register(
    "last",
    LastConfig,
    "train the last N blocks (across stages, with what runs between them) and the head, the rest frozen",
    formula=_last,
    search={"blocks": Choice((1, 2, 3)), "final_norm": Choice((False, True))},
    caps=AS_IS,
)
def last(model: nn.Module, arch: Arch, cfg: LastConfig, total_steps: int) -> Prepared:
    first = arch.num_blocks - last_blocks(arch, cfg)
    train = arch.block_names()[first:] + arch.trained_between(first) + list(arch.heads)
    if cfg.final_norm:
        train += list(arch.neck)
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
            raise Unsupported(f"freeze-first.blocks={n} but the model has {num_blocks} blocks")
        return n


@register(
    "freeze-first",
    FreezeFirstConfig,
    "freeze the embeddings and the first N blocks; train the rest (later blocks, what runs between them, "
    "final norm, head)",
    "Yosinski et al. 2014, How transferable are features in deep neural networks?",
    formula=_freeze_first,
    caps=AS_IS,
)
def freeze_first(model: nn.Module, arch: Arch, cfg: FreezeFirstConfig, total_steps: int) -> Prepared:
    n = cfg.frozen_blocks(arch.num_blocks)
    freeze_all_but(model, arch.block_names()[n:] + arch.trained_between(n) + list(arch.neck) + list(arch.heads))
    return Prepared(model)


# ---------------------------------------------------------------- BitFit
@dataclass
class BitFitConfig(MethodConfig):
    lr: float = field(default=2e-2, metadata={"help": "peak learning rate (AdamW)"})


@register(
    "bitfit",
    BitFitConfig,
    "train every bias (Linear, conv, norm β, patch embedding) and the head",
    "Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based "
    "Masked Language-models",
    formula=_bitfit,
    caps=AS_IS,
)
def bitfit(model: nn.Module, arch: Arch, cfg: BitFitConfig, total_steps: int) -> Prepared:
    freeze_all_but(model, list(arch.heads))
    for name, p in model.named_parameters():
        if name == "bias" or name.endswith(".bias"):
            p.requires_grad_(True)
    return Prepared(model)
