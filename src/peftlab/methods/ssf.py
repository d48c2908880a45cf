"""SSF: scale and shift the features after every operation, written here; folded into the base weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, base_lines, per_shape
from ..theory.lines import Line
from .registry import Capabilities, MethodConfig, Prepared, freeze_all_but, register
from .sites import (
    Site,
    attach,
    detach,
    fold_into_linear,
    layer_norms,
    like,
    patch_convs,
    require,
    require_foldable_biases,
    require_linear_roles,
    role_linears,
    sites,
    sync_bias_config,
)


@dataclass
class SsfConfig(MethodConfig):
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate (AdamW)"})


class ScaleShift(Site):
    """y ↦ γ ⊙ y + β on its host's output, per channel (the last dimension, or dimension 1 of a Conv2d's
    N·C·H·W output). γ ~ N(1, 0.02²), β ~ N(0, 0.02²): the official code's init."""

    def __init__(self, channels: int, channel_dim: int = -1, **like):
        super().__init__()
        self.channel_dim = channel_dim
        self.scale = nn.Parameter(torch.empty(channels, **like).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(channels, **like).normal_(0.0, 0.02))

    def after(self, host, args, output):
        shape = [-1] + [1] * (output.dim() - 1 - self.channel_dim) if self.channel_dim >= 0 else [-1]
        return output * self.scale.view(shape) + self.shift.view(shape)


def _ssf(an: Anatomy, cfg) -> list[Line]:
    """Two vectors (γ, β) of each operation's output width: every LayerNorm (its width, like its own
    weight and bias), every Linear of the blocks (d_out), the patch embedding (d channels)."""
    require_linear_roles(an.arch, "ssf", list(an.arch.roles))
    norms, conv = an.norms(), an.patch_channels()
    lines = base_lines(an)
    lines.append(Line("SSF γ, β after every LayerNorm", norms.symbols, norms.numbers, norms.count, True, "added"))
    lines += per_shape(an, an.arch.linear_roles(), "SSF γ, β after", lambda sh: (f"2·{sh.dout_sym}", {}, ""))
    if conv.count:
        lines.append(
            Line(
                "SSF γ, β after the patch embedding",
                f"2·{conv.symbols}",
                f"2·{conv.numbers}",
                2 * conv.count,
                True,
                "added",
            )
        )
    return lines


@torch.no_grad()
def _merge_ssf(model: nn.Module) -> nn.Module:
    """Fold γ, β into the operation each follows: a Linear's W' = diag(γ)·W, b' = γ⊙b + β; a LayerNorm's
    weight' = γ⊙weight, bias' = γ⊙bias + β; a Conv2d's filters times γ per output channel, b' = γ⊙b + β."""
    from ..models import describe

    arch = describe(model)
    for host, _, site in list(sites(model, ScaleShift)):
        g, b = site.scale, site.shift
        bias = g * host.bias + b if host.bias is not None else b
        if isinstance(host, nn.Linear):
            fold_into_linear(host, g[:, None] * host.weight, bias)
        elif isinstance(host, nn.Conv2d):
            host.weight.mul_(g.view(-1, 1, 1, 1))
            if host.bias is None:
                host.bias = nn.Parameter(bias.clone(), requires_grad=False)
            else:
                host.bias.copy_(bias)
        else:  # a LayerNorm with its affine weight and bias
            host.weight.mul_(g)
            host.bias.copy_(bias)
    detach(model)
    sync_bias_config(model, arch)
    return model


@register(
    "ssf",
    SsfConfig,
    "a learned per-channel scale and shift γ⊙y + β after every LayerNorm, Linear and the patch embedding; head trained",
    "Lian et al. 2022, Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning (SSF)",
    formula=_ssf,
    # γ, β start near (1, 0), not at it (the official init); folded into the weights after training
    caps=Capabilities(identity_at_init=False),
    merge=_merge_ssf,
)
def ssf(model: nn.Module, arch: Arch, cfg: SsfConfig, total_steps: int) -> Prepared:
    """SSF (Lian et al. 2022, eq. 3): y = γ ⊙ x + β after each operation of the frozen model — the patch
    embedding, every LayerNorm (in the blocks and the final one), every Linear of the blocks (q, k, v,
    output, fc1 before its activation, fc2). γ ~ N(1, 0.02²) and β ~ N(0, 0.02²), as the official code
    draws them: the model starts near the base model, not exactly at it (identity_at_init False); the
    paper's point is the re-parameterisation: every site follows an affine operation, into which it folds
    (peftlab merge), so nothing is left at inference."""
    roles = arch.linear_roles()
    require_linear_roles(arch, "ssf", list(arch.roles))
    other = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (_BatchNorm, nn.GroupNorm))})
    require(
        not other, "ssf", f"folds into LayerNorm, Linear and the patch conv; this model also has {', '.join(other)}"
    )
    require_foldable_biases(model, arch, roles, "ssf")
    freeze_all_but(model, list(arch.heads))
    for conv in patch_convs(model, arch):
        attach(conv, "ssf", ScaleShift(conv.out_channels, channel_dim=1, **like(conv)))
    for norm in layer_norms(model, arch):
        attach(norm, "ssf", ScaleShift(norm.normalized_shape[-1], **like(norm)))
    for _, _, lin in role_linears(model, arch, roles):
        attach(lin, "ssf", ScaleShift(lin.out_features, **like(lin)))
    return Prepared(model)
