"""Bottleneck adapters, written here: Adapter (Houlsby et al., sequential, after attention and MLP),
AdaptFormer (parallel to the MLP, scaled) and RepAdapter (linear, before attention and MLP, folded into
the following Linears after training). Each is a site (methods.sites) on a module found through the
Arch: a role's Linear or the block's LayerNorms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, base_lines, per_shape
from ..theory.lines import Line
from .peftwrap import nearest_divisor
from .registry import Capabilities, Choice, MethodConfig, Prepared, freeze_all_but, register
from .sites import (
    Site,
    attach,
    detach,
    fold_into_linear,
    layer_norms,
    like,
    require,
    require_foldable_biases,
    require_linear_roles,
    require_norms,
    role_linears,
    sync_bias_config,
)


class Bottleneck(nn.Module):
    """up(drop(act(down(x)))): d → r → d."""

    def __init__(self, d: int, r: int, act: nn.Module, dropout: float = 0.0, **like):
        super().__init__()
        self.down, self.up = nn.Linear(d, r, **like), nn.Linear(r, d, **like)
        self.act, self.dropout = act, nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x))))


# ---------------------------------------------------------------- Adapter (Houlsby)
@dataclass
class AdapterConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "bottleneck width of each adapter"})
    layernorms: bool = field(default=True, metadata={"help": "also train every LayerNorm, as the paper does"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")


class Sequential(Site):
    """Houlsby's adapter on a sub-layer's output, inside its residual branch: h + up(gelu(down(h)))."""

    def __init__(self, d: int, r: int, **like):
        super().__init__()
        self.adapter = Bottleneck(d, r, nn.GELU(), **like)
        with torch.no_grad():  # the paper's small random down-projection; the up-projection at 0 (see adapter)
            nn.init.trunc_normal_(self.adapter.down.weight, std=1e-3, a=-2e-3, b=2e-3)
            nn.init.zeros_(self.adapter.down.bias)
            nn.init.zeros_(self.adapter.up.weight)
            nn.init.zeros_(self.adapter.up.bias)

    def after(self, host, args, output):
        return output + self.adapter(output)


def _adapter(an: Anatomy, cfg) -> list[Line]:
    require_linear_roles(an.arch, "adapter", ["output", "fc2"])
    lines = base_lines(an) + per_shape(
        an,
        ["output", "fc2"],
        "Adapter down (d×r + r) and up (r×d + d)",
        lambda sh: (f"2·{sh.dout_sym}·r + r + {sh.dout_sym}", {"r": cfg.r}, "after it, in the residual branch"),
    )
    if cfg.layernorms:
        p = an.norms()
        lines.append(
            Line(
                "every LayerNorm's weight and bias (trained, as in the paper)",
                p.symbols,
                p.numbers,
                p.count,
                True,
                "subset",
            )
        )
    return lines


@register(
    "adapter",
    AdapterConfig,
    "bottleneck adapters h + up(gelu(down(h))) after the attention output and the MLP; LayerNorms and head train",
    "Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP",
    formula=_adapter,
    search={"r": Choice((4, 8, 16, 32)), "layernorms": Choice((True, False))},
    caps=Capabilities(mergeable=False, cost="+2 bottleneck adapters per block"),
)
def adapter(model: nn.Module, arch: Arch, cfg: AdapterConfig, total_steps: int) -> Prepared:
    """Houlsby et al. 2019, eq. in §2.1: an adapter h ↦ h + W_up·gelu(W_down·h + b_down) + b_up on the output
    of each block's attention projection and MLP (before the residual addition), r-wide. The paper draws
    both projections from a near-zero normal (std 1e-3): near the identity. Here the up-projection starts
    at exactly zero, so the model starts as the base model; the down-projection keeps the paper's small
    random init, so the up-projection gets gradients from the first step (zeroing both would leave only
    the up bias ever training). As in the paper, every LayerNorm trains too (layernorms)."""
    require_linear_roles(arch, "adapter", ["output", "fc2"])
    freeze_all_but(model, list(arch.heads))
    if cfg.layernorms:
        for norm in layer_norms(model, arch):
            norm.requires_grad_(True)
    for _, _, lin in role_linears(model, arch, ["output", "fc2"]):
        attach(lin, "adapter", Sequential(lin.out_features, cfg.r, **like(lin)))
    return Prepared(model)


# ---------------------------------------------------------------- AdaptFormer
@dataclass
class AdaptFormerConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=64, metadata={"help": "bottleneck width (the official image code's 64; VTAB tables use 8)"})
    scale: float = field(default=0.1, metadata={"help": "s: the adapter's output is multiplied by s"})
    dropout: float = field(default=0.1, metadata={"help": "dropout after the bottleneck's ReLU"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


class Parallel(Site):
    """On the LayerNorm before the MLP: computes s·adapter(x) from that norm's *input* x (the residual
    stream after attention) and holds it for the Join on the MLP's output Linear of the same block."""

    def __init__(self, d: int, r: int, scale: float, dropout: float, **like):
        super().__init__()
        self.scale = scale
        self.adapter = Bottleneck(d, r, nn.ReLU(), dropout, **like)
        with torch.no_grad():  # the official "lora" init: kaiming-uniform down, zero up and biases
            nn.init.kaiming_uniform_(self.adapter.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.adapter.down.bias)
            nn.init.zeros_(self.adapter.up.weight)
            nn.init.zeros_(self.adapter.up.bias)
        self.pending: torch.Tensor | None = None

    def after(self, host, args, output):
        self.pending = self.scale * self.adapter(args[0])
        return output


class Join(Site):
    """On the MLP's output Linear: adds the block's Parallel branch to the MLP's output."""

    def __init__(self, source: Parallel):
        super().__init__()
        self.source = [source]  # a plain reference (not a submodule: it lives on the LayerNorm)

    def after(self, host, args, output):
        branch, self.source[0].pending = self.source[0].pending, None
        return output + branch


def _adaptformer_pairs(arch: Arch) -> list:
    require_norms(arch, "adaptformer")
    require_linear_roles(arch, "adaptformer", ["fc2"])
    return _pairs(arch, "norm2", ["fc2"], "adaptformer")


def _adaptformer(an: Anatomy, cfg) -> list[Line]:
    _adaptformer_pairs(an.arch)
    return base_lines(an) + per_shape(
        an,
        ["fc1"],
        "AdaptFormer down (d×r + r) and up (r×d + d)",
        lambda sh: (f"2·{sh.din_sym}·r + r + {sh.din_sym}", {"r": cfg.r}, "beside the MLP, on its input width"),
    )


@register(
    "adaptformer",
    AdaptFormerConfig,
    "a scaled bottleneck x + mlp(ln(x)) + s·up(relu(down(x))) parallel to each block's MLP; head trained",
    "Chen et al. 2022, AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition",
    formula=_adaptformer,
    search={"r": Choice((4, 8, 16, 64)), "scale": Choice((0.05, 0.1, 0.2, 1.0))},
    caps=Capabilities(mergeable=False, cost="+1 bottleneck adapter per block"),
)
def adaptformer(model: nn.Module, arch: Arch, cfg: AdaptFormerConfig, total_steps: int) -> Prepared:
    """AdaptFormer (Chen et al. 2022, eq. 1-3, parallel variant): x' = x + MLP(LN(x)) + s·up(drop(relu(
    down(x)))), x the residual stream after attention (LN's input, not its output), r-wide. The official
    init: kaiming-uniform down-projection, zero up-projection and biases: exactly the base model at start.
    The branch joins the MLP's output before the block's own dropout (a no-op in ViTs, p = 0)."""
    pairs = _adaptformer_pairs(arch)
    freeze_all_but(model, list(arch.heads))
    for norm_path, (fc2,) in pairs:
        norm = model.get_submodule(norm_path)
        branch = attach(norm, "adaptformer", Parallel(fc2.d_out, cfg.r, cfg.scale, cfg.dropout, **like(norm)))
        attach(model.get_submodule(fc2.path), "adaptformer", Join(branch))
    return Prepared(model)


# ---------------------------------------------------------------- RepAdapter
@dataclass
class RepAdapterConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "bottleneck width"})
    groups: int = field(
        default=2, metadata={"help": "groups of the up-projection (fitted to the nearest divisor of r and d)"}
    )
    scale: float = field(default=1.0, metadata={"help": "s: the adapter's output is multiplied by s"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the bottleneck during training"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(self.groups >= 1, "groups", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


def rep_groups(r: int, d: int, want: int) -> int:
    """The groups of the up-projection: they must divide r and d; the nearest such number to want."""
    return nearest_divisor(math.gcd(r, d), want)


class Rep(Site):
    """On a LayerNorm's output z: z + s·B(drop(A z)), A dense d → r, B grouped r → d (g groups: output
    chunk j of d/g reads bottleneck chunk j of r/g). No activation: linear, so it folds away."""

    def __init__(self, d: int, r: int, groups: int, scale: float, dropout: float, **like):
        super().__init__()
        self.scale, self.groups = scale, groups
        self.down = nn.Linear(d, r, **like)
        self.up_weight = nn.Parameter(torch.zeros(d, r // groups, **like))  # Conv1d(r, d, 1, groups) weight
        self.up_bias = nn.Parameter(torch.zeros(d, **like))
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.down.weight)
            nn.init.zeros_(self.down.bias)

    def up(self, z: torch.Tensor) -> torch.Tensor:
        g = self.groups
        w = self.up_weight.view(g, -1, self.up_weight.shape[1])  # (g, d/g, r/g)
        return torch.einsum("...gr,gdr->...gd", z.unflatten(-1, (g, -1)), w).flatten(-2) + self.up_bias

    def after(self, host, args, output):
        return output + self.scale * self.up(self.dropout(self.down(output)))

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with z ↦ M z + c the adapter at inference: M = I + s·W_B·W_A, c = s·(W_B·b_A + b_B)."""
        g, (d, rg) = self.groups, self.up_weight.shape
        w_b = torch.block_diag(*self.up_weight.view(g, d // g, rg))  # dense (d × r)
        m = torch.eye(d, dtype=w_b.dtype, device=w_b.device) + self.scale * w_b @ self.down.weight
        return m, self.scale * (w_b @ self.down.bias + self.up_bias)


def _repadapter_pairs(arch: Arch) -> list:
    """(norm, the Linears that read it) per block: norm1 with q, k, v; norm2 with fc1."""
    require_norms(arch, "repadapter")
    qkv = ["query", "key", "value"]
    require_linear_roles(arch, "repadapter", qkv + ["fc1"])
    convs = sorted({r for r, ps in arch.roles.items() if any(p.kind == "conv" for p in ps)})
    require(
        not convs,
        "repadapter",
        "folds into q, k, v and fc1, which must read the norms directly; this model's blocks also have "
        f"convolutions ({', '.join(convs)})",
    )
    return _pairs(arch, "norm1", qkv, "repadapter") + _pairs(arch, "norm2", ["fc1"], "repadapter")


def _repadapter(an: Anatomy, cfg) -> list[Line]:
    """Per block, one adapter on the input of attention (the width q reads) and one on the MLP's (fc1's)."""
    _repadapter_pairs(an.arch)
    g = rep_groups(cfg.r, math.gcd(*[sh.din for sh in an.shapes(["query", "fc1"])]), cfg.groups)
    env = {"r": cfg.r, "g": g}
    note = "" if g == cfg.groups else f", fitted from groups={cfg.groups} to r and d"
    lines = base_lines(an)
    for where, role in (("attention", "query"), ("the MLP", "fc1")):
        lines += per_shape(
            an,
            [role],
            f"RepAdapter before {where} (A: d×r + r, B: d×r/g + d, g={g}{note})",
            lambda sh: (f"{sh.din_sym}·r + r + {sh.din_sym}·r/g + {sh.din_sym}", env, ""),
        )
    return lines


def _pairs(arch: Arch, norm: str, roles: list[str], method: str) -> list[tuple[str, list]]:
    """(norm path, [one module per role]) per block: the norm and the Linears that read it, one each."""
    out = []
    for i in range(arch.num_blocks):
        path, parts = arch.norm_in(i, norm), [arch.in_block(i, r) for r in roles]
        require(
            path is not None and all(len(p) == 1 for p in parts),
            method,
            f"needs one {norm} and one {'/'.join(roles)} per block; block {arch.blocks[i]} has "
            f"{'none' if path is None else 'one norm'} and {', '.join(str(len(p)) for p in parts)}",
        )
        out.append((path, [p[0] for p in parts]))
    return out


@torch.no_grad()
def _merge_repadapter(model: nn.Module) -> nn.Module:
    """Fold each adapter into the Linears that read its LayerNorm: W' = W·M, b' = W·c + b."""
    from ..models import describe

    arch = describe(model)
    for norm_name, roles in (("norm1", ["query", "key", "value"]), ("norm2", ["fc1"])):
        for norm_path, parts in _pairs(arch, norm_name, roles, "repadapter"):
            m, c = model.get_submodule(norm_path).repadapter.affine()
            for part in parts:
                lin = model.get_submodule(part.path)
                bias = lin.weight @ c + (lin.bias if lin.bias is not None else 0)
                fold_into_linear(lin, lin.weight @ m, bias)
    detach(model)
    sync_bias_config(model, arch)
    return model


@register(
    "repadapter",
    RepAdapterConfig,
    "linear bottleneck z + s·B(A z) on each block's normalised inputs (attention and MLP), folded into "
    "q, k, v and fc1 after training",
    "Luo et al. 2023, Towards Efficient Visual Adaption via Structural Re-parameterization (RepAdapter)",
    formula=_repadapter,
    search={"r": Choice((4, 8, 16, 32)), "groups": Choice((1, 2, 4)), "scale": Choice((0.1, 1.0, 10.0))},
    caps=Capabilities(),  # identity at start, and merges: nothing extra at inference
    merge=_merge_repadapter,
)
def repadapter(model: nn.Module, arch: Arch, cfg: RepAdapterConfig, total_steps: int) -> Prepared:
    """RepAdapter (Luo et al. 2023, eq. 4-7): f(z) = z + s·B(drop(A z)) on the output of the LayerNorm before
    attention and of the one before the MLP, A dense (d → r, xavier), B group-wise (r → d, g groups,
    zero): exactly the base model at start. At inference f is affine, z ↦ M z + c with M = I + s·W_B·W_A
    and c = s·(W_B·b_A + b_B), and folds into the Linears reading z (q, k, v; fc1): W' = W·M, b' = W·c + b
    (peftlab merge; the LayerNorms stay)."""
    pairs = _repadapter_pairs(arch)
    require_foldable_biases(model, arch, ["query", "key", "value", "fc1"], "repadapter")
    g = rep_groups(cfg.r, math.gcd(*[parts[0].d_in for _, parts in pairs]), cfg.groups)
    freeze_all_but(model, list(arch.heads))
    for norm_path, parts in pairs:
        norm = model.get_submodule(norm_path)
        attach(norm, "repadapter", Rep(parts[0].d_in, cfg.r, g, cfg.scale, cfg.dropout, **like(norm)))
    return Prepared(model)
