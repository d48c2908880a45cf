"""LoRA-like updates with another budget, through PEFT: VB-LoRA (factors composed from one shared
vector bank), RandLoRA (full rank from shared random bases), MiSS (one shard shared across the input) and
SHiRA (a sparse set of trained weight entries).

Where an option must fit the adapted Linears' widths (a vector length dividing them, a rank no larger than
they allow), it is fitted the same way in the formula and in the method, and the formula line says so."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, Shape, per_shape, with_peft
from ..theory.lines import Line, formula
from .peftwrap import TARGETS_HELP, common_divisor, fitted, linear_dims, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register

PEFT_CAPS = Capabilities(peft_format=True)


def _dims(an: Anatomy, roles: list[str]) -> list[tuple[int, int]]:
    return [(sh.din, sh.dout) for sh in an.shapes(roles)]


# ---------------------------------------------------------------- VB-LoRA
@dataclass
class VbLoraConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=4, metadata={"help": "rank of every update B·A"})
    num_vectors: int = field(default=256, metadata={"help": "vectors in the bank shared by all adapted Linears"})
    vector_length: int = field(
        default=256, metadata={"help": "length b of each vector (fitted to divide every adapted width)"}
    )
    topk: int = field(default=2, metadata={"help": "vectors mixed (softmax over the top-k logits) per sub-vector"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter branch's input"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(self.vector_length >= 1, "vector_length", ">= 1")
        self._require(1 <= self.topk <= self.num_vectors, "topk", f"in [1, num_vectors={self.num_vectors}]")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


def _vector_length(dims: list[tuple[int, int]], want: int) -> int:
    return common_divisor([x for pair in dims for x in pair], want)


def _vblora(an: Anatomy, cfg) -> list[Line]:
    """Per Linear: the logits that pick bank vectors for A (r × d_in/b) and B (d_out/b × r), N_v each; and
    the bank (N_v vectors of length b) once."""
    roles = method_roles(an.arch, cfg)
    b = _vector_length(_dims(an, roles), cfg.vector_length)
    env = {"r": cfg.r, "N_v": cfg.num_vectors, "b": b}
    added = per_shape(
        an,
        roles,
        "VB-LoRA logits of A and B",
        lambda sh: (f"r·N_v·({sh.din_sym}+{sh.dout_sym})/b", env, fitted("b", b, cfg.vector_length)),
    )
    p = formula("N_v·b", {**an.env, **env})
    added.append(Line("VB-LoRA vector bank (shared)", p.symbols, p.numbers, p.count, True, "added"))
    return with_peft(an, added)


@register(
    "vblora",
    VbLoraConfig,
    "LoRA whose A and B are assembled from top-k mixtures of one trained vector bank shared by all Linears",
    "Li et al. 2024, VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks",
    formula=_vblora,
    search={"r": Choice((2, 4, 8)), "num_vectors": Choice((64, 256)), "vector_length": Choice((16, 64, 256))},
    # A and B both come from the random bank: the update is small but not zero at the start
    caps=Capabilities(identity_at_init=False, peft_format=True),
)
def vblora(model: nn.Module, arch: Arch, cfg: VbLoraConfig, total_steps: int) -> Prepared:
    import peft

    roles = method_roles(arch, cfg)
    config = peft.VBLoRAConfig(
        r=cfg.r,
        num_vectors=cfg.num_vectors,
        vector_length=_vector_length(linear_dims(model, arch, roles), cfg.vector_length),
        topk=cfg.topk,
        vblora_dropout=cfg.dropout,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


# ---------------------------------------------------------------- RandLoRA
@dataclass
class RandLoraConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(
        default=32, metadata={"help": "rank of each shared random basis (⌈min(d_in, d_out)/r⌉ bases per Linear)"}
    )
    alpha: int = field(default=640, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter branch's input"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    prng_key: int = field(default=0, metadata={"help": "seed of the shared random bases"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(self.alpha >= 1, "alpha", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


def _randlora(an: Anatomy, cfg) -> list[Line]:
    """Per Linear with n = min(d_in, d_out) and k = ⌈n/r⌉ bases: λ (r × k) and γ (k × n)."""
    roles = method_roles(an.arch, cfg)

    def per_layer(sh: Shape):
        n_sym, n = (sh.din_sym, sh.din) if sh.din <= sh.dout else (sh.dout_sym, sh.dout)
        k = math.ceil(n / cfg.r)
        return f"k·(r + {n_sym})", {"r": cfg.r, "k": k}, f"k = ⌈{n}/r⌉ = {k} bases"

    added = per_shape(an, roles, "RandLoRA scales λ and γ", per_layer)
    added.append(Line("shared random bases (frozen buffers, not parameters)", "0", "0", 0, False, "added"))
    return with_peft(an, added)


@register(
    "randlora",
    RandLoraConfig,
    "full-rank update Σₖ Bₖ·diag(λₖ)·Aₖ·diag(γ) over shared frozen random low-rank bases; trains λ, γ",
    "Albert et al. 2025, RandLoRA: Full-rank parameter-efficient fine-tuning of large models",
    formula=_randlora,
    search={"r": Choice((8, 16, 32)), "alpha": Choice((320, 640))},
    caps=PEFT_CAPS,
)
def randlora(model: nn.Module, arch: Arch, cfg: RandLoraConfig, total_steps: int) -> Prepared:
    """ΔW = (alpha/r)·Σₖ Bₖ·diag(λₖ)·Aₖ·diag(γ), frozen random Aₖ, Bₖ; λ starts at 0: the identity."""
    import peft

    config = peft.RandLoraConfig(
        r=cfg.r,
        randlora_alpha=cfg.alpha,
        randlora_dropout=cfg.dropout,
        projection_prng_key=cfg.prng_key,
        save_projection=True,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


# ---------------------------------------------------------------- MiSS (Bone's successor)
@dataclass
class MissConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(
        default=64, metadata={"help": "shard size (at most the smallest adapted input width: fitted down to it)"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter branch's input"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


def _miss_r(dims: list[tuple[int, int]], want: int) -> int:
    return min([want] + [d_in for d_in, _ in dims])  # PEFT: r <= in_features


def _miss(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    r = _miss_r(_dims(an, roles), cfg.r)
    return with_peft(
        an, per_shape(an, roles, "MiSS shared shard", lambda sh: (f"r·{sh.dout_sym}", {"r": r}, fitted("r", r, cfg.r)))
    )


@register(
    "miss",
    MissConfig,
    "one trained r × d_out shard shared by every r-wide slice of the input (MiSS, Bone's successor)",
    "Kang et al. 2025, MiSS: Balancing LoRA Performance and Efficiency with Simple Shard Sharing",
    formula=_miss,
    search={"r": Choice((8, 16, 32, 64))},
    caps=PEFT_CAPS,
)
def miss(model: nn.Module, arch: Arch, cfg: MissConfig, total_steps: int) -> Prepared:
    """ΔW·x = D·(Σᵢ x_i): the input cut into r-wide slices x_i (zero-padded), summed, times one trained
    shard D (d_out × r) that starts at 0: the identity."""
    import peft

    roles = method_roles(arch, cfg)
    config = peft.MissConfig(
        r=_miss_r(linear_dims(model, arch, roles), cfg.r),
        miss_dropout=cfg.dropout,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


# ---------------------------------------------------------------- SHiRA
@dataclass
class ShiraConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(
        default=32,
        metadata={"help": "r·(d_in + d_out) weight entries train per Linear, LoRA r's budget (fitted to the sizes)"},
    )
    mask_seed: int = field(default=0, metadata={"help": "seed of the random choice of trained entries"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")


def _shira_r(dims: list[tuple[int, int]], want: int) -> int:
    # PEFT refuses more trained entries than the layer has: r·(d_in + d_out) <= d_in·d_out
    return max(1, min([want] + [i * o // (i + o) for i, o in dims]))


def _shira(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    r = _shira_r(_dims(an, roles), cfg.r)
    return with_peft(
        an,
        per_shape(
            an,
            roles,
            "SHiRA sparse weight entries",
            lambda sh: (f"r·({sh.din_sym}+{sh.dout_sym})", {"r": r}, fitted("r", r, cfg.r)),
        ),
    )


@register(
    "shira",
    ShiraConfig,
    "trains a fixed random sparse set of r·(d_in + d_out) entries of each chosen Linear's weight",
    "Bhardwaj et al. 2024, Sparse High Rank Adapters (SHiRA)",
    formula=_shira,
    search={"r": Choice((4, 8, 16, 32))},
    caps=PEFT_CAPS,
)
def shira(model: nn.Module, arch: Arch, cfg: ShiraConfig, total_steps: int) -> Prepared:
    """ΔW = S, nonzero only on a fixed random mask (seeded) of r·(d_in + d_out) entries; S = 0 at init."""
    import peft

    roles = method_roles(arch, cfg)
    config = peft.ShiraConfig(
        r=_shira_r(linear_dims(model, arch, roles), cfg.r),
        random_seed=cfg.mask_seed,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    config.mask_fn = _shira_mask
    return Prepared(wrap(model, config))


def _shira_mask(base_layer: nn.Module, r: int, random_seed: int | None = None, **kwargs):
    """PEFT's random mask; for a weightless (meta) model drawn on the CPU instead, where PEFT's own fails
    (it cannot find the mask's nonzero entries on the meta device). The same entries either way."""
    from peft.tuners.shira.mask_functions import random_mask

    if base_layer.weight.device.type != "meta":
        return random_mask(base_layer, r, random_seed, **kwargs)
    with torch.device("cpu"):  # also inside a `with torch.device("meta")` block
        stand_in = nn.Linear(1, 1, bias=False)  # what random_mask reads: the widths, and a CPU weight's device
        stand_in.in_features, stand_in.out_features = base_layer.in_features, base_layer.out_features
        return random_mask(stand_in, r, random_seed, **kwargs)
