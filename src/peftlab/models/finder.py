"""describe(model): a classifier's Arch. A family transformers ships is read from its entry in families.py;
any other model gets the generic search (the most numerous composite class among the children of its
ModuleLists; roles by name; convolutions by shape), which says what it found in Arch.note."""

from __future__ import annotations

import re

from torch import nn

from ..errors import UserError
from .arch import ALL_ROLES, NORM_PATTERNS, ROLE_PATTERNS, Arch, Part
from .families import FAMILIES, HEAD_NAMES, Family


def conv_role(conv: nn.Conv2d) -> str:
    if conv.groups > 1:
        return "depthwise"
    return "pointwise" if tuple(conv.kernel_size) == (1, 1) else "spatial"


def _layer(m: nn.Module) -> nn.Module:
    """The Linear or Conv2d a module is, or wraps (a PEFT layer keeps it as base_layer)."""
    return getattr(m, "base_layer", m)


def _part(path: str, block: int, m: nn.Module) -> Part | None:
    m = _layer(m)
    if isinstance(m, nn.Linear):
        return Part(path, block, "linear", m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        same = isinstance(m.padding, str)
        return Part(path, block, "conv", m.in_channels, m.out_channels, k, m.groups, m.bias is not None, same)
    return None


def head_linear(head: nn.Module) -> nn.Linear | None:
    """The Linear of a head that maps features to labels: the head itself, or its last Linear (a Sequential of
    Flatten and Linear, LeViT's BatchNorm1d + Linear)."""
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _heads(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    heads, linears = [], []
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module) and head_linear(head) is not None:
            heads.append(name)
            lin = head_linear(head)
            linears.append(name if lin is head else f"{name}.{next(n for n, m in head.named_modules() if m is lin)}")
    if not heads:
        raise UserError(
            f"{type(model).__name__}: found no Linear classification head (looked for "
            f"{', '.join('.' + n for n in HEAD_NAMES)})"
        )
    return tuple(heads), tuple(linears)


def _exists(model: nn.Module, path: str) -> bool:
    """A module with parameters, or a parameter, at path."""
    try:
        return any(True for _ in model.get_submodule(path).parameters())
    except AttributeError:
        try:
            model.get_parameter(path)
            return True
        except AttributeError:
            return False


def _width(model: nn.Module, final_norm: str | None, head_linears: tuple[str, ...]) -> int:
    norm = model.get_submodule(final_norm) if final_norm else None
    if isinstance(norm, nn.LayerNorm):
        return int(norm.normalized_shape[-1])
    return model.get_submodule(head_linears[0]).in_features


def describe(model: nn.Module) -> Arch:
    """Blocks, stages, head(s), final norm and role modules of a classifier (a PEFT-wrapped one too: its paths
    then lead through the wrapper)."""
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        return _prefixed(describe(model.get_base_model()), "base_model.model.")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = FAMILIES.get(model_type)
    if family is not None:
        found = _from_family(model, model_type, family)
        if found is not None:
            return found
        return _generic(model, f"model type '{model_type}' does not fit its description in peftlab (renamed modules?)")
    why = f"model type '{model_type}' has no description in peftlab" if model_type else "not a transformers model"
    return _generic(model, why)


def _prefixed(arch: Arch, prefix: str) -> Arch:
    def p(path):
        return prefix + path if path else path

    return Arch(
        arch.family,
        tuple(map(p, arch.blocks)),
        arch.stages,
        tuple(map(p, arch.heads)),
        tuple(map(p, arch.head_linears)),
        {r: tuple(Part(p(x.path), *_rest(x)) for x in parts) for r, parts in arch.roles.items()},
        {k: tuple((b, p(x)) for b, x in v) for k, v in arch.norms.items()},
        p(arch.final_norm),
        tuple(map(p, arch.neck)),
        tuple((s, w, p(x)) for s, w, x in arch.between),
        tuple(map(p, arch.stage_paths)),
        arch.tokens,
        arch.pre_norm,
        p(arch.flat),
        arch.width,
        arch.note,
        arch.channels_last,
    )


def _rest(part: Part) -> tuple:
    return (part.block, part.kind, part.d_in, part.d_out, part.k, part.groups, part.bias, part.same)


def _roles_in_blocks(model: nn.Module, blocks: list[str], named: dict[str, str], unique: bool) -> dict:
    """role -> Parts: modules whose path relative to their block fullmatches a named role's regex (unique: the
    generic search, where a pattern must name exactly one Linear per block); every other Conv2d by its shape."""
    roles: dict[str, list[Part]] = {}
    for i, b in enumerate(blocks):
        mods = [(n, m) for n, m in model.get_submodule(b).named_modules() if n and _part(n, i, m) is not None]
        mods = [(n, m) for n, m in mods if not any(n.startswith(o + ".") for o, _ in mods if o != n)]  # PEFT inner
        taken = set()
        for role, pattern in named.items():
            if unique:
                hits = [n for n, m in mods if isinstance(_layer(m), nn.Linear) and re.search(pattern, n)]
                hits = hits if len(hits) == 1 else []
            else:
                hits = [n for n, _ in mods if re.fullmatch(pattern, n)]
            for n in hits:
                if n not in taken:
                    taken.add(n)
                    roles.setdefault(role, []).append(_part(f"{b}.{n}", i, model.get_submodule(f"{b}.{n}")))
        for n, m in mods:
            if n not in taken and isinstance(_layer(m), nn.Conv2d):
                roles.setdefault(conv_role(_layer(m)), []).append(_part(f"{b}.{n}", i, m))
    order = [r for r in ALL_ROLES if r in roles]
    return {r: tuple(roles[r]) for r in order}


def _from_family(model: nn.Module, model_type: str, fam: Family) -> Arch | None:
    blocks, stages = [], []
    for name, m in model.named_modules():
        hit = re.fullmatch(fam.blocks, name)
        if hit and type(m).__name__ in fam.block_types:
            blocks.append(name)
            stages.append(int(hit.groupdict().get("stage") or 0))
    if not blocks:
        return None
    heads, head_linears = _heads(model)
    roles = _roles_in_blocks(model, blocks, fam.roles, unique=False)
    norms = {}
    for name, pattern in fam.norms.items():
        found = [
            (i, f"{b}.{n}")
            for i, b in enumerate(blocks)
            for n, _ in model.get_submodule(b).named_modules()
            if n and re.fullmatch(pattern, n)
        ]
        if found:
            norms[name] = tuple(found)
    last = max(stages)
    between, neck = [], [p for p in fam.neck if _exists(model, p)]
    for s in sorted(set(stages)):
        for when, templates in (("before", fam.before), ("after", fam.after)):
            for t in templates:
                path = t.format(s=s)
                if not _exists(model, path):
                    continue
                if when == "after" and s == last:
                    neck.insert(0, path)  # the last stage's closing norm is the final norm
                elif not (when == "before" and s == min(stages)):  # the first stage's is the stem
                    between.append((s, when, path))
    final_norm = next((p for p in neck[:1] if isinstance(model.get_submodule(p), (nn.LayerNorm, nn.GroupNorm))), None)
    tokens = fam.tokens
    if model_type in ("beit", "data2vec-vision") and not getattr(model.config, "use_mean_pooling", True):
        tokens = "cls"
    if model_type == "deit" and len(heads) == 2:
        tokens = "cls+dist"
    parents = {b.rsplit(".", 1)[0] for b in blocks}
    flat = next(iter(parents)) if len(parents) == 1 and len(set(stages)) == 1 else None
    stage_paths = tuple(fam.stage.format(s=s) for s in sorted(set(stages))) if fam.stage else ()
    return Arch(
        model_type,
        tuple(blocks),
        tuple(stages),
        heads,
        head_linears,
        roles,
        norms,
        final_norm,
        tuple(neck),
        tuple(between),
        stage_paths,
        tokens,
        fam.pre_norm,
        flat,
        _width(model, final_norm, head_linears),
        fam.note,
        fam.channels_last,
    )


_LEAF = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def _generic(model: nn.Module, why: str) -> Arch:
    """The most numerous class of composite modules (holding parameters) among ModuleLists' children: one
    stack (a ViT) or one list per stage (a hierarchical model); roles by name, convolutions by shape."""
    members: dict[type, list[tuple[str, str]]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList):
            for key, child in m.named_children():
                if not isinstance(child, _LEAF) and any(True for _ in child.parameters()):
                    members.setdefault(type(child), []).append((f"{name}.{key}" if name else key, name))
    if not members:
        raise UserError(
            f"{type(model).__name__}: found no stack of blocks (no list of repeated modules); {why}, and peftlab "
            "needs a model made of blocks (e.g. ViT, DeiT, Swin, ConvNeXt, ResNet)"
        )
    cls = max(members, key=lambda c: len(members[c]))
    found = members[cls]
    blocks = [b for b, _ in found if not any(b.startswith(o + ".") for o, _ in found)]
    lists = list(dict.fromkeys(parent for b, parent in found if b in blocks))
    stages = [lists.index(next(p for b2, p in found if b2 == b)) for b in blocks]
    heads, head_linears = _heads(model)
    roles = _roles_in_blocks(model, blocks, ROLE_PATTERNS, unique=True)
    norms = {}
    for name, pattern in NORM_PATTERNS.items():
        found_norms = []
        for i, b in enumerate(blocks):
            hits = [
                n
                for n, m in model.get_submodule(b).named_modules()
                if isinstance(m, nn.LayerNorm) and re.search(pattern, n)
            ]
            if len(hits) == 1:
                found_norms.append((i, f"{b}.{hits[0]}"))
        if found_norms:
            norms[name] = tuple(found_norms)
    # the final norm: a LayerNorm registered after the blocks, outside them and the head
    order = [n for n, _ in model.named_modules()]
    after = order[order.index(blocks[-1]) + 1 :]
    final_norm = next(
        (
            n
            for n in after
            if isinstance(model.get_submodule(n), nn.LayerNorm)
            and not any(n.startswith(b + ".") for b in blocks)
            and not any(n == h or n.startswith(h + ".") for h in heads)
        ),
        None,
    )
    note = (
        f"{why}: generic search found {len(blocks)} blocks of class {cls.__name__} in {', '.join(lists)}, "
        f"head {'+'.join(heads)}, final norm {final_norm or 'none'}, roles by name: {', '.join(roles) or 'none'}"
    )
    return Arch(
        "generic",
        tuple(blocks),
        tuple(stages),
        heads,
        head_linears,
        roles,
        norms,
        final_norm,
        (final_norm,) if final_norm else (),
        (),
        (),
        "cls",
        True,
        lists[0] if len(lists) == 1 else None,
        _width(model, final_norm, head_linears),
        note,
    )
