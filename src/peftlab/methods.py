"""Fine-tuning methods: one config dataclass plus one function each, in one small registry.

A method's function takes a freshly loaded classifier, its Arch and the planned number of optimizer
steps, and returns a Prepared model whose trainable parameters are exactly the method's. Methods
that must act during training (e.g. AdaLoRA's rank schedule) return a hook; the training loop never
branches on the method's name.

Every method trains the new classification head: PEFT methods through modules_to_save (PEFT keeps a
trainable copy beside the frozen original), the others by unfreezing it. Adapted modules always come
from the Arch's roles (query, key, value, output, fc1, fc2), never from hard-coded module names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
from torch import nn

from .errors import UserError
from .models import Arch


@dataclass
class Prepared:
    model: nn.Module
    after_step: Callable[[int, int], None] | None = None  # (step, total_steps) after optimizer.step()


@dataclass
class MethodConfig:
    """Options shared by every method. Each method's dataclass sets its own default lr."""

    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})

    def __post_init__(self):
        if not self.lr > 0:
            raise UserError(f"{self.method_name()}.lr must be > 0 (got {self.lr})")

    @classmethod
    def method_name(cls) -> str:
        return next((n for n, m in REGISTRY.items() if m.config_cls is cls), cls.__name__)

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _require(self, ok: bool, option: str, rule: str) -> None:
        """Raise '<method>.<option> must be <rule> (got <value>)' unless ok."""
        if not ok:
            raise UserError(f"{self.method_name()}.{option} must be {rule} (got {getattr(self, option)!r})")


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    apply: Callable[[nn.Module, Arch, MethodConfig, int], Prepared]  # (model, arch, cfg, total_steps)
    description: str
    paper: str


REGISTRY: dict[str, Method] = {}


def register(name: str, config_cls: type[MethodConfig], description: str, paper: str = ""):
    def deco(fn):
        REGISTRY[name] = Method(name, config_cls, fn, description, paper)
        return fn

    return deco


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise UserError(f"unknown method '{name}'; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def parse_methods(spec: str | list[str]) -> list[str]:
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    names = list(REGISTRY) if names == ["all"] else names
    for n in names:
        get(n)
    if not names:
        raise UserError("no methods given; use e.g. --methods head,last,lora,full")
    return names


def _freeze_all_but(model: nn.Module, prefixes: list[str]) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(any(name == q or name.startswith(q + ".") for q in prefixes))


def _peft(model: nn.Module, config) -> nn.Module:
    """Wrap with PEFT; the config already names the head in modules_to_save. The LoRA branches' input
    dropouts become CpuDropout (the same dropout, drawn faster on the CPU)."""
    import peft

    pm = peft.get_peft_model(model, config)
    for name, m in list(pm.named_modules()):
        if name.rsplit(".", 1)[-1] == "lora_dropout" and isinstance(m, nn.ModuleDict):
            for key, d in m.items():
                if type(d) is nn.Dropout and d.p > 0:
                    m[key] = CpuDropout(d.p)
    return pm


class CpuDropout(nn.Dropout):
    """nn.Dropout whose mask, on the CPU, takes 16 random bits per element, four per 64-bit draw. torch's
    CPU dropout draws a Mersenne-Twister number per element: for LoRA on the bundled ViT that was ~15% of
    a training step. An element is dropped when its bits fall below t = round(p·65536), so the dropped
    share is t/65536 (within 2^-17 of p), and kept values are scaled by 65536/(65536 - t): the expected
    output is exactly the input, as with nn.Dropout. Seeded by torch.manual_seed like it. Elsewhere
    (GPUs draw masks fast) it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0 and x.device.type == "cpu"):
            return super().forward(x)
        t = round(self.p * 65536)
        if t >= 65536:  # p rounds to 1: everything dropped
            return x * 0
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= t - 32768  # int16: uniform on ±32768
        return x * keep * (65536 / (65536 - t))


def _targets(arch: Arch, spec: str) -> str:
    """A method's 'targets' option -> PEFT target_modules regex over those roles' Linears."""
    return arch.target_regex(arch.resolve_roles(spec))


_TARGETS_HELP = "roles to adapt: any of query,key,value,output,fc1,fc2, attention, mlp or all-linear"


# ---------------------------------------------------------------- head
@dataclass
class HeadConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})


@register("head", HeadConfig, "train the classification head only (linear probe)")
def head(model: nn.Module, arch: Arch, cfg: HeadConfig, total_steps: int) -> Prepared:
    _freeze_all_but(model, [arch.classifier])
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


@register("last", LastConfig, "train the last N transformer blocks and the head, the rest frozen")
def last(model: nn.Module, arch: Arch, cfg: LastConfig, total_steps: int) -> Prepared:
    if cfg.blocks > arch.num_blocks:
        raise UserError(f"last.blocks={cfg.blocks} but the model has {arch.num_blocks} blocks")
    train = arch.block_names()[-cfg.blocks :] + [arch.classifier]
    if cfg.final_norm and arch.final_norm:
        train.append(arch.final_norm)
    _freeze_all_but(model, train)
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
)
def freeze_first(model: nn.Module, arch: Arch, cfg: FreezeFirstConfig, total_steps: int) -> Prepared:
    n = cfg.frozen_blocks(arch.num_blocks)
    _freeze_all_but(model, arch.block_names()[n:] + [arch.final_norm] * bool(arch.final_norm) + [arch.classifier])
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
)
def bitfit(model: nn.Module, arch: Arch, cfg: BitFitConfig, total_steps: int) -> Prepared:
    _freeze_all_but(model, [arch.classifier])
    for name, p in model.named_parameters():
        if name == "bias" or name.endswith(".bias"):
            p.requires_grad_(True)
    return Prepared(model)


# ---------------------------------------------------------------- LayerNorm tuning
@dataclass
class LayerNormConfig(MethodConfig):
    lr: float = field(default=2e-2, metadata={"help": "peak learning rate (AdamW)"})


def layer_norms(model: nn.Module, arch: Arch) -> list[str]:
    """Every LayerNorm of the model (found by type, not by name), the head excluded."""
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.LayerNorm) and n != arch.classifier and not n.startswith(arch.classifier + ".")
    ]


@register(
    "layernorm",
    LayerNormConfig,
    "train every LayerNorm's weight and bias (PEFT LN tuning: trainable copies) and the head",
    "Zhao et al. 2023, Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM Finetuning",
)
def layernorm(model: nn.Module, arch: Arch, cfg: LayerNormConfig, total_steps: int) -> Prepared:
    import peft

    names = layer_norms(model, arch)
    if not names:
        raise UserError(f"{type(model).__name__} has no LayerNorm to tune")
    with warnings.catch_warnings():  # PEFT's in/out-features probe warns on every LayerNorm it wraps
        warnings.filterwarnings("ignore", message="Unsupported layer type .*LayerNorm")
        pm = _peft(model, peft.LNTuningConfig(target_modules=names, modules_to_save=[arch.classifier]))
    return Prepared(pm)


# ---------------------------------------------------------------- LoRA and its variants
@dataclass
class LoraConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of the update B·A"})
    alpha: float = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA branch's input"})
    bias: str = field(default="none", metadata={"help": "train biases: none, all or lora_only"})
    targets: str = field(default="query,value", metadata={"help": _TARGETS_HELP})

    use_dora: ClassVar[bool] = False  # fixed per variant (not an option): set by the subclasses below
    use_rslora: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        self._require(self.bias in ("none", "all", "lora_only"), "bias", "none, all or lora_only")


@dataclass
class LoraAllConfig(LoraConfig):
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    targets: str = field(default="all-linear", metadata={"help": _TARGETS_HELP})


@dataclass
class RsLoraConfig(LoraConfig):
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    alpha: float = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha/√r"})

    use_rslora: ClassVar[bool] = True


@dataclass
class DoraConfig(LoraConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})

    use_dora: ClassVar[bool] = True


@register(
    "lora",
    LoraConfig,
    "low-rank updates W + (alpha/r)·B·A on chosen Linears, head trained",
    "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models",
)
def lora(model: nn.Module, arch: Arch, cfg: LoraConfig, total_steps: int) -> Prepared:
    """LoRA and its variants: the config class says which (use_dora, use_rslora)."""
    import peft

    config = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        bias=cfg.bias,
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
        target_modules=_targets(arch, cfg.targets),
        modules_to_save=[arch.classifier],
    )
    return Prepared(_peft(model, config))


register(
    "lora-all",
    LoraAllConfig,
    "LoRA on every Linear of the blocks (the lora preset targets=all-linear)",
    "Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs (LoRA on all linear layers)",
)(lora)
register(
    "rslora",
    RsLoraConfig,
    "LoRA with rank-stabilised scaling alpha/√r instead of alpha/r",
    "Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
)(lora)
register(
    "dora",
    DoraConfig,
    "LoRA on the direction plus a trained magnitude per output (weight-decomposed)",
    "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation",
)(lora)


# ---------------------------------------------------------------- AdaLoRA
@dataclass
class AdaLoraConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})
    init_r: int = field(default=12, metadata={"help": "rank P·Λ·Q of every adapted Linear at the start"})
    target_r: int = field(
        default=8, metadata={"help": "average rank kept after pruning (budget target_r × adapted Linears)"}
    )
    alpha: float = field(default=8, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter branch's input"})
    targets: str = field(default="query,value", metadata={"help": _TARGETS_HELP})
    tinit: float = field(
        default=0.1, metadata={"help": "fraction of the planned steps trained at init_r before pruning starts"}
    )
    tfinal: float = field(
        default=0.3, metadata={"help": "fraction of the planned steps trained at the final ranks after pruning ends"}
    )
    delta_t: int = field(default=1, metadata={"help": "steps between rank reallocations"})
    beta1: float = field(default=0.85, metadata={"help": "EMA factor of the importance (sensitivity)"})
    beta2: float = field(default=0.85, metadata={"help": "EMA factor of the importance's uncertainty"})
    orth_reg_weight: float = field(
        default=0.5, metadata={"help": "weight of the orthogonality penalty on P and Q added to the loss"}
    )

    def __post_init__(self):
        super().__post_init__()
        self._require(self.init_r >= 1, "init_r", ">= 1")
        self._require(1 <= self.target_r <= self.init_r, "target_r", f"in [1, init_r={self.init_r}]")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        self._require(0 <= self.tinit < 1, "tinit", "in [0, 1)")
        self._require(0 <= self.tfinal < 1 - self.tinit, "tfinal", f"in [0, 1 - tinit) = [0, {1 - self.tinit:g})")
        self._require(self.delta_t >= 1, "delta_t", ">= 1")
        self._require(0 <= self.beta1 < 1, "beta1", "in [0, 1)")
        self._require(0 <= self.beta2 < 1, "beta2", "in [0, 1)")
        self._require(self.orth_reg_weight >= 0, "orth_reg_weight", ">= 0")


@register(
    "adalora",
    AdaLoraConfig,
    "SVD-form low-rank updates P·Λ·Q whose ranks are pruned to a budget by importance during training",
    "Zhang et al. 2023, Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (AdaLoRA)",
)
def adalora(model: nn.Module, arch: Arch, cfg: AdaLoraConfig, total_steps: int) -> Prepared:
    import peft

    if total_steps < 1:
        raise UserError(f"adalora needs the planned number of optimizer steps (got {total_steps})")
    config = peft.AdaLoraConfig(
        init_r=cfg.init_r,
        target_r=cfg.target_r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        tinit=int(cfg.tinit * total_steps),
        tfinal=int(cfg.tfinal * total_steps),
        deltaT=cfg.delta_t,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        orth_reg_weight=cfg.orth_reg_weight,
        total_step=total_steps,
        target_modules=_targets(arch, cfg.targets),
        modules_to_save=[arch.classifier],
    )
    pm = _peft(model, config)
    # PeftModel.forward (no task type, as for image classifiers) calls the wrapped model directly and so
    # skips AdaLoraModel.forward, the one that adds the orthogonality penalty on P and Q to the loss when
    # labels are passed: route this instance's calls through it.
    pm.forward = pm.base_model.forward
    for name, p in pm.named_parameters():  # PEFT's rank counter is a Parameter; re-wrapped when PEFT moves it
        if ".ranknum." in name:  # to another device (meta, a GPU) it comes back trainable: keep it frozen
            p.requires_grad_(False)

    def allocate(step: int, steps: int) -> None:  # after optimizer.step(), before zero_grad(): grads are live
        if steps != total_steps:  # the schedule (tinit, tfinal, the final masking) was built for total_steps
            raise RuntimeError(f"adalora was prepared for {total_steps} optimizer steps but training runs {steps}")
        pm.base_model.update_and_allocate(step)

    return Prepared(pm, after_step=allocate)


# ---------------------------------------------------------------- LoHa, LoKr (LyCORIS)
@dataclass
class LohaConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of each of the two factors (B₁A₁)⊙(B₂A₂)"})
    alpha: float = field(default=8, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    targets: str = field(default="query,value", metadata={"help": _TARGETS_HELP})
    rank_dropout: float = field(default=0.0, metadata={"help": "dropout on the update's rows during training"})
    module_dropout: float = field(default=0.0, metadata={"help": "probability of skipping a whole adapter"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.rank_dropout < 1, "rank_dropout", "in [0, 1)")
        self._require(0 <= self.module_dropout < 1, "module_dropout", "in [0, 1)")


@register(
    "loha",
    LohaConfig,
    "Hadamard product of two low-rank updates (B₁A₁)⊙(B₂A₂) on chosen Linears",
    "Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for Communication-Efficient Federated Learning",
)
def loha(model: nn.Module, arch: Arch, cfg: LohaConfig, total_steps: int) -> Prepared:
    import peft

    config = peft.LoHaConfig(
        r=cfg.r,
        alpha=cfg.alpha,
        rank_dropout=cfg.rank_dropout,
        module_dropout=cfg.module_dropout,
        target_modules=_targets(arch, cfg.targets),
        modules_to_save=[arch.classifier],
    )
    return Prepared(_peft(model, config))


@dataclass
class LokrConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of the larger Kronecker factor (kept full if r >= its size/2)"})
    alpha: float = field(default=8, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    targets: str = field(default="query,value", metadata={"help": _TARGETS_HELP})
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
        target_modules=_targets(arch, cfg.targets),
        modules_to_save=[arch.classifier],
    )
    return Prepared(_peft(model, config))


# ---------------------------------------------------------------- VeRA
@dataclass
class VeraConfig(MethodConfig):
    lr: float = field(default=2e-2, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=256, metadata={"help": "rank of the shared frozen random matrices A and B"})
    targets: str = field(default="query,value", metadata={"help": _TARGETS_HELP})
    d_initial: float = field(default=0.1, metadata={"help": "initial value of the scaling vector d"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter branch's input"})
    prng_key: int = field(default=0, metadata={"help": "seed of the shared random A and B"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


@register(
    "vera",
    VeraConfig,
    "shared frozen random A, B; trains only two scaling vectors per Linear, Λb·B·Λd·A",
    "Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation",
)
def vera(model: nn.Module, arch: Arch, cfg: VeraConfig, total_steps: int) -> Prepared:
    import peft

    config = peft.VeraConfig(
        r=cfg.r,
        d_initial=cfg.d_initial,
        vera_dropout=cfg.dropout,
        projection_prng_key=cfg.prng_key,
        save_projection=True,
        target_modules=_targets(arch, cfg.targets),
        modules_to_save=[arch.classifier],
    )
    return Prepared(_peft(model, config))


# ---------------------------------------------------------------- IA³
@dataclass
class Ia3Config(MethodConfig):
    lr: float = field(default=3e-2, metadata={"help": "peak learning rate (AdamW)"})
    targets: str = field(
        default="key,value,fc2",
        metadata={"help": "roles whose activations are rescaled: " + _TARGETS_HELP.split(": ", 1)[1]},
    )
    feedforward: str = field(
        default="fc2",
        metadata={
            "help": "those of targets rescaled on their input (the MLP's hidden activations) instead of their "
            "output; empty for none"
        },
    )


def ia3_roles(arch: Arch, cfg: Ia3Config) -> tuple[list[str], list[str]]:
    """(target roles, feedforward roles), checked: the feedforward roles must be among the targets."""
    roles = arch.resolve_roles(cfg.targets)
    ff = arch.resolve_roles(cfg.feedforward) if cfg.feedforward.strip() else []
    extra = [r for r in ff if r not in roles]
    if extra:
        raise UserError(
            f"ia3.feedforward must be among ia3.targets ({', '.join(roles)}); not a target: {', '.join(extra)}"
        )
    return roles, ff


@register(
    "ia3",
    Ia3Config,
    "learned rescaling vectors on keys, values and the MLP's hidden activations",
    "Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning (IA³)",
)
def ia3(model: nn.Module, arch: Arch, cfg: Ia3Config, total_steps: int) -> Prepared:
    import peft

    roles, ff = ia3_roles(arch, cfg)
    config = peft.IA3Config(
        target_modules=arch.target_regex(roles),
        feedforward_modules=arch.target_regex(ff) if ff else [],
        modules_to_save=[arch.classifier],
    )
    return Prepared(_peft(model, config))


# ---------------------------------------------------------------- OFT
@dataclass
class OftConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    block_size: int = field(
        default=32,
        metadata={"help": "size of the orthogonal blocks (PEFT moves it to the nearest divisor of each input width)"},
    )
    targets: str = field(default="query,value", metadata={"help": _TARGETS_HELP})
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


@register(
    "oft",
    OftConfig,
    "block-diagonal orthogonal rotation (Cayley-parametrised) of the inputs of chosen Linears",
    "Qiu et al. 2023, Controlling Text-to-Image Diffusion by Orthogonal Finetuning",
)
def oft(model: nn.Module, arch: Arch, cfg: OftConfig, total_steps: int) -> Prepared:
    import peft

    config = peft.OFTConfig(
        r=0,
        oft_block_size=cfg.block_size,
        block_share=cfg.block_share,
        use_cayley_neumann=cfg.cayley_neumann,
        module_dropout=cfg.module_dropout,
        target_modules=_targets(arch, cfg.targets),
        modules_to_save=[arch.classifier],
    )
    return Prepared(_peft(model, config))


# ---------------------------------------------------------------- full
@dataclass
class FullConfig(MethodConfig):
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (AdamW)"})


@register("full", FullConfig, "train every parameter")
def full(model: nn.Module, arch: Arch, cfg: FullConfig, total_steps: int) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    return Prepared(model)


DEFAULT_METHODS = ["head", "last", "lora", "full"]
