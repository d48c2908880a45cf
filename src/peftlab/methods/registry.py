"""The method registry: a method is one registration, in one place.

A registration carries the method's config dataclass (its options, checked in __post_init__), its
apply function, a description, its paper, its parameter formula (optional: a method without one is
reported "not derived"), its search space for the tuner, and the capability flags that the training
loop, the fast paths, saving/loading and the tests read instead of assuming.

An apply function takes a freshly loaded classifier, its Arch and the planned number of optimizer
steps, and returns a Prepared model whose trainable parameters are exactly the method's; the registry
stamps the method's capabilities on it, which is how the training loop and the fast paths learn what
the method does. Methods that must act during training (e.g. AdaLoRA's rank schedule) return a hook; the
training loop never branches on the method's name.

A mergeable method deploys as the base architecture: Method.merged folds a trained model into plain base
weights (PEFT's merge_and_unload, a hand-written method's own merge function, or nothing to do for
methods that add nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from ..models.arch import Arch


@dataclass
class Prepared:
    model: nn.Module
    after_step: Callable[[int, int], None] | None = None  # (step, total_steps) after optimizer.step()
    caps: Capabilities | None = None  # the method's, set by the registry when its apply function returns
    # options the library changed on its own, as really used: {option: {"asked": 7, "used": [8]}} (recorded)
    adjusted: dict | None = None
    # parameter name -> multiplier of the method's lr (layer-wise lr decay); a name not in it trains at 1x
    lr_scale: dict[str, float] | None = None


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


# ---------------------------------------------------------------- search spaces (for the tuner)
@dataclass(frozen=True)
class LogRange:
    """A float searched on a log scale between low and high (learning rates, scales)."""

    low: float
    high: float

    def __post_init__(self):
        assert 0 < self.low < self.high, (self.low, self.high)

    def contains(self, v) -> bool:
        return isinstance(v, (int, float)) and self.low <= v <= self.high


@dataclass(frozen=True)
class IntRange:
    """An integer between low and high inclusive (log scale when log: ranks, bottleneck widths)."""

    low: int
    high: int
    log: bool = False

    def contains(self, v) -> bool:
        return isinstance(v, int) and self.low <= v <= self.high


@dataclass(frozen=True)
class Choice:
    """One of a few values (booleans, target roles, block counts)."""

    values: tuple

    def contains(self, v) -> bool:
        return v in self.values


Space = LogRange | IntRange | Choice


def lr_range(default: float, spread: float = 30.0) -> LogRange:
    """The lr search range of a method: default/spread .. default·spread on a log scale."""
    return LogRange(float(f"{default / spread:.3g}"), float(f"{min(default * spread, 1.0):.3g}"))


# ---------------------------------------------------------------- capabilities
@dataclass(frozen=True)
class Capabilities:
    """What a method does to a model, declared where it is registered; read by the loop, the fast
    paths, saving/loading and the registry-wide tests."""

    identity_at_init: bool = True  # the prepared model computes exactly what the base model did
    keeps_tokens: bool = True  # the blocks see the embeddings' tokens, no more: a frozen prefix's output is
    #                            what the rest of the model reads (the prefix cache relies on it). Methods
    #                            that add tokens keep the [CLS] row at position 0, which the head reads
    peft_format: bool = False  # saved as a PEFT adapter folder; else trainable tensors, reloaded by
    #                            applying the method to a fresh base and loading them
    mergeable: bool = True  # folds into the base weights: nothing extra at inference
    # which Conv2d layers it adapts (CNNs): "" none (Linear only), "any", "groups=1" (no depthwise or grouped),
    # "1x1" (pointwise only), "groups=1, no same padding" (peftwrap.conv_refusal says why for each)
    conv2d: str = ""
    cost: str = ""  # what a model that cannot merge computes beyond the base at inference, in words

    def inference_cost(self) -> str:
        """The extra inference cost in words: none for a method that merges, else what it keeps."""
        return "none (merges)" if self.mergeable else self.cost or "adds modules"


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    apply: Callable[[nn.Module, Arch, MethodConfig, int], Prepared]  # (model, arch, cfg, total_steps)
    description: str
    paper: str = ""
    formula: Callable[[Any, MethodConfig], list] | None = None  # (anatomy, cfg) -> theory Lines
    search: dict[str, Space] = field(default_factory=dict)  # option -> space; always has "lr"
    caps: Capabilities = Capabilities()
    merge: Callable[[nn.Module], nn.Module] | None = None  # a hand-written mergeable method's fold

    def merged(self, model: nn.Module) -> nn.Module:
        """The trained model folded into the base architecture (in place where possible): the method's own
        merge, PEFT's merge_and_unload, or the model itself when the method added nothing. Only for
        caps.mergeable methods."""
        if not self.caps.mergeable:
            raise UserError(
                f"method '{self.name}' does not merge into the base weights ({self.caps.cost or 'it adds modules'}); "
                "load the run with peftlab.runs.load_run, or use 'peftlab predict' / 'peftlab eval'"
            )
        if self.merge is not None:
            return self.merge(model)
        if hasattr(model, "merge_and_unload"):
            from .peftwrap import unwrap_copies

            return unwrap_copies(model.merge_and_unload())  # the adapters written into the weights and removed
        return model

    def info(self, order: int | None = None) -> dict:
        """What a result records about its method, so that reports need no registry: description,
        paper, each option's meaning, and the registry position (the order of table rows)."""
        return {
            "description": self.description,
            "paper": self.paper,
            "options": {f.name: f.metadata.get("help", "") for f in fields(self.config_cls)},
            "order": list(REGISTRY).index(self.name) if order is None else order,
        }


REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    config_cls: type[MethodConfig],
    description: str,
    paper: str = "",
    *,
    formula: Callable | None = None,
    search: dict[str, Space] | None = None,
    caps: Capabilities = Capabilities(),
    merge: Callable[[nn.Module], nn.Module] | None = None,
):
    """Register fn as method `name`. A name registered twice is a programming error."""
    if merge is not None and not caps.mergeable:
        raise ValueError(f"method '{name}' has a merge function but is not mergeable")

    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"method '{name}' is registered twice")
        space = dict(search or {})
        space.setdefault("lr", lr_range(config_cls().lr))
        known = {f.name for f in fields(config_cls)}
        unknown = sorted(set(space) - known)
        if unknown:
            raise ValueError(f"method '{name}': search space names options it does not have: {unknown}")

        @functools.wraps(fn)
        def apply(model, arch, cfg, total_steps):
            prepared = fn(model, arch, cfg, total_steps)
            prepared.caps = caps  # what the loop and the fast paths read about the method
            return prepared

        REGISTRY[name] = Method(name, config_cls, apply, description, paper, formula, space, caps, merge)
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


def freeze_all_but(model: nn.Module, prefixes: list[str]) -> None:
    """Only parameters under these module paths train."""
    for name, p in model.named_parameters():
        p.requires_grad_(any(name == q or name.startswith(q + ".") for q in prefixes))
