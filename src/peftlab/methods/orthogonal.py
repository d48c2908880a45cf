"""Orthogonal updates of the frozen weights through PEFT: BOFT (butterfly products of block-diagonal
rotations, with an output scale) and HRA (a chain of Householder reflections)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, per_shape, with_peft
from ..theory.lines import Line
from .peftwrap import TARGETS_HELP, fitted, linear_dims, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register

ORTHOGONAL = Capabilities(peft_format=True, conv2d="groups=1, no same padding")  # dense convs, as PEFT allows


# ---------------------------------------------------------------- BOFT
@dataclass
class BoftConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    block_size: int = field(
        default=4,
        metadata={"help": "size b of the orthogonal blocks (fitted to the nearest size the input widths allow)"},
    )
    butterfly_factor: int = field(
        default=2,
        metadata={
            "help": "number m of butterfly factors multiplied together (lowered only where the input widths "
            "allow no b·2^(m−1) division)"
        },
    )
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    dropout: float = field(
        default=0.0, metadata={"help": "multiplicative dropout: probability of replacing a block by the identity"}
    )

    def __post_init__(self):
        super().__post_init__()
        self._require(self.block_size >= 1, "block_size", ">= 1")
        self._require(self.butterfly_factor >= 1, "butterfly_factor", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


def boft_factors(d_ins: list[int], block_size: int, factor: int) -> tuple[int, int]:
    """(b, m) that PEFT accepts for every one of these input widths, nearest the options: b divides every
    width; for m > 1, b is even and b·2^(m−1) divides every width (PEFT's butterfly rules). m is lowered
    only when no block size allows it (m = 1 always fits)."""
    g = math.gcd(*d_ins)
    for m in range(factor, 0, -1):
        ok = [b for b in range(1, g + 1) if g % (b * 2 ** (m - 1)) == 0 and (m == 1 or b % 2 == 0)]
        if ok:
            return min(ok, key=lambda b: (abs(b - block_size), b)), m
    raise AssertionError("m = 1 always fits")


def _boft(an: Anatomy, cfg) -> list[Line]:
    """Per Linear: F·(d_in/b) orthogonal b×b blocks (F butterfly factors), stored as full b×b matrices R
    (their skew part is what rotates), and one scale per output feature: F·d_in·b + d_out."""
    roles = method_roles(an.arch, cfg)
    b, m = boft_factors([sh.din for sh in an.shapes(roles)], cfg.block_size, cfg.butterfly_factor)
    note = f"{fitted('b', b, cfg.block_size)}; {fitted('F', m, cfg.butterfly_factor)} butterfly factors"
    return with_peft(
        an,
        per_shape(
            an,
            roles,
            "BOFT butterfly blocks R and output scales s",
            lambda sh: (f"F·{sh.din_sym}·b + {sh.dout_sym}", {"F": m, "b": b}, note),
        ),
    )


@register(
    "boft",
    BoftConfig,
    "orthogonal butterfly rotation of the inputs of chosen Linears, times a learned output scale",
    "Liu et al. 2024, Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization (BOFT)",
    formula=_boft,
    search={"block_size": Choice((2, 4, 8)), "butterfly_factor": Choice((1, 2, 3))},
    caps=ORTHOGONAL,
)
def boft(model: nn.Module, arch: Arch, cfg: BoftConfig, total_steps: int) -> Prepared:
    """W' = s ⊙ (W·R), R = Π_m Pᵢᵀ·diag(R_i1 … R_ik)·Pᵢ a product of m butterfly-permuted block-diagonal
    Cayley rotations (R = 0 at init: the identity; s = 1). The factor m asked is the factor used on every
    machine (peftwrap.use_peft), with b and m fitted to the input widths as boft_factors says."""
    import peft

    roles = method_roles(arch, cfg)
    b, m = boft_factors([d_in for d_in, _ in linear_dims(model, arch, roles)], cfg.block_size, cfg.butterfly_factor)
    config = peft.BOFTConfig(
        boft_block_size=b,
        boft_n_butterfly_factor=m,
        boft_dropout=cfg.dropout,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


# ---------------------------------------------------------------- HRA
@dataclass
class HraConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "number of Householder reflections (even: they start as equal pairs)"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})

    def __post_init__(self):
        super().__post_init__()
        self._require(
            self.r >= 2 and self.r % 2 == 0,
            "r",
            "an even number >= 2 (pairs of equal reflections make the identity at init)",
        )


def _hra(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    return with_peft(
        an, per_shape(an, roles, "HRA Householder vectors", lambda sh: (f"{sh.din_sym}·r", {"r": cfg.r}, ""))
    )


@register(
    "hra",
    HraConfig,
    "a chain of r Householder reflections of the inputs of chosen Linears, W·Π(I − 2uuᵀ/‖u‖²)",
    "Yuan et al. 2024, Bridging The Gap between Low-rank and Orthogonal Adaptation via Householder "
    "Reflection Adaptation (HRA)",
    formula=_hra,
    search={"r": Choice((2, 4, 8, 16))},
    caps=ORTHOGONAL,
)
def hra(model: nn.Module, arch: Arch, cfg: HraConfig, total_steps: int) -> Prepared:
    """W' = W·Π_{i=1..r}(I − 2uᵢuᵢᵀ/‖uᵢ‖²); the vectors start as equal pairs, whose reflections cancel:
    exactly the identity at init. Without the Gram-Schmidt option (apply_GS), which breaks that."""
    import peft

    config = peft.HRAConfig(
        r=cfg.r, apply_GS=False, target_modules=targets(arch, cfg), modules_to_save=list(arch.heads)
    )
    return Prepared(wrap(model, config))
