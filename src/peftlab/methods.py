"""Fine-tuning methods: one config dataclass plus one function each, in one small registry.

A method's function takes a freshly loaded classifier and its Arch and returns a Prepared model whose
trainable parameters are exactly the method's. Methods that must act during training (e.g. a rank
schedule) return a hook; the training loop never branches on the method's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

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


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    apply: Callable[[nn.Module, Arch, MethodConfig], Prepared]
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


# ---------------------------------------------------------------- head
@dataclass
class HeadConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})


@register("head", HeadConfig, "train the classification head only (linear probe)")
def head(model: nn.Module, arch: Arch, cfg: HeadConfig) -> Prepared:
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
def last(model: nn.Module, arch: Arch, cfg: LastConfig) -> Prepared:
    if cfg.blocks > arch.num_blocks:
        raise UserError(f"last.blocks={cfg.blocks} but the model has {arch.num_blocks} blocks")
    train = arch.block_names()[-cfg.blocks:] + [arch.classifier]
    if cfg.final_norm and arch.final_norm:
        train.append(arch.final_norm)
    _freeze_all_but(model, train)
    return Prepared(model)


# ---------------------------------------------------------------- LoRA
@dataclass
class LoraConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of the update B·A"})
    alpha: float = field(default=16, metadata={"help": "scaling: the update is multiplied by alpha/r"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA branch's input"})
    bias: str = field(default="none", metadata={"help": "train biases: none, all or lora_only"})
    targets: str = field(default="query,value", metadata={
        "help": "roles to adapt: any of query,key,value,output,fc1,fc2 or all-linear"})

    def __post_init__(self):
        super().__post_init__()
        if self.r < 1:
            raise UserError(f"lora.r must be >= 1 (got {self.r})")
        if not 0 <= self.dropout < 1:
            raise UserError(f"lora.dropout must be in [0, 1) (got {self.dropout})")
        if self.bias not in ("none", "all", "lora_only"):
            raise UserError(f"lora.bias must be none, all or lora_only (got '{self.bias}')")


@register("lora", LoraConfig, "low-rank updates W + (alpha/r)·B·A on chosen Linears, head trained",
          "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models")
def lora(model: nn.Module, arch: Arch, cfg: LoraConfig) -> Prepared:
    import peft

    roles = arch.resolve_roles(cfg.targets)
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias=cfg.bias,
                             target_modules=arch.target_regex(roles), modules_to_save=[arch.classifier])
    return Prepared(peft.get_peft_model(model, config))


# ---------------------------------------------------------------- full
@dataclass
class FullConfig(MethodConfig):
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (AdamW)"})


@register("full", FullConfig, "train every parameter")
def full(model: nn.Module, arch: Arch, cfg: FullConfig) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    return Prepared(model)


DEFAULT_METHODS = ["head", "last", "lora", "full"]
