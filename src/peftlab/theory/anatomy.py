"""Anatomies answer the questions every formula asks about a model: its embeddings, n blocks, the
final norm, the head, the Linears of some roles, the biases PEFT would unfreeze. Theory answers from a
ViT/DeiT config with symbols; Structural answers from a built model's module shapes with numbers only.
The builders at the end (base_lines, with_peft, per_shape) are what method formulas are written with."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .. import models
from ..errors import UserError
from .lines import ZERO, Line, Piece, formula

# ------------------------------------------------------------------------- anatomies
# An anatomy answers the questions every formula asks: the embeddings, n blocks, the final norm,
# the head, LoRA on some roles, the biases PEFT would unfreeze. Theory answers from the config
# with symbols; Structural answers from module shapes with numbers only.

# role -> (input width, output width, bias width) in symbols; "a" is the attention width
ROLE_DIMS = {
    "query": ("d", "a", "a"),
    "key": ("d", "a", "a"),
    "value": ("d", "a", "a"),
    "output": ("a", "d", "d"),
    "fc1": ("d", "m", "m"),
    "fc2": ("m", "d", "d"),
}
QKV = ("query", "key", "value")


@dataclass(frozen=True)
class Shape:
    """Adapted modules of one shape: n of them (n_sym in symbols), for the roles in label. din is the fan-in
    an adapter's matrices see (a Linear's in_features; a conv's in_channels·k_h·k_w / groups), cin the input
    channels (what an input-side scale multiplies), k the kernel area (1 for a Linear)."""

    label: str
    n_sym: str
    n: int
    din_sym: str
    dout_sym: str
    din: int
    dout: int
    k: int = 1
    cin_sym: str = ""
    cin: int = 0
    kind: str = "linear"

    @property
    def channels_in(self) -> tuple[str, int]:
        return (self.cin_sym or self.din_sym, self.cin or self.din)


class Anatomy:
    kind: str
    arch: models.Arch
    title: str
    legend: str
    env: dict  # symbol -> value for formula(): the config's; structural: only d and L (shapes are numbers)

    @property
    def num_blocks(self) -> int:
        return self.arch.num_blocks

    def embeddings(self) -> list[tuple[str, Piece]]: ...
    def blocks(self, lo: int, hi: int, mult: str, n: int) -> Piece: ...  # blocks lo..hi-1 (one stage); n: last-n
    def final_norm(self) -> Piece | None: ...
    def head(self) -> Piece: ...
    def biases_all(self) -> Piece: ...
    def biases_of(self, roles: list[str]) -> Piece: ...
    def shapes(self, roles: list[str]) -> list[Shape]: ...  # the roles' modules in all blocks, by shape
    def norms(self) -> Piece: ...  # every LayerNorm's weight and bias
    def patch_channels(self) -> Piece: ...  # output channels of the Conv2d layers outside the blocks and heads

    def between(self, stage: int, when: str) -> list[tuple[str, Piece]]:
        """What runs before ("before") or after ("after") the blocks of a stage (not the first stage's stem,
        not the last stage's closing norm, which is in the neck)."""
        return []

    def neck(self) -> list[tuple[str, Piece]]:
        """What lies between the last block and the head."""
        p = self.final_norm()
        return [("final layernorm", p)] if p is not None else []

    def lora(self, roles: list[str], r: int) -> list[tuple[str, Piece]]:
        """r·(d_in + d_out) per adapted module (a conv's A is r × fan-in, its B 1×1: d_out × r)."""
        out = []
        for sh in self.shapes(roles):
            p = formula(f"{sh.n_sym}·r·({sh.din_sym}+{sh.dout_sym})", {**self.env, "r": r})
            out.append((f"LoRA on {sh.label}", p))
        return out


def groups(roles: list[str], dims: Callable[[str], tuple]) -> list[tuple[list[str], tuple]]:
    """Roles with equal (d_in, d_out), in order: [(['query', 'value'], ('d', 'd')), ...]."""
    out: list[tuple[list[str], tuple]] = []
    for role in roles:
        hit = next((g for g in out if g[1] == dims(role)), None)
        if hit:
            hit[0].append(role)
        else:
            out.append(([role], dims(role)))
    return out


class Theory(Anatomy):
    kind = "theory"

    def __init__(self, config, num_labels: int):
        missing = [
            k
            for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size", "image_size")
            if getattr(config, k, None) is None
        ]
        model_type = getattr(config, "model_type", None) or "vit"
        if missing or model_type not in ("vit", "deit"):
            why = f"lacks {', '.join(missing)}" if missing else f"has model_type '{model_type}'"
            raise UserError(
                f"no parameter formulas for this config: it {why}; formulas cover the "
                "ViT family (model_type vit or deit). Count a built model with "
                "theory.structural(model, ...) instead"
            )
        self.deit = model_type == "deit"
        d, L, m = int(config.hidden_size), int(config.num_hidden_layers), int(config.intermediate_size)
        heads = getattr(config, "num_attention_heads", None)
        head_dim = getattr(config, "head_dim", None) or (d // heads if heads else d)
        a = int(heads * head_dim) if heads else d  # q/k/v width, as ViTAttention builds it
        ph, pw = pair(config.patch_size)
        ih, iw = pair(config.image_size)
        n_patches = (ih // ph) * (iw // pw)
        self.square = ph == pw
        self.wide = a != d
        self.b = 1 if getattr(config, "qkv_bias", True) else 0
        self.env = {
            "d": d,
            "L": L,
            "m": m,
            "a": a,
            "C": int(num_labels),
            "N": n_patches,
            "c": int(getattr(config, "num_channels", 3)),
            "p": ph,
            "p_h": ph,
            "p_w": pw,
            "b": self.b,
        }
        self.arch = vit_arch("deit" if self.deit else "vit", L, d, a, m, self.b)
        name = getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "") or ""
        cls = "DeiTForImageClassification" if self.deit else "ViTForImageClassification"
        self.title = f"{name + ' = ' if name else ''}{cls}, {num_labels} classes"
        patch = f"{ph}" if self.square else f"{ph}×{pw}"
        self.legend = (
            f"d={d} hidden, m={m} MLP, L={L} blocks, N={n_patches} patches "
            f"({ih}/{ph})·({iw}/{pw}), c={self.env['c']} channels, p={patch} patch, "
            + (f"a={a} attention width, " if self.wide else "")
            + f"q/k/v bias {'yes' if self.b else 'no (qkv_bias=False)'}, C={num_labels} classes"
        )

    def _dim(self, sym: str) -> str:
        return "d" if sym == "a" and not self.wide else sym

    def embeddings(self):
        conv = "c·p²·d + d" if self.square else "c·p_h·p_w·d + d"
        tokens = ("cls + distillation tokens", "2·d") if self.deit else ("cls token", "d")
        pos = "(N+2)·d" if self.deit else "(N+1)·d"
        return [
            ("patch embedding (conv)", formula(conv, self.env)),
            (tokens[0], formula(tokens[1], self.env)),
            ("position embeddings", formula(pos, self.env)),
        ]

    def block_formula(self) -> str:
        if not self.wide:
            return f"4·d² + 2·d·m + m + {6 + 3 * self.b}·d"
        return "4·d·a + 2·d·m + m + 6·d" + (" + 3·a" if self.b else "")

    def blocks(self, lo, hi, mult, n):
        return formula(f"{mult}·({self.block_formula()})", {**self.env, "n": n})

    def final_norm(self):
        return formula("2·d", self.env)

    def head(self):
        return formula("d·C + C", self.env)

    def lora(self, roles, r):
        out = []
        for group, (din, dout) in groups(roles, lambda ro: tuple(map(self._dim, ROLE_DIMS[ro][:2]))):
            k = f"{len(group)}·" if len(group) > 1 else ""
            out.append((f"LoRA on {','.join(group)}", formula(f"L·{k}r·({din}+{dout})", {**self.env, "r": r})))
        return out

    def biases_all(self):
        per_block = [f"{4 + 3 * self.b}·d" if not self.wide else "4·d", "m"]
        if self.wide and self.b:
            per_block.append("3·a")
        return formula(f"2·d + L·({' + '.join(per_block)})", self.env)

    def biases_of(self, roles):
        terms = [self._dim(ROLE_DIMS[ro][2]) for ro in roles if ro not in QKV or self.b]
        return formula(f"L·({' + '.join(terms)})", self.env) if terms else ZERO

    def shapes(self, roles):
        L = self.env["L"]
        return [
            Shape(
                ",".join(group),
                "L" + (f"·{len(group)}" if len(group) > 1 else ""),
                L * len(group),
                din,
                dout,
                self.env[din],
                self.env[dout],
            )
            for group, (din, dout) in groups(roles, lambda ro: tuple(map(self._dim, ROLE_DIMS[ro][:2])))
        ]

    def norms(self):  # ViTLayer: layernorm_before and layernorm_after; then the final layernorm
        return formula("L·2·2·d + 2·d", self.env)

    def patch_channels(self):  # ViTPatchEmbeddings.projection: Conv2d(c, d, p, stride p)
        return formula("d", self.env)


def vit_arch(prefix: str, L: int, d: int, a: int, m: int, b: int) -> models.Arch:
    """The Arch of a transformers ViT/DeiT classifier, from its config's numbers (no model built)."""
    blocks = tuple(f"{prefix}.layers.{i}" for i in range(L))
    dims = {
        "query": ("attention.q_proj", d, a, b),
        "key": ("attention.k_proj", d, a, b),
        "value": ("attention.v_proj", d, a, b),
        "output": ("attention.o_proj", a, d, 1),
        "fc1": ("mlp.fc1", d, m, 1),
        "fc2": ("mlp.fc2", m, d, 1),
    }
    roles = {
        role: tuple(
            models.Part(f"{blk}.{rel}", i, "linear", din, dout, bias=bool(bias)) for i, blk in enumerate(blocks)
        )
        for role, (rel, din, dout, bias) in dims.items()
    }
    norms = {
        k: tuple((i, f"{blk}.{rel}") for i, blk in enumerate(blocks))
        for k, rel in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"))
    }
    final = f"{prefix}.layernorm"
    return models.Arch(
        prefix,
        blocks,
        (0,) * L,
        ("classifier",),
        ("classifier",),
        roles,
        norms,
        final,
        (final,),
        flat=f"{prefix}.layers",
        width=d,
    )


def pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))


# ------------------------------------------------------------------------- method formulas


def base_lines(
    an: Anatomy,
    *,
    embeddings: bool = False,
    frozen_blocks: int | None = None,
    final_norm: bool = False,
    head: bool = True,
    head_name: str = "classifier",
) -> list[Line]:
    """The base model's components: the first frozen_blocks blocks frozen, the later ones trainable with what
    runs between them after the last frozen block (Arch.trained_between); final_norm: the neck trains.
    A model in stages gets a line per stage (split where the frozen part ends)."""
    L = an.num_blocks
    frozen = L if frozen_blocks is None else frozen_blocks
    lines = [Line(name, p.symbols, p.numbers, p.count, embeddings) for name, p in an.embeddings()]
    arch = an.arch
    if len(set(arch.stages)) == 1 and not arch.between:
        if frozen == L or frozen == 0:
            p = an.blocks(0, L, "L", 0)
            lines.append(Line(f"blocks (all {L})", p.symbols, p.numbers, p.count, frozen == 0))
        else:
            n = L - frozen
            p = an.blocks(0, frozen, "(L−n)", n)
            lines.append(Line(f"blocks 1–{frozen}", p.symbols, p.numbers, p.count, False))
            p = an.blocks(frozen, L, "n", n)
            lines.append(Line(f"last {n} block{'s' if n > 1 else ''}", p.symbols, p.numbers, p.count, True))
    else:
        lines += _stage_lines(an, frozen)
    for name, p in an.neck():
        lines.append(Line(name, p.symbols, p.numbers, p.count, final_norm))
    p = an.head()
    lines.append(Line(head_name, p.symbols, p.numbers, p.count, head))
    return lines


def _stage_lines(an: Anatomy, frozen: int) -> list[Line]:
    """Per stage: what runs before its blocks, its blocks (frozen part, trainable part), what runs after."""
    lines = []
    arch = an.arch
    for s in sorted(set(arch.stages)):
        idx = arch.stage_blocks(s)
        a, b = idx[0], idx[-1] + 1
        for name, p in an.between(s, "before"):  # runs after block a − 1
            lines.append(Line(f"stage {s + 1} {name}", p.symbols, p.numbers, p.count, a - 1 >= frozen - 1))
        for lo, hi, trainable in ((a, min(b, frozen), False), (max(a, frozen), b, True)):
            if lo >= hi:
                continue
            whole = (lo, hi) == (a, b)
            p = an.blocks(lo, hi, f"L{s + 1}" if whole else str(hi - lo), hi - lo)
            which = (
                f"blocks (all {b - a})"
                if whole
                else f"block {lo - a + 1} of {b - a}"
                if hi - lo == 1
                else f"blocks {lo - a + 1}–{hi - a} of {b - a}"
            )
            lines.append(Line(f"stage {s + 1} {which}", p.symbols, p.numbers, p.count, trainable))
        for name, p in an.between(s, "after"):  # runs after block b − 1
            lines.append(Line(f"stage {s + 1} {name}", p.symbols, p.numbers, p.count, b - 1 >= frozen - 1))
    return lines


def with_peft(an: Anatomy, added: list[Line]) -> list[Line]:
    """A PEFT model: the base (its head frozen), the adapter's lines, and PEFT's trainable head copy."""
    heads = "+".join(an.arch.heads)
    lines = base_lines(an, head=False, head_name=f"{heads} (original; PEFT freezes it)") + added
    p = an.head()
    lines.append(Line(f"{heads} copy (PEFT modules_to_save)", p.symbols, p.numbers, p.count, True, "copy"))
    return lines


def per_shape(
    an: Anatomy,
    roles: list[str],
    name: str,
    per_layer: Callable[[Shape], tuple[str, dict, str]],
    trainable: bool = True,
) -> list[Line]:
    """One "added" line per group of equal-shaped modules: count · per_layer(shape). per_layer gives the
    formula of one layer in the shape's symbols, extra symbol values, and a note for the line's name."""
    lines = []
    for sh in an.shapes(roles):
        expr, env, note = per_layer(sh)
        body = "" if expr == "1" else "·" + (expr if re.fullmatch(r"\w+", expr) else f"({expr})")
        p = formula(sh.n_sym + body, {**an.env, **env})
        lines.append(
            Line(
                f"{name} on {sh.label}{f' ({note})' if note else ''}", p.symbols, p.numbers, p.count, trainable, "added"
            )
        )
    return lines
