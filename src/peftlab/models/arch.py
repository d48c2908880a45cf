"""Find a classifier's parts by role: its stack of blocks, head, final norm, and which Linear plays
each role (query, key, value, output, fc1, fc2) inside a block.

Architectures name their modules differently (transformers 5: ``vit.layers.N.attention.q_proj``;
older releases: ``vit.encoder.layer.N.attention.attention.query``), so nothing here hard-codes one
naming: blocks are the model's largest ModuleList, and each role is the one Linear inside a block whose
relative name matches that role's pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from ..errors import UserError

# role -> pattern on a Linear's name relative to its block; first spelling is transformers 5's.
ROLE_PATTERNS: dict[str, str] = {
    "query": r"(^|\.)(q_proj|query|q)$",
    "key": r"(^|\.)(k_proj|key|k)$",
    "value": r"(^|\.)(v_proj|value|v)$",
    "output": r"(^|\.)(attention|attn|self_attn)\.(o_proj|out_proj|proj|output\.dense)$",
    "fc1": r"(^|\.)(mlp\.fc1|intermediate\.dense|mlp\.lin1)$",
    "fc2": r"(^|\.)(mlp\.fc2|mlp\.lin2)$|^output\.dense$",
}
# norm -> pattern on a LayerNorm's name relative to its block: the norm before attention and before the MLP
NORM_PATTERNS: dict[str, str] = {
    "norm1": r"(^|\.)(layernorm_before|norm1|ln_1|ln1|input_layernorm)$",
    "norm2": r"(^|\.)(layernorm_after|norm2|ln_2|ln2|post_attention_layernorm)$",
}
ROLE_ALIASES = {
    "q": "query",
    "k": "key",
    "v": "value",
    "o": "output",
    "out": "output",
    "proj": "output",
    "dense": "output",
    "mlp_in": "fc1",
    "intermediate": "fc1",
    "mlp_out": "fc2",
}
ROLE_GROUPS = {
    "all-linear": list(ROLE_PATTERNS),
    "attention": ["query", "key", "value", "output"],
    "mlp": ["fc1", "fc2"],
}


@dataclass(frozen=True)
class Arch:
    """Where a model keeps its blocks, head and final norm, and which Linear plays each role."""

    blocks_path: str  # e.g. "vit.layers"
    num_blocks: int
    classifier: str  # attribute path of the classification head, e.g. "classifier"
    final_norm: str | None  # norm between the last block and the head, e.g. "vit.layernorm"
    roles: dict[str, str]  # role -> module path relative to a block, e.g. "query" -> "attention.q_proj"
    # the block's LayerNorms: "norm1" (before attention) and "norm2" (before the MLP) -> path in the block
    norms: dict[str, str] = field(default_factory=dict)

    def block_names(self) -> list[str]:
        return [f"{self.blocks_path}.{i}" for i in range(self.num_blocks)]

    def resolve_roles(self, spec: str | list[str]) -> list[str]:
        """'query,value' / 'q,v' / 'all-linear' -> canonical roles present in this model."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        roles: list[str] = []
        for raw in (n.strip().lower() for n in names if n.strip()):
            for role in ROLE_GROUPS.get(raw, [ROLE_ALIASES.get(raw, raw)]):
                if role not in ROLE_PATTERNS:  # offer what this model has, not every role there is
                    usable = list(self.roles) + [g for g, rs in ROLE_GROUPS.items() if set(rs) <= set(self.roles)]
                    raise UserError(f"unknown target role '{raw}'; this model has: {', '.join(usable) or 'none'}")
                if role not in self.roles:
                    raise UserError(
                        f"this model has no '{role}' module in its blocks; it has: {', '.join(self.roles) or 'none'}"
                    )
                if role not in roles:
                    roles.append(role)
        if not roles:
            raise UserError("no target roles given; use e.g. query,value")
        return roles

    def target_regex(self, roles: list[str]) -> str:
        """A PEFT target_modules regex matching exactly these roles' Linears in every block."""
        rels = "|".join(re.escape(self.roles[r]) for r in roles)
        return rf"(.*\.)?{re.escape(self.blocks_path)}\.\d+\.({rels})"


def blocks_of(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of blocks: the longest ModuleList (PEFT's wrappers add ModuleDicts, not lists)."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise UserError(
            f"{type(model).__name__}: found no stack of blocks; peftlab needs a "
            "transformer-style model (e.g. ViT, DeiT)"
        )
    return max(lists, key=lambda nm: len(nm[1]))


def role_paths(block: nn.Module) -> dict[str, str]:
    """Role -> the path, relative to the block, of the one Linear whose name matches the role's pattern
    (or of the PEFT layer wrapping it, which sits at the Linear's path)."""
    linears = [
        n
        for n, m in block.named_modules()
        if isinstance(m, nn.Linear) or isinstance(getattr(m, "base_layer", None), nn.Linear)
    ]
    out = {}
    for role, pattern in ROLE_PATTERNS.items():
        hits = [n for n in linears if re.search(pattern, n)]
        if len(hits) == 1:
            out[role] = hits[0]
    return out


def norm_paths(block: nn.Module) -> dict[str, str]:
    """ "norm1"/"norm2" -> the path, relative to the block, of the one LayerNorm whose name matches."""
    norms = [n for n, m in block.named_modules() if isinstance(m, nn.LayerNorm)]
    out = {}
    for role, pattern in NORM_PATTERNS.items():
        hits = [n for n in norms if re.search(pattern, n)]
        if len(hits) == 1:
            out[role] = hits[0]
    return out


def role_modules(block: nn.Module) -> dict[str, nn.Module]:
    """Role -> the module playing it in one block (see role_paths)."""
    return {role: block.get_submodule(path) for role, path in role_paths(block).items()}


def describe(model: nn.Module) -> Arch:
    """Find blocks, head, final norm and role modules of a classifier, whatever its naming."""
    blocks_path, blocks = blocks_of(model)
    classifier = next((n for n in ("classifier", "head", "fc") if isinstance(getattr(model, n, None), nn.Linear)), None)
    if classifier is None:
        raise UserError(
            f"{type(model).__name__}: found no Linear classification head (looked for .classifier, .head, .fc)"
        )
    roles = role_paths(blocks[0])
    # the final norm: a LayerNorm registered after the blocks, outside them (ViT: vit.layernorm)
    order = [n for n, _ in model.named_modules()]
    after = order[order.index(blocks_path) + 1 :]
    norms = [
        n for n in after if not n.startswith(blocks_path + ".") and isinstance(model.get_submodule(n), nn.LayerNorm)
    ]
    final_norm = norms[0] if norms else None
    return Arch(blocks_path, len(blocks), classifier, final_norm, roles, norm_paths(blocks[0]))
