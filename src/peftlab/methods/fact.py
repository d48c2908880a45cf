"""FacT: factor tuning, written here. Every weight of every block is cut into d×d slices; all slices of
the model form one tensor, whose update is factorised with factors U, V shared by all blocks — as a
tensor train (FacT-TT: a core per slice) or a Tucker form (FacT-TK: one core, mixed per slice). The
update is linear in the input, so it folds into the weights after training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, Shape, base_lines, per_shape
from ..theory.lines import Line, formula
from .registry import Capabilities, Choice, MethodConfig, Prepared, freeze_all_but, register
from .sites import Site, attach, detach, hidden_width, like, require, role_linears, sites

PAPER = "Jie & Deng 2023, FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer"


@dataclass
class FactConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=8, metadata={"help": "rank of the factorisation (U: r×d, V: d×r and the cores)"})
    scale: float = field(
        default=1.0, metadata={"help": "s: the update is multiplied by s (the paper tunes it per task)"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on the rank-r features"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


@dataclass
class FactTkConfig(FactConfig):
    r: int = field(default=16, metadata={"help": "rank of the factorisation (U: r×d, V: d×r, core r×r×r)"})


class Factors(nn.Module):
    """What all blocks share: U (r × d, nn.Linear's default init), V (d × r, zero: the update starts at
    0) and, for FacT-TK, the core C (r × r × r, xavier)."""

    def __init__(self, d: int, r: int, tucker: bool, **like):
        super().__init__()
        self.u = nn.Parameter(torch.empty(r, d, **like))
        self.v = nn.Parameter(torch.zeros(d, r, **like))
        nn.init.kaiming_uniform_(self.u, a=math.sqrt(5))
        self.core = nn.Parameter(nn.init.xavier_uniform_(torch.empty(r, r, r, **like))) if tucker else None


def _slices(dim: int, d: int) -> int:
    return -(-dim // d)  # ⌈dim/d⌉: a width cut into d-wide slices (the last one zero-padded)


class Slices(Site):
    """The update of one Linear (d_out × d_in): a grid of k_o × k_i d×d slices, slice (o, i) = V·T_oi·U,
    added to the Linear's output as s·ΔW·x (computed through the factors, never as a matrix). T_oi is the
    slice's own r×r core (tensor train) or C ×₃ p_oi, the shared core mixed by the slice's r weights p_oi
    (Tucker)."""

    def __init__(self, factors: Factors, d_in: int, d_out: int, scale: float, dropout: float, p_bound: float = 0.0):
        super().__init__()
        self.factors = [factors]  # shared: a plain reference (it is registered once, on the model)
        r, d = factors.u.shape
        self.k_o, self.k_i, self.d_in, self.d_out, self.scale = _slices(d_out, d), _slices(d_in, d), d_in, d_out, scale
        kw = {"device": factors.u.device, "dtype": factors.u.dtype}
        if factors.core is None:  # nn.Linear's default init of each r×r core, as the official code has
            self.cores = nn.Parameter(torch.empty(self.k_o, self.k_i, r, r, **kw).uniform_(-(r**-0.5), r**-0.5))
        else:  # the slice's columns of P (r × all slices), xavier over P's full shape
            self.p = nn.Parameter(torch.empty(r, self.k_o * self.k_i, **kw).uniform_(-p_bound, p_bound))
        self.dropout = nn.Dropout(dropout)

    def tt(self) -> torch.Tensor:
        """The slices' cores T (k_o, k_i, r, r)."""
        f = self.factors[0]
        if f.core is None:
            return self.cores
        r = f.core.shape[0]
        return torch.einsum("abc,cn->nab", f.core, self.p).reshape(self.k_o, self.k_i, r, r)

    def after(self, host, args, output):
        f, x = self.factors[0], args[0]
        r, d = f.u.shape
        if self.k_i * d != x.shape[-1]:
            x = nn.functional.pad(x, (0, self.k_i * d - x.shape[-1]))
        u = (x.unflatten(-1, (self.k_i, d)) @ f.u.to(x.dtype).T).flatten(-2)  # (..., k_i·r): U on each slice
        cores = self.tt().permute(1, 3, 0, 2).reshape(self.k_i * r, self.k_o * r)  # [(i, r'), (o, s)] = T_oi[s, r']
        z = self.dropout(u @ cores.to(x.dtype))  # (..., k_o·r)
        y = (z.unflatten(-1, (self.k_o, r)) @ f.v.to(x.dtype).T).flatten(-2)  # V on each output slice
        return output + self.scale * y[..., : self.d_out]

    def delta(self) -> torch.Tensor:
        """s·ΔW (d_out × d_in), assembled from the slices."""
        f = self.factors[0]
        d = f.u.shape[1]
        w = torch.einsum("xs,oisr,ry->oxiy", f.v, self.tt(), f.u).reshape(self.k_o * d, self.k_i * d)
        return self.scale * w[: self.d_out, : self.d_in]


def _roles(arch: Arch, tucker: bool) -> list[str]:
    """Every Linear role of the blocks (FacT factorises the blocks' Linear weights)."""
    roles = arch.linear_roles()
    name = "fact-tk" if tucker else "fact-tt"
    require(bool(roles), name, f"factorises the blocks' Linear layers; this model's blocks have: {arch.roles_text()}")
    return roles


def _fact(an: Anatomy, cfg, tucker: bool) -> list[Line]:
    roles, env = _roles(an.arch, tucker), {**an.env, "r": cfg.r}
    p = formula("2·d·r", env)
    lines = base_lines(an) + [
        Line("FacT U (r×d) and V (d×r), shared by all blocks", p.symbols, p.numbers, p.count, True, "added")
    ]
    if tucker:
        p = formula("r³", env)
        lines.append(Line("FacT-TK core C (r×r×r), shared", p.symbols, p.numbers, p.count, True, "added"))
    d = an.env["d"]

    def per_layer(sh: Shape):
        n = _slices(sh.dout, d) * _slices(sh.din, d)
        unit = "r" if tucker else "r²"
        return (unit if n == 1 else f"n·{unit}"), {"r": cfg.r, "n": n}, f"{n} d×d slice{'s' if n > 1 else ''} each"

    what = "FacT-TK slice weights p (r per slice)" if tucker else "FacT-TT cores (r×r per slice)"
    return lines + per_shape(an, roles, what, per_layer)


@torch.no_grad()
def _merge_fact(model: nn.Module) -> nn.Module:
    """W' = W + s·ΔW for every adapted Linear; biases unchanged."""
    for host, _, site in list(sites(model, Slices)):
        host.weight.add_(site.delta().to(host.weight.dtype))
    detach(model)
    if hasattr(model, "fact"):
        del model.fact
    return model


def _apply(model: nn.Module, arch: Arch, cfg: FactConfig, tucker: bool) -> Prepared:
    roles = _roles(arch, tucker)
    freeze_all_but(model, list(arch.heads))
    d = hidden_width(model, arch)
    linears = role_linears(model, arch, roles)
    factors = Factors(d, cfg.r, tucker, **like(linears[0][2]))
    model.add_module("fact", factors)
    n = sum(_slices(lin.out_features, d) * _slices(lin.in_features, d) for _, _, lin in linears)
    bound = math.sqrt(6 / (cfg.r + n))  # xavier of P (r × all slices)
    for _, _, lin in linears:
        attach(lin, "fact", Slices(factors, lin.in_features, lin.out_features, cfg.scale, cfg.dropout, bound))
    return Prepared(model)


@register(
    "fact-tt",
    FactConfig,
    "ΔW of every d×d weight slice = V·Tᵢ·U: U, V shared by all blocks, an r×r core per slice (tensor train)",
    PAPER,
    formula=lambda an, cfg: _fact(an, cfg, tucker=False),
    search={"r": Choice((4, 8, 16, 32)), "scale": Choice((0.1, 1.0, 10.0))},
    caps=Capabilities(),  # V = 0: the identity at start; merges into q, k, v, output, fc1, fc2
    merge=_merge_fact,
)
def fact_tt(model: nn.Module, arch: Arch, cfg: FactConfig, total_steps: int) -> Prepared:
    """FacT-TT (Jie & Deng 2023, eq. 6-7): the weights of every block (q, k, v, output, fc1, fc2) cut into
    d×d slices — fc1, fc2 give ⌈m/d⌉ each, 12 slices per ViT-B block — form one tensor of all slices,
    ΔW_slice = s·V·T_slice·U with U (r × d) and V (d × r) shared by every block and an r×r core per
    slice. V starts at 0 (the official init): exactly the base model at start. Linear in the input: folds
    into the weights (peftlab merge)."""
    return _apply(model, arch, cfg, tucker=False)


@register(
    "fact-tk",
    FactTkConfig,
    "ΔW of every d×d weight slice = V·(C ×₃ pᵢ)·U: U, V and the r×r×r core C shared, r weights per slice (Tucker)",
    PAPER,
    formula=lambda an, cfg: _fact(an, cfg, tucker=True),
    search={"r": Choice((8, 16, 32)), "scale": Choice((0.1, 1.0, 10.0))},
    caps=Capabilities(),
    merge=_merge_fact,
)
def fact_tk(model: nn.Module, arch: Arch, cfg: FactTkConfig, total_steps: int) -> Prepared:
    """FacT-TK (Jie & Deng 2023, eq. 8-9): as FacT-TT, but slice j's core is C ×₃ P_j = Σ_c C[:, :, c]·P[c, j],
    one r×r×r core C shared by all slices and r weights P_j per slice (C and P xavier, V = 0: the base
    model at start). The official code mixes fc1's four slices' cores through one reshaped core; here each
    slice has its own P_j, the paper's equation (same count)."""
    return _apply(model, arch, cfg, tucker=True)
