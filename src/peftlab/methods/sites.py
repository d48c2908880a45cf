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

from ..errors import Unsupported
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
    """(block index, role, Linear) for every module of these roles, in block then role order."""
    return [(p.block, arch.role_of(p), model.get_submodule(p.path)) for p in arch.parts(roles)]


def hidden_width(model: nn.Module, arch: Arch) -> int:
    """The residual stream's width d at the head (what its final norm normalises)."""
    return arch.width


def like(module: nn.Module) -> dict:
    """device and dtype of a module's first parameter, for a site's new tensors (meta models stay meta)."""
    p = next(module.parameters(), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {}


def patch_convs(model: nn.Module, arch: Arch) -> list[nn.Conv2d]:
    """The Conv2d layers outside the blocks and the heads: a ViT's patch embedding."""
    skip = tuple(b + "." for b in arch.blocks) + tuple(h + "." for h in arch.heads)
    return [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not (n + ".").startswith(skip)]


def layer_norms(model: nn.Module, arch: Arch) -> list[nn.LayerNorm]:
    """Every LayerNorm of the model but the heads' (found by type, not by name)."""
    heads = tuple(h + "." for h in arch.heads)
    return [m for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) and not (n + ".").startswith(heads)]


def require(ok: bool, method: str, why: str) -> None:
    """A hand-written method that cannot apply to this model's structure: Unsupported, with why."""
    if not ok:
        raise Unsupported(f"{method} {why}")


def require_linear_roles(arch: Arch, method: str, roles: list[str]) -> None:
    """These roles exist in the blocks, as Linear layers."""
    missing = [r for r in roles if r not in arch.roles]
    require(
        not missing,
        method,
        f"needs the {', '.join(missing)} Linear layers of each block; this model has: {arch.roles_text()}",
    )
    convs = [r for r in roles if any(p.kind != "linear" for p in arch.roles[r])]
    require(not convs, method, f"adapts Linear layers; this model's {', '.join(convs)} are convolutions")


def require_norms(arch: Arch, method: str) -> None:
    """A transformer block: a LayerNorm before attention and one before the MLP (pre-norm), in every block."""
    missing = [n for n in ("norm1", "norm2") if n not in arch.norms]
    require(
        not missing,
        method,
        f"needs the LayerNorms before attention and before the MLP in each block; found "
        f"{', '.join(f'{k}={v[0][1]}' for k, v in arch.norms.items()) or 'none'}",
    )
    require(arch.pre_norm, method, "needs pre-norm blocks; this model normalises the attention and MLP outputs")


def require_foldable_biases(model: nn.Module, arch: Arch, roles: list[str], method: str) -> None:
    """A fold that gives a bias-free Linear a bias must be expressible in the base architecture: a ViT's config
    switches q/k/v biases on (qkv_bias); other models cannot load such a bias."""
    config = getattr(model, "config", None)
    if not hasattr(model, "save_pretrained"):  # not rebuilt from a config: its state dict carries the new bias
        return
    bare = [p.path for p in arch.parts(roles) if not p.bias]
    switch = arch.family in ("vit", "deit", "dinov2", "swin") and hasattr(config, "qkv_bias")
    qkv_only = all(arch.role_of(p) in ("query", "key", "value") for p in arch.parts(roles) if not p.bias)
    require(
        not bare or (switch and qkv_only),
        method,
        f"folds into Linear layers without a bias ({bare[0] if bare else ''}), which this architecture cannot "
        "load with one: its merged model would lose the folded bias",
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
