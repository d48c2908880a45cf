"""Anatomies answer the questions every formula asks about a model: its embeddings, n blocks, the
final norm, the head, the Linears of some roles, the biases PEFT would unfreeze. Theory answers from a
ViT/DeiT config with symbols; Structural answers from a built model's module shapes with numbers only.
The builders at the end (base_lines, with_peft, per_shape) are what method formulas are written with."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

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
    """Adapted Linears of one (d_in, d_out): n of them (n_sym in symbols), for the roles in label."""

    label: str
    n_sym: str
    n: int
    din_sym: str
    dout_sym: str
    din: int
    dout: int


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
    def blocks(self, lo: int, hi: int, mult: str, n: int) -> Piece: ...  # blocks lo..hi-1; n: last-n count
    def final_norm(self) -> Piece | None: ...
    def head(self) -> Piece: ...
    def lora(self, roles: list[str], r: int) -> list[tuple[str, Piece]]: ...
    def biases_all(self) -> Piece: ...
    def biases_of(self, roles: list[str]) -> Piece: ...
    def shapes(self, roles: list[str]) -> list[Shape]: ...  # the roles' Linears in all blocks, by shape
    def norms(self) -> Piece: ...  # every LayerNorm's weight and bias
    def patch_channels(self) -> Piece: ...  # output channels of the patch embedding (Conv2d outside the blocks)


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
        prefix = "deit" if self.deit else "vit"
        self.arch = models.Arch(
            f"{prefix}.layers",
            L,
            "classifier",
            f"{prefix}.layernorm",
            {
                "query": "attention.q_proj",
                "key": "attention.k_proj",
                "value": "attention.v_proj",
                "output": "attention.o_proj",
                "fc1": "mlp.fc1",
                "fc2": "mlp.fc2",
            },
            {"norm1": "layernorm_before", "norm2": "layernorm_after"},
        )
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


def pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))


class Structural(Anatomy):
    kind = "structural"

    def __init__(self, model: nn.Module, num_labels: int | None):
        if hasattr(model, "peft_config"):
            raise UserError("structural() counts a plain model; pass it before a method is applied")
        self.arch = arch = models.describe(model)
        params = dict(model.named_parameters())  # unique tensors, as measure.count_params
        head: nn.Linear = model.get_submodule(arch.classifier)
        self.d, self.C = head.in_features, int(num_labels or head.out_features)
        self.blocks_n = [sum(p.numel() for p in model.get_submodule(b).parameters()) for b in arch.block_names()]
        self.norm = (
            sum(p.numel() for p in model.get_submodule(arch.final_norm).parameters()) if arch.final_norm else None
        )
        old_head = sum(p.numel() for p in head.parameters())
        self.outside = sum(p.numel() for p in params.values()) - sum(self.blocks_n) - (self.norm or 0) - old_head
        self.linears = {
            role: [model.get_submodule(f"{b}.{rel}") for b in arch.block_names()] for role, rel in arch.roles.items()
        }
        under_head = arch.classifier + "."
        self.all_biases = sum(
            p.numel()
            for n, p in params.items()
            if (n == "bias" or n.endswith(".bias")) and not n.startswith(under_head)
        )
        self.norm_params = [
            p.numel()
            for n, m in model.named_modules()
            if isinstance(m, nn.LayerNorm) and not (n == arch.classifier or n.startswith(under_head))
            for p in m.parameters()
        ]
        skip = (arch.blocks_path + ".", under_head)
        self.conv_channels = [
            m.out_channels
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and not (n + ".").startswith(skip)
        ]
        # what method formulas name besides shapes: the hidden width (what the head reads) and the blocks
        self.env = {"d": self.d, "L": arch.num_blocks}
        self.title = f"{type(model).__name__}, {self.C} classes, counted from module shapes"
        self.legend = f"blocks at {arch.blocks_path} ({arch.num_blocks}), head {arch.classifier}"

    def embeddings(self):
        return [("outside the blocks (embeddings etc.)", Piece("Σ shapes", str(self.outside), self.outside))]

    def blocks(self, lo, hi, mult, n):
        counts = self.blocks_n[lo:hi]
        numbers = f"{len(counts)}·{counts[0]}" if len(set(counts)) == 1 else "+".join(map(str, counts))
        return Piece(f"{mult}·block", numbers, sum(counts))

    def final_norm(self):
        return Piece("Σ shapes", str(self.norm), self.norm) if self.norm is not None else None

    def head(self):
        return Piece("d·C + C", f"{self.d}·{self.C} + {self.C}", self.d * self.C + self.C)

    def lora(self, roles, r):
        def dims(role):
            return tuple((m.in_features, m.out_features) for m in self.linears[role])

        out = []
        for group, shapes in groups(roles, dims):
            k = f"{len(group)}·" if len(group) > 1 else ""
            if len(set(shapes)) == 1:
                numbers = f"{len(shapes)}·{k}{r}·({shapes[0][0]}+{shapes[0][1]})"
            else:
                numbers = f"{k}{r}·(" + " + ".join(f"{i}+{o}" for i, o in shapes) + ")"
            count = len(group) * sum(r * (i + o) for i, o in shapes)
            out.append((f"LoRA on {','.join(group)}", Piece(f"Σ_blocks {k}r·(d_in+d_out)", numbers, count)))
        return out

    def biases_all(self):
        return Piece("Σ biases", str(self.all_biases), self.all_biases)

    def biases_of(self, roles):
        counts = [m.bias.numel() for ro in roles for m in self.linears[ro] if m.bias is not None]
        return Piece("Σ biases", "+".join(map(str, counts)) or "0", sum(counts)) if counts else ZERO

    def shapes(self, roles):
        by_shape: dict[tuple[int, int], tuple[list[str], list]] = {}
        for role in roles:
            for m in self.linears[role]:
                group = by_shape.setdefault((m.in_features, m.out_features), ([], []))
                if role not in group[0]:
                    group[0].append(role)
                group[1].append(m)
        return [
            Shape(",".join(group), str(len(mods)), len(mods), str(i), str(o), i, o)
            for (i, o), (group, mods) in by_shape.items()
        ]

    def patch_channels(self):
        c = self.conv_channels
        return Piece("Σ Conv2d channels", "+".join(map(str, c)) or "0", sum(c)) if c else ZERO

    def norms(self):
        c = self.norm_params
        numbers = f"{len(c)}·{c[0]}" if len(set(c)) == 1 and len(c) > 1 else "+".join(map(str, c)) or "0"
        return Piece("Σ LayerNorm shapes", numbers, sum(c))


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
    """The base model's components; the last num_blocks - frozen_blocks blocks are trainable."""
    L = an.num_blocks
    frozen = L if frozen_blocks is None else frozen_blocks
    lines = [Line(name, p.symbols, p.numbers, p.count, embeddings) for name, p in an.embeddings()]
    if frozen == L or frozen == 0:
        p = an.blocks(0, L, "L", 0)
        lines.append(Line(f"blocks (all {L})", p.symbols, p.numbers, p.count, frozen == 0))
    else:
        n = L - frozen
        p = an.blocks(0, frozen, "(L−n)", n)
        lines.append(Line(f"blocks 1–{frozen}", p.symbols, p.numbers, p.count, False))
        p = an.blocks(frozen, L, "n", n)
        lines.append(Line(f"last {n} block{'s' if n > 1 else ''}", p.symbols, p.numbers, p.count, True))
    norm = an.final_norm()
    if norm is not None:
        lines.append(Line("final layernorm", norm.symbols, norm.numbers, norm.count, final_norm))
    p = an.head()
    lines.append(Line(head_name, p.symbols, p.numbers, p.count, head))
    return lines


def with_peft(an: Anatomy, added: list[Line]) -> list[Line]:
    """A PEFT model: the base (its head frozen), the adapter's lines, and PEFT's trainable head copy."""
    lines = base_lines(an, head=False, head_name="classifier (original; PEFT freezes it)") + added
    p = an.head()
    lines.append(Line("classifier copy (PEFT modules_to_save)", p.symbols, p.numbers, p.count, True, "copy"))
    return lines


def per_shape(
    an: Anatomy,
    roles: list[str],
    name: str,
    per_layer: Callable[[Shape], tuple[str, dict, str]],
    trainable: bool = True,
) -> list[Line]:
    """One "added" line per group of equal-shaped Linears: count · per_layer(shape). per_layer gives the
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
