"""What the hand-written methods (VPT, adapters, SSF, FacT) share: their modules are *sites*, small
nn.Modules attached to one module of the model (a block, a LayerNorm, a role's Linear) under a fixed
name, and called by a forward hook of that module. So

- the model's own modules and parameter names stay as they are (a merged model is the base model);
- a site's parameters are parameters of the model with stable names (e.g.
  ``vit.layers.3.attention.q_proj.ssf.scale``): save_trained_part saves them, and load_run gets them back
  by applying the method to a fresh base and loading the tensors;
- a site acts wherever its host is called, by the model's own forward or by the fast paths' [CLS]-row
  block (which calls the same modules);
- deepcopy copies the sites with the model (the hooks are module-level functions that find their sites
  on the module they are called for).

A site overrides ``before`` (forward pre-hook: may change the host's inputs) and/or ``after`` (forward
hook: may change its output). ``detach`` removes every site and hook: what a merge does once it has
folded the sites into the base weights.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..models.arch import Arch


class Site(nn.Module):
    """A method's module attached to a host module of the model."""

    def before(self, host: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, kwargs

    def after(self, host: nn.Module, args: tuple, output):
        return output


def _sites(module: nn.Module) -> list[Site]:
    return [m for m in module.children() if isinstance(m, Site)]


def _pre(module: nn.Module, args: tuple, kwargs: dict):
    for site in _sites(module):
        args, kwargs = site.before(module, args, kwargs)
    return args, kwargs


def _post(module: nn.Module, args: tuple, output):
    for site in _sites(module):
        output = site.after(module, args, output)
    return output


def attach(host: nn.Module, name: str, site: Site) -> Site:
    """Register site as host.<name> and make host's calls run it (one pair of hooks per host)."""
    if hasattr(host, name):
        raise ValueError(f"{type(host).__name__} already has an attribute '{name}'")
    host.add_module(name, site)
    if _pre not in host._forward_pre_hooks.values():
        host.register_forward_pre_hook(_pre, with_kwargs=True)
    if _post not in host._forward_hooks.values():
        host.register_forward_hook(_post)
    return site


def sites(model: nn.Module, kind: type[Site] = Site) -> Iterator[tuple[nn.Module, str, Site]]:
    """(host, name, site) for every site of this kind in the model."""
    for host in list(model.modules()):
        for name, child in list(host.named_children()):
            if isinstance(child, kind):
                yield host, name, child


def detach(model: nn.Module) -> nn.Module:
    """Remove every site and its hooks: the model is its base architecture again."""
    for host, name, _ in list(sites(model)):
        delattr(host, name)
    for m in model.modules():
        for key in [k for k, v in m._forward_pre_hooks.items() if v is _pre]:
            del m._forward_pre_hooks[key]
            m._forward_pre_hooks_with_kwargs.pop(key, None)
        for key in [k for k, v in m._forward_hooks.items() if v is _post]:
            del m._forward_hooks[key]
            m._forward_hooks_with_kwargs.pop(key, None)
            m._forward_hooks_always_called.pop(key, None)
    return model


def blocks(model: nn.Module, arch: Arch) -> list[nn.Module]:
    return [model.get_submodule(b) for b in arch.block_names()]


def role_linears(model: nn.Module, arch: Arch, roles: list[str]) -> list[tuple[int, str, nn.Linear]]:
    """(block index, role, Linear) for these roles in every block, in block then role order."""
    return [
        (i, role, block.get_submodule(arch.roles[role]))
        for i, block in enumerate(blocks(model, arch))
        for role in roles
    ]


def hidden_width(model: nn.Module, arch: Arch) -> int:
    """The residual stream's width d: what the classification head reads."""
    return model.get_submodule(arch.classifier).in_features


def like(module: nn.Module) -> dict:
    """device and dtype of a module's first parameter, for a site's new tensors (meta models stay meta)."""
    p = next(module.parameters(), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {}


def patch_convs(model: nn.Module, arch: Arch) -> list[nn.Conv2d]:
    """The Conv2d layers outside the blocks and the head: a ViT's patch embedding."""
    skip = (arch.blocks_path + ".", arch.classifier + ".")
    return [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not (n + ".").startswith(skip)]


def layer_norms(model: nn.Module, arch: Arch) -> list[nn.LayerNorm]:
    """Every LayerNorm of the model but the head's (found by type, not by name)."""
    return [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.LayerNorm) and not (n + ".").startswith(arch.classifier + ".")
    ]


def require_norms(arch: Arch, method: str) -> None:
    from ..errors import UserError

    missing = [n for n in ("norm1", "norm2") if n not in arch.norms]
    if missing:
        raise UserError(
            f"{method} needs the LayerNorms before attention and before the MLP in each block; found "
            f"{', '.join(f'{k}={v}' for k, v in arch.norms.items()) or 'none'} (looked for layernorm_before/norm1 "
            "and layernorm_after/norm2)"
        )


def sync_bias_config(model: nn.Module, arch: Arch) -> None:
    """A fold that gave q/k/v a bias must say so in a transformers config (qkv_bias), or the saved model
    would load without those biases."""
    config = getattr(model, "config", None)
    qkv = role_linears(model, arch, [r for r in ("query", "key", "value") if r in arch.roles])
    if getattr(config, "qkv_bias", True) is False and any(lin.bias is not None for _, _, lin in qkv):
        config.qkv_bias = True
        for _, _, lin in qkv:
            if lin.bias is None:  # all three or none: the config has one switch for them
                lin.bias = nn.Parameter(torch.zeros(lin.out_features, **like(lin)), requires_grad=False)


@torch.no_grad()
def fold_into_linear(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Replace a Linear's weight and bias by folded ones, giving it a bias when the fold needs one."""
    linear.weight.copy_(weight)
    if bias is None:
        return
    if linear.bias is None:
        linear.bias = nn.Parameter(bias.clone(), requires_grad=linear.weight.requires_grad)
    else:
        linear.bias.copy_(bias)
