"""LyCORIS methods through PEFT: LoHa (Hadamard product of low-rank factors) and LoKr (Kronecker product)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, Shape, per_shape, with_peft
from ..theory.lines import Line
from .peftwrap import TARGETS_HELP, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register


# ---------------------------------------------------------------- LoHa, LoKr (LyCORIS)
@dataclass
class LohaConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of each of the two factors (B₁A₁)⊙(B₂A₂)"})
    alpha: float = field(default=8, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    rank_dropout: float = field(default=0.0, metadata={"help": "dropout on the update's rows during training"})
    module_dropout: float = field(default=0.0, metadata={"help": "probability of skipping a whole adapter"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.rank_dropout < 1, "rank_dropout", "in [0, 1)")
        self._require(0 <= self.module_dropout < 1, "module_dropout", "in [0, 1)")


def _loha(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    return with_peft(
        an,
        per_shape(an, roles, "LoHa (B₁A₁)⊙(B₂A₂)", lambda sh: (f"2·r·({sh.din_sym}+{sh.dout_sym})", {"r": cfg.r}, "")),
    )


def _factorization(dim: int, factor: int = -1) -> tuple[int, int]:
    """dim = m·n with m <= n, as LyCORIS/PEFT split a LoKr dimension: m = factor when it divides dim,
    else the largest divisor pair with m <= factor (or near √dim for factor -1) found by ascending search."""
    if factor > 0 and dim % factor == 0:
        return factor, dim // factor
    factor = dim if factor == -1 else factor
    m, n = 1, dim
    while m < n:
        new_m = m + 1
        while dim % new_m:
            new_m += 1
        new_n = dim // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (m, n) if m <= n else (n, m)


def _lokr(an: Anatomy, cfg) -> list[Line]:
    """W₁ ⊗ W₂ with out = o1·o2, in = i1·i2 (o1 <= o2, i1 <= i2); W₁ (o1×i1) is full unless decompose_both and
    r < max(o1, i1)/2, W₂ (o2×i2) is factored to rank r when r < max(o2, i2)/2 (PEFT's rule)."""
    roles = method_roles(an.arch, cfg)

    def per_layer(sh: Shape):
        cin = sh.channels_in[1]  # a conv's kernel stays in W₂: (o2, i2, k_h, k_w)
        (o1, o2), (i1, i2) = _factorization(sh.dout, cfg.decompose_factor), _factorization(cin, cfg.decompose_factor)
        k = "·k" if sh.k > 1 else ""
        w1 = "r·(o1+i1)" if cfg.decompose_both and cfg.r < max(o1, i1) / 2 else "o1·i1"
        w2 = f"r·(o2+i2{k})" if cfg.r < max(o2, i2) / 2 else f"o2·i2{k}"
        return (
            f"{w1} + {w2}",
            {"r": cfg.r, "o1": o1, "o2": o2, "i1": i1, "i2": i2, "k": sh.k},
            f"out {sh.dout} = {o1}·{o2}, in {cin} = {i1}·{i2}" + (f", kernel {sh.k}" if sh.k > 1 else ""),
        )

    return with_peft(an, per_shape(an, roles, "LoKr W₁⊗W₂", per_layer))


@register(
    "loha",
    LohaConfig,
    "Hadamard product of two low-rank updates (B₁A₁)⊙(B₂A₂) on chosen Linears",
    "Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for Communication-Efficient Federated Learning",
    formula=_loha,
    search={"r": Choice((2, 4, 8, 16)), "alpha": Choice((4, 8, 16))},
    caps=Capabilities(peft_format=True, conv2d="any"),
)
def loha(model: nn.Module, arch: Arch, cfg: LohaConfig, total_steps: int) -> Prepared:
    import peft

    config = peft.LoHaConfig(
        r=cfg.r,
        alpha=cfg.alpha,
        rank_dropout=cfg.rank_dropout,
        module_dropout=cfg.module_dropout,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


@dataclass
class LokrConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of the larger Kronecker factor (kept full if r >= its size/2)"})
    alpha: float = field(default=8, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    decompose_both: bool = field(default=False, metadata={"help": "also factor the smaller Kronecker factor to rank r"})
    decompose_factor: int = field(
        default=-1,
        metadata={"help": "size of the smaller factor of each dimension; -1: the divisor nearest its square root"},
    )
    rank_dropout: float = field(default=0.0, metadata={"help": "dropout on the update's rows during training"})
    module_dropout: float = field(default=0.0, metadata={"help": "probability of skipping a whole adapter"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(self.decompose_factor == -1 or self.decompose_factor >= 1, "decompose_factor", "-1 or >= 1")
        self._require(0 <= self.rank_dropout < 1, "rank_dropout", "in [0, 1)")
        self._require(0 <= self.module_dropout < 1, "module_dropout", "in [0, 1)")


@register(
    "lokr",
    LokrConfig,
    "Kronecker product of a small and a low-rank factor, W₁⊗(B₂A₂), on chosen Linears",
    "Yeh et al. 2024, Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model Evaluation",
    formula=_lokr,
    search={"r": Choice((2, 4, 8, 16)), "alpha": Choice((4, 8, 16))},
    caps=Capabilities(peft_format=True, conv2d="any"),
)
def lokr(model: nn.Module, arch: Arch, cfg: LokrConfig, total_steps: int) -> Prepared:
    import peft

    config = peft.LoKrConfig(
        r=cfg.r,
        alpha=cfg.alpha,
        decompose_both=cfg.decompose_both,
        decompose_factor=cfg.decompose_factor,
        rank_dropout=cfg.rank_dropout,
        module_dropout=cfg.module_dropout,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))
