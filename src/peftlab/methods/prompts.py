"""Visual Prompt Tuning (VPT): learned prompt tokens in the token sequence, shallow or deep."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.arch import Arch
from ..models.families import TOKENS
from ..theory.anatomy import Anatomy, base_lines
from ..theory.lines import Line, formula
from .registry import Capabilities, Choice, MethodConfig, Prepared, freeze_all_but, register
from .sites import Site, attach, blocks, hidden_width, like, patch_convs, require

PAPER = "Jia et al. 2022, Visual Prompt Tuning"
# prompts are tokens, not weights: nothing merges, and every block attends over N + P tokens
CAPS = Capabilities(identity_at_init=False, keeps_tokens=False, mergeable=False, cost="+P prompt tokens in every block")


@dataclass
class VptConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})
    tokens: int = field(default=5, metadata={"help": "number of prompt tokens P (the official code's default 5)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prompt tokens during training"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.tokens >= 1, "tokens", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


class Prompts(Site):
    """P learned d-wide tokens put into a block's input right after [CLS] (position 0, which the head
    reads): inserted (the first block: N → N + P tokens) or, in a later block of VPT-deep, replacing the
    previous block's outputs at the prompt positions 1..P. No position embedding is added to them."""

    def __init__(self, tokens: int, d: int, bound: float, dropout: float, insert: bool, **like):
        super().__init__()
        self.insert = insert
        self.prompts = nn.Parameter(torch.empty(tokens, d, **like).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)

    def before(self, host, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        p = self.dropout(self.prompts).to(h.dtype).expand(h.shape[0], -1, -1)
        rest = h[:, 1:] if self.insert else h[:, 1 + len(self.prompts) :]
        h = torch.cat([h[:, :1], p, rest], dim=1)
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})


def _require_cls_stack(arch: Arch, deep: bool) -> None:
    require(
        arch.tokens == "cls" and arch.flat is not None,
        "vpt-deep" if deep else "vpt-shallow",
        "puts prompt tokens after [CLS] in one stack of blocks and needs a head that reads [CLS] alone; this "
        f"model's head reads {TOKENS.get(arch.tokens, arch.tokens)}"
        + ("" if arch.flat else " and its blocks are in stages"),
    )


def _vpt_lines(an: Anatomy, cfg, deep: bool) -> list[Line]:
    _require_cls_stack(an.arch, deep)
    p = formula("L·P·d" if deep else "P·d", {**an.env, "P": cfg.tokens})
    where = "every block's input (deep)" if deep else "the first block's input (shallow)"
    return base_lines(an) + [
        Line(f"VPT prompt tokens, P={cfg.tokens}, at {where}", p.symbols, p.numbers, p.count, True, "added")
    ]


def _apply(model: nn.Module, arch: Arch, cfg: VptConfig, deep: bool) -> Prepared:
    """VPT (Jia et al. 2022, eq. 1-2). Shallow: x₁ = L₁([cls, P, E₀]) and the prompt positions then flow
    through the other blocks like any token; deep: xᵢ = Lᵢ([clsᵢ₋₁, Pᵢ₋₁, Eᵢ₋₁]) with fresh prompts Pᵢ₋₁
    in front of every block i (the previous block's outputs at those positions are dropped). Prompts are
    drawn as the official code does: uniform(±√(6/(fan_in + d))), fan_in the patch embedding's inputs
    c·p_h·p_w (Xavier as if a patch projection). Not identity at init: the extra tokens change every
    attention output from the start. The backbone and its embeddings stay frozen; the head trains."""
    _require_cls_stack(arch, deep)
    freeze_all_but(model, list(arch.heads))
    d = hidden_width(model, arch)
    convs = patch_convs(model, arch)
    fan_in = convs[0].in_channels * math.prod(convs[0].kernel_size) if convs else d
    bound = math.sqrt(6 / (fan_in + d))
    for i, block in enumerate(blocks(model, arch)[: None if deep else 1]):
        attach(block, "vpt", Prompts(cfg.tokens, d, bound, cfg.dropout, insert=i == 0, **like(block)))
    return Prepared(model)


SEARCH = {"tokens": Choice((1, 5, 10, 50)), "dropout": Choice((0.0, 0.1))}


@register(
    "vpt-shallow",
    VptConfig,
    "P learned prompt tokens inserted after [CLS] at the first block's input; backbone frozen, head trained",
    PAPER,
    formula=lambda an, cfg: _vpt_lines(an, cfg, deep=False),
    search=SEARCH,
    caps=CAPS,
)
def vpt_shallow(model: nn.Module, arch: Arch, cfg: VptConfig, total_steps: int) -> Prepared:
    return _apply(model, arch, cfg, deep=False)


@dataclass
class VptDeepConfig(VptConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})


@register(
    "vpt-deep",
    VptDeepConfig,
    "fresh learned prompt tokens after [CLS] in front of every block (VPT-deep); backbone frozen, head trained",
    PAPER,
    formula=lambda an, cfg: _vpt_lines(an, cfg, deep=True),
    search=SEARCH,
    caps=CAPS,
)
def vpt_deep(model: nn.Module, arch: Arch, cfg: VptDeepConfig, total_steps: int) -> Prepared:
    return _apply(model, arch, cfg, deep=True)
