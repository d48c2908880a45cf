"""Find a classifier's parts: its blocks (every stage, in forward order), what runs between them, its
head(s), what lies between the last block and the head (the final norm), and which module plays each role
inside a block (query, key, value, output, fc1, fc2, the fused qkv, and pointwise / spatial / depthwise
for convolutions).

A family transformers ships is described by its entry in families.py, written out, not guessed. Any other
model gets the generic search: its blocks are the most numerous composite class among the children of its
ModuleLists, its roles the one Linear per block whose name reads as that role; what it found is said in
Arch.note.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..errors import Unsupported, UserError

# generic search: role -> pattern on a Linear's name relative to its block (any naming)
ROLE_PATTERNS: dict[str, str] = {
    "query": r"(^|\.)(q_proj|query|q)$",
    "key": r"(^|\.)(k_proj|key|k)$",
    "value": r"(^|\.)(v_proj|value|v)$",
    "output": r"(^|\.)(attention|attn|self_attn)\.(o_proj|out_proj|proj|output\.dense)$",
    "fc1": r"(^|\.)(mlp\.fc1|intermediate\.dense|mlp\.lin1)$",
    "fc2": r"(^|\.)(mlp\.fc2|mlp\.lin2)$|^output\.dense$",
}
# generic search: the LayerNorm before attention and before the MLP
NORM_PATTERNS: dict[str, str] = {
    "norm1": r"(^|\.)(layernorm_before|norm1|ln_1|ln1|input_layernorm|layer_norm1)$",
    "norm2": r"(^|\.)(layernorm_after|norm2|ln_2|ln2|post_attention_layernorm|layer_norm2)$",
}
CONV_ROLES = ("pointwise", "spatial", "depthwise")  # 1×1; k×k with groups=1; groups>1 (depthwise or grouped)
ALL_ROLES = ("query", "key", "value", "output", "qkv", "fc1", "fc2", "shortcut", *CONV_ROLES)
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
    "pw": "pointwise",
    "dw": "depthwise",
}
ROLE_GROUPS = {
    "attention": ["query", "key", "value", "output", "qkv"],
    "mlp": ["fc1", "fc2"],
    "convs": list(CONV_ROLES),
}  # and all-linear: every role whose modules are Linear layers


@dataclass(frozen=True)
class Part:
    """One module playing a role in a block: its shape as an adapter sees it."""

    path: str  # full module path
    block: int  # index of its block, in forward order
    kind: str  # "linear" or "conv"
    d_in: int  # in_features, or in_channels
    d_out: int
    k: int = 1  # kernel area k_h·k_w (1 for a Linear)
    groups: int = 1
    bias: bool = True
    same: bool = False  # a conv with padding='same'

    def describe(self) -> str:
        if self.kind == "linear":
            return f"Linear {self.d_in}→{self.d_out}"
        side = int(round(self.k**0.5))
        return f"Conv2d {side}×{side} {self.d_in}→{self.d_out}" + (f" groups={self.groups}" if self.groups > 1 else "")


@dataclass(frozen=True)
class Arch:
    """Where a model keeps its parts. Every path is a full module path (parameter path for a loose parameter)."""

    family: str  # its entry in families.py, or "generic"
    blocks: tuple[str, ...]  # every block, in forward order
    stages: tuple[int, ...]  # the stage of each block (0 for a flat stack)
    heads: tuple[str, ...]  # the classification head(s), e.g. ("classifier",) or cls_ and distillation_
    head_linears: tuple[str, ...]  # the Linear of each head that maps features to labels
    roles: dict[str, tuple[Part, ...]]  # role -> its modules in every block that has it, in block order
    norms: dict[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)  # norm1/norm2 -> (block, path)
    final_norm: str | None = None  # the norm right after the last block, if the neck starts with one
    neck: tuple[str, ...] = ()  # after the last block, before the head
    between: tuple[tuple[int, str, str], ...] = ()  # (stage, "before" or "after" its blocks, path)
    stage_paths: tuple[str, ...] = ()  # the module of each stage, where there are such modules
    tokens: str = "cls"  # what the head reads (families.py)
    pre_norm: bool = True
    flat: str | None = None  # the ModuleList holding every block in order, when one does
    width: int = 0  # the residual width at the head (what its final norm normalises)
    note: str = ""  # what was found (generic search) or what to know (fused projections)
    channels_last: tuple[str, ...] = ()  # roles whose Linear reads a (B, H, W, C) map (ConvNeXt's pwconv)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_stages(self) -> int:
        return len(set(self.stages))

    def block_names(self) -> list[str]:
        return list(self.blocks)

    def stage_blocks(self, stage: int) -> list[int]:
        return [i for i, s in enumerate(self.stages) if s == stage]

    def trained_between(self, first: int) -> list[str]:
        """What runs between blocks (a stage's downsampling, patch merging, norm) after block first − 1: trained
        with blocks first.. ('last', 'freeze-first': the network after the last frozen block trains)."""
        out = []
        for s, when, path in self.between:
            idx = self.stage_blocks(s)
            after = idx[0] - 1 if when == "before" else idx[-1]  # the block it runs after
            if after >= first - 1:
                out.append(path)
        return out

    def depth_of(self, name: str) -> int:
        """How deep a parameter sits: 0 before the first block (embeddings), i + 1 inside block i (or in what
        runs right after it), num_blocks + 1 after the last block (final norm, head)."""
        under = lambda path: name == path or name.startswith(path + ".")  # noqa: E731
        for i, path in enumerate(self.blocks):
            if under(path):
                return i + 1
        for s, when, path in self.between:
            if under(path):
                idx = self.stage_blocks(s)
                return idx[0] if when == "before" else idx[-1] + 1
        if any(under(p) for p in (*self.heads, *self.neck)):  # the neck starts with the final norm, if any
            return self.num_blocks + 1
        return 0

    def linear_roles(self) -> list[str]:
        return [r for r, parts in self.roles.items() if all(p.kind == "linear" for p in parts)]

    def parts(self, roles: list[str]) -> list[Part]:
        """The modules of these roles, in block then role order."""
        return sorted((p for r in roles for p in self.roles[r]), key=lambda p: (p.block, roles.index(self.role_of(p))))

    def role_of(self, part: Part) -> str:
        return next(r for r, ps in self.roles.items() if part in ps)

    def in_block(self, i: int, role: str) -> list[Part]:
        return [p for p in self.roles.get(role, ()) if p.block == i]

    def norm_in(self, i: int, name: str) -> str | None:
        return next((p for b, p in self.norms.get(name, ()) if b == i), None)

    def resolve_roles(self, spec: str | list[str], auto: list[str] | None = None) -> list[str]:
        """'query,value' / 'q,v' / 'all-linear' / 'auto' -> canonical roles present in this model. auto: what
        'auto' stands for (the method's choice for this model). A role the model lacks is Unsupported."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        roles: list[str] = []
        for raw in (n.strip().lower() for n in names if n.strip()):
            if raw == "auto":
                expand = list(auto or [])
                if not expand:
                    raise Unsupported(f"no roles for targets=auto; this model's blocks have: {self.roles_text()}")
            elif raw == "all-linear":
                expand = self.linear_roles()
                if not expand:
                    raise Unsupported(f"this model's blocks have no Linear layers (they have: {self.roles_text()})")
            elif raw in ROLE_GROUPS:
                expand = [r for r in ROLE_GROUPS[raw] if r in self.roles]
                if not expand:
                    raise Unsupported(f"this model has no {raw} roles; its blocks have: {self.roles_text()}")
            else:
                expand = [ROLE_ALIASES.get(raw, raw)]
            for role in expand:
                if role not in ALL_ROLES:
                    usable = list(self.roles) + [g for g, rs in ROLE_GROUPS.items() if set(rs) & set(self.roles)]
                    raise UserError(
                        f"unknown target role '{raw}'; this model has: {', '.join(usable + ['all-linear']) or 'none'}"
                    )
                if role not in self.roles:
                    raise Unsupported(f"this model has no '{role}' module in its blocks; it has: {self.roles_text()}")
                if role not in roles:
                    roles.append(role)
        if not roles:
            raise UserError("no target roles given; use e.g. query,value")
        return roles

    def roles_text(self) -> str:
        return ", ".join(self.roles) or "none"

    def target_regex(self, roles: list[str]) -> str:
        """A PEFT target_modules regex matching exactly these roles' modules (full paths, every block)."""
        return "|".join(re.escape(p.path) for p in self.parts(roles))

    def summary(self) -> str:
        """One line: what was found where."""
        n = Counter(self.stages)
        where = (
            f"{self.num_blocks} blocks in {len(n)} stages ({', '.join(str(n[s]) for s in sorted(n))})"
            if len(n) > 1
            else f"{self.num_blocks} blocks"
        )
        return (
            f"{self.family}: {where}, head {'+'.join(self.heads)}, final norm {self.final_norm or 'none'}, "
            f"roles {self.roles_text()}" + (f"; {self.note}" if self.note else "")
        )
