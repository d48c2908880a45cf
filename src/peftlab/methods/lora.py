"""LoRA and its variants (all-linear, rank-stabilised, DoRA) and AdaLoRA, through PEFT."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from ..errors import UserError
from ..models.arch import Arch
from ..theory.anatomy import Anatomy, per_shape, with_peft
from ..theory.lines import Line
from .peftwrap import TARGETS_HELP, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register

LORA_CAPS = Capabilities(peft_format=True, conv2d="groups=1")  # PEFT's LoRA adapts dense Conv2d layers too
# what the tuner may search besides lr (--tune lr,r,alpha)
LORA_SEARCH = {"r": Choice((2, 4, 8, 16, 32)), "alpha": Choice((4, 8, 16, 32)), "dropout": Choice((0.0, 0.1))}


# ---------------------------------------------------------------- LoRA and its variants
@dataclass
class LoraConfig(MethodConfig):
    lr: float = field(default=0.0017, metadata={"help": "peak learning rate (AdamW)"})  # bench/tune_defaults.py
    r: int = field(default=8, metadata={"help": "rank of the update B·A"})
    alpha: float = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA branch's input"})
    bias: str = field(default="none", metadata={"help": "train biases: none, all or lora_only"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})

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
    targets: str = field(default="all-linear", metadata={"help": TARGETS_HELP})


@dataclass
class RsLoraConfig(LoraConfig):
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    alpha: float = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha/√r"})

    use_rslora: ClassVar[bool] = True


@dataclass
class DoraConfig(LoraConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})

    use_dora: ClassVar[bool] = True


def _lora(an: Anatomy, cfg) -> list[Line]:
    """LoRA, lora-all and rsLoRA (the scaling alpha/√r changes no count), and DoRA's magnitudes."""
    roles = method_roles(an.arch, cfg)
    added = [Line(name, p.symbols, p.numbers, p.count, True, "added") for name, p in an.lora(roles, cfg.r)]
    if cfg.use_dora:  # PEFT lora_magnitude_vector: one magnitude per output feature of each adapted Linear
        added += per_shape(an, roles, "DoRA magnitudes", lambda sh: (sh.dout_sym, {}, ""))
    lines = with_peft(an, added)
    if cfg.bias == "all":  # PEFT: every parameter named *.bias, LayerNorm β included; not the head's original
        p = an.biases_all()
        lines.append(
            Line(
                "biases (bias=all: patch embedding, blocks incl. LayerNorm β, final norm)",
                p.symbols,
                p.numbers,
                p.count,
                True,
                "subset",
            )
        )
    elif cfg.bias == "lora_only":  # PEFT: the biases of the adapted Linears
        p = an.biases_of(roles)
        lines.append(
            Line(f"biases of {','.join(roles)} (bias=lora_only)", p.symbols, p.numbers, p.count, True, "subset")
        )
    return lines


@register(
    "lora",
    LoraConfig,
    "low-rank updates W + (alpha/r)·B·A on chosen Linears, head trained",
    "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models",
    formula=_lora,
    search=LORA_SEARCH,
    caps=LORA_CAPS,
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
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


register(
    "lora-all",
    LoraAllConfig,
    "LoRA on every Linear of the blocks (the lora preset targets=all-linear)",
    "Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs (LoRA on all linear layers)",
    formula=_lora,
    search=LORA_SEARCH,
    caps=LORA_CAPS,
)(lora)
register(
    "rslora",
    RsLoraConfig,
    "LoRA with rank-stabilised scaling alpha/√r instead of alpha/r",
    "Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
    formula=_lora,
    search=LORA_SEARCH,
    caps=LORA_CAPS,
)(lora)
register(
    "dora",
    DoraConfig,
    "LoRA on the direction plus a trained magnitude per output (weight-decomposed)",
    "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation",
    formula=_lora,
    search=LORA_SEARCH,
    caps=LORA_CAPS,
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
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
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


def _adalora(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    env = {"r": cfg.init_r}  # the parameters keep their init_r shape; pruning masks Λ's entries
    return with_peft(
        an,
        per_shape(
            an, roles, "AdaLoRA P, Λ, Q (r = init_r)", lambda sh: (f"r·({sh.din_sym}+{sh.dout_sym}) + r", env, "")
        )
        + per_shape(an, roles, "AdaLoRA rank counters (ranknum, frozen)", lambda sh: ("1", {}, ""), trainable=False),
    )


@register(
    "adalora",
    AdaLoraConfig,
    "SVD-form low-rank updates P·Λ·Q whose ranks are pruned to a budget by importance during training",
    "Zhang et al. 2023, Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (AdaLoRA)",
    formula=_adalora,
    search={"init_r": Choice((8, 12, 16)), "target_r": Choice((4, 8)), "alpha": Choice((4, 8, 16))},
    caps=Capabilities(peft_format=True, conv2d="groups=1"),
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
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    pm = wrap(model, config)
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
