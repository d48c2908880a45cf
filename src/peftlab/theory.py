"""Parameter counts derived from a model's config: a per-component table of formulas, checked
against what measure.count_params finds in the model actually built.

    bd = derive(load_config("vit-base-patch16-224"), "lora", LoraConfig(r=8), num_labels=101)
    print(bd.format())      # LoRA on query,value: L·2·r·(d+d) = 12·2·8·(768+768) = 294,912 ...
    check(bd, measure.count_params(prepared.model, base_total))  # {"theory_match": True, ...}

The definitions are measure.count_params's:
  base            = the model with its new C-class head (the pretrained head is gone);
  added           = parameters a method adds beside the base (LoRA's A and B matrices);
  total           = base + added: each module once, PEFT's modules_to_save copy of the head not again;
  peft_all_params = PEFT's own "all params", which counts the head twice (original and copy);
  trainable       = parameters with requires_grad after the method is applied; % is of base.

derive() knows the transformers ViT family (model_type "vit" and "deit": ViTForImageClassification,
DeiTForImageClassification). For any other classifier, structural() counts the same table from the
built model's module shapes; its result says kind="structural" and is never called theory.

Every registered method (methods.REGISTRY) needs an entry in FORMULAS; the tests enforce it.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from . import methods as methods_mod
from . import models
from .errors import UserError

# ------------------------------------------------------------------------- result types


@dataclass
class Line:
    """One component: its name, formula in symbols, the same with numbers, and its count.

    part says how the count adds up: "base" lines sum to the base model, "added" lines to the
    adapter parameters, "copy" is PEFT's trainable copy of the head (counted only in PEFT's
    "all params"), "subset" is a trainable slice of base lines (e.g. biases), not counted again.
    """

    component: str
    symbols: str
    numbers: str
    count: int
    trainable: bool
    part: str = "base"  # base | added | copy | subset

    def __str__(self) -> str:
        shown = [self.symbols] + ([self.numbers] if self.numbers != self.symbols else [])
        if shown[-1] != f"{self.count:,}":
            shown.append(f"{self.count:,}")
        return f"{self.component}: {' = '.join(shown)}"


@dataclass
class Breakdown:
    """Total and trainable parameters of one model + method, component by component."""

    lines: list[Line]
    total: int
    trainable: int
    base: int
    added: int
    peft_all_params: int
    kind: str = "theory"  # "theory" (from the config) or "structural" (from module shapes)
    title: str = ""
    legend: str = ""  # the symbols and their values
    notes: list[str] = field(default_factory=list)  # the figures people misread, one line each

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.base

    def format(self) -> str:
        """The table, the totals and the notes, as printable text."""
        out = [f"{self.kind.capitalize()}: {self.title}"]
        if self.legend:
            out.append(f"  where {self.legend}")
        sections = [
            ("base", "model (base)"),
            ("added", "added by the method"),
            ("copy", "PEFT's trainable copy (not part of total)"),
            ("subset", "trainable parts of the frozen base (already in base)"),
        ]
        for part, heading in sections:
            lines = [ln for ln in self.lines if ln.part == part]
            if lines:
                out.append(f"  {heading}:")
                out += [f"    {'trainable' if ln.trainable else 'frozen   '}  {ln}" for ln in lines]
        out += [
            f"  base            = {self.base:>13,}",
            f"  added           = {self.added:>13,}",
            f"  total           = {self.total:>13,}   (base + added)",
            f"  trainable       = {self.trainable:>13,}   ({self.trainable_pct:.4f} % of base)",
            f"  PEFT all params = {self.peft_all_params:>13,}",
        ]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {**asdict(self), "trainable_pct": self.trainable_pct}


# ------------------------------------------------------------------------- formula arithmetic


@dataclass(frozen=True)
class Piece:
    symbols: str
    numbers: str
    count: int


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _f(expr: str, env: Mapping[str, int]) -> Piece:
    """'L·2·r·(d+d)' with {L: 12, r: 8, d: 768} -> Piece(expr, '12·2·8·(768+768)', 294912).
    Only this module's own formula strings are evaluated (·, −, ² and integer arithmetic)."""
    numbers = _SYMBOL.sub(lambda m: str(env[m.group()]), expr)
    code = numbers.replace("·", "*").replace("−", "-").replace("²", "**2")
    return Piece(expr, numbers, int(eval(code, {"__builtins__": {}}, {})))  # noqa: S307


def _sum(pieces: list[Piece]) -> Piece:
    return Piece(
        " + ".join(p.symbols for p in pieces), " + ".join(p.numbers for p in pieces), sum(p.count for p in pieces)
    )


ZERO = Piece("0", "0", 0)

# ------------------------------------------------------------------------- anatomies
# An anatomy answers the questions every formula asks: the embeddings, n blocks, the final norm,
# the head, LoRA on some roles, the biases PEFT would unfreeze. _Theory answers from the config
# with symbols; _Structural answers from module shapes with numbers only.

# role -> (input width, output width, bias width) in symbols; "a" is the attention width
_ROLE_DIMS = {
    "query": ("d", "a", "a"),
    "key": ("d", "a", "a"),
    "value": ("d", "a", "a"),
    "output": ("a", "d", "d"),
    "fc1": ("d", "m", "m"),
    "fc2": ("m", "d", "d"),
}
_QKV = ("query", "key", "value")


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


class _Anatomy:
    kind: str
    arch: models.Arch
    title: str
    legend: str
    env: dict  # symbol -> value for _f (empty for structural counts, whose "symbols" are numbers)

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


def _groups(roles: list[str], dims: Callable[[str], tuple]) -> list[tuple[list[str], tuple]]:
    """Roles with equal (d_in, d_out), in order: [(['query', 'value'], ('d', 'd')), ...]."""
    out: list[tuple[list[str], tuple]] = []
    for role in roles:
        hit = next((g for g in out if g[1] == dims(role)), None)
        if hit:
            hit[0].append(role)
        else:
            out.append(([role], dims(role)))
    return out


class _Theory(_Anatomy):
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
        ph, pw = _pair(config.patch_size)
        ih, iw = _pair(config.image_size)
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
            ("patch embedding (conv)", _f(conv, self.env)),
            (tokens[0], _f(tokens[1], self.env)),
            ("position embeddings", _f(pos, self.env)),
        ]

    def block_formula(self) -> str:
        if not self.wide:
            return f"4·d² + 2·d·m + m + {6 + 3 * self.b}·d"
        return "4·d·a + 2·d·m + m + 6·d" + (" + 3·a" if self.b else "")

    def blocks(self, lo, hi, mult, n):
        return _f(f"{mult}·({self.block_formula()})", {**self.env, "n": n})

    def final_norm(self):
        return _f("2·d", self.env)

    def head(self):
        return _f("d·C + C", self.env)

    def lora(self, roles, r):
        out = []
        for group, (din, dout) in _groups(roles, lambda ro: tuple(map(self._dim, _ROLE_DIMS[ro][:2]))):
            k = f"{len(group)}·" if len(group) > 1 else ""
            out.append((f"LoRA on {','.join(group)}", _f(f"L·{k}r·({din}+{dout})", {**self.env, "r": r})))
        return out

    def biases_all(self):
        per_block = [f"{4 + 3 * self.b}·d" if not self.wide else "4·d", "m"]
        if self.wide and self.b:
            per_block.append("3·a")
        return _f(f"2·d + L·({' + '.join(per_block)})", self.env)

    def biases_of(self, roles):
        terms = [self._dim(_ROLE_DIMS[ro][2]) for ro in roles if ro not in _QKV or self.b]
        return _f(f"L·({' + '.join(terms)})", self.env) if terms else ZERO

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
            for group, (din, dout) in _groups(roles, lambda ro: tuple(map(self._dim, _ROLE_DIMS[ro][:2])))
        ]

    def norms(self):  # ViTLayer: layernorm_before and layernorm_after; then the final layernorm
        return _f("L·2·2·d + 2·d", self.env)


def _pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))


class _Structural(_Anatomy):
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
        self.env = {}
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
        for group, shapes in _groups(roles, dims):
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

    def norms(self):
        c = self.norm_params
        numbers = f"{len(c)}·{c[0]}" if len(set(c)) == 1 and len(c) > 1 else "+".join(map(str, c)) or "0"
        return Piece("Σ LayerNorm shapes", numbers, sum(c))


# ------------------------------------------------------------------------- method formulas


def _base_lines(
    an: _Anatomy,
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


def _head(an: _Anatomy, cfg) -> list[Line]:
    return _base_lines(an)


def _last(an: _Anatomy, cfg) -> list[Line]:
    if cfg.blocks > an.num_blocks:
        raise UserError(f"last.blocks={cfg.blocks} but the model has {an.num_blocks} blocks")
    return _base_lines(
        an, frozen_blocks=an.num_blocks - cfg.blocks, final_norm=bool(cfg.final_norm and an.arch.final_norm)
    )


def _full(an: _Anatomy, cfg) -> list[Line]:
    return _base_lines(an, embeddings=True, frozen_blocks=0, final_norm=True)


def _freeze_first(an: _Anatomy, cfg) -> list[Line]:
    return _base_lines(an, frozen_blocks=cfg.frozen_blocks(an.num_blocks), final_norm=True)


def _bitfit(an: _Anatomy, cfg) -> list[Line]:
    p = an.biases_all()  # every parameter named *.bias outside the head (whose bias is in the head line)
    return _base_lines(an) + [
        Line(
            "biases (patch embedding, blocks incl. LayerNorm β, final norm)",
            p.symbols,
            p.numbers,
            p.count,
            True,
            "subset",
        )
    ]


def _with_peft(an: _Anatomy, added: list[Line]) -> list[Line]:
    """A PEFT model: the base (its head frozen), the adapter's lines, and PEFT's trainable head copy."""
    lines = _base_lines(an, head=False, head_name="classifier (original; PEFT freezes it)") + added
    p = an.head()
    lines.append(Line("classifier copy (PEFT modules_to_save)", p.symbols, p.numbers, p.count, True, "copy"))
    return lines


def _per_shape(
    an: _Anatomy,
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
        p = _f(sh.n_sym + body, {**an.env, **env})
        lines.append(
            Line(
                f"{name} on {sh.label}{f' ({note})' if note else ''}", p.symbols, p.numbers, p.count, trainable, "added"
            )
        )
    return lines


def _lora(an: _Anatomy, cfg) -> list[Line]:
    """LoRA, lora-all and rsLoRA (the scaling alpha/√r changes no count), and DoRA's magnitudes."""
    roles = an.arch.resolve_roles(cfg.targets)
    added = [Line(name, p.symbols, p.numbers, p.count, True, "added") for name, p in an.lora(roles, cfg.r)]
    if cfg.use_dora:  # PEFT lora_magnitude_vector: one magnitude per output feature of each adapted Linear
        added += _per_shape(an, roles, "DoRA magnitudes", lambda sh: (sh.dout_sym, {}, ""))
    lines = _with_peft(an, added)
    if cfg.bias == "all":  # PEFT: every parameter named *.bias, LayerNorm β included; not the head's original
        p = an.biases_all()
        lines.append(
            Line(
                "biases (bias=all: patch embedding, blocks incl. LayerNorm β, final norm)",
                p.symbols,
                p.numbers,
                p.count,
                True,
                "subset",
            )
        )
    elif cfg.bias == "lora_only":  # PEFT: the biases of the adapted Linears
        p = an.biases_of(roles)
        lines.append(
            Line(f"biases of {','.join(roles)} (bias=lora_only)", p.symbols, p.numbers, p.count, True, "subset")
        )
    return lines


def _adalora(an: _Anatomy, cfg) -> list[Line]:
    roles = an.arch.resolve_roles(cfg.targets)
    env = {"r": cfg.init_r}  # the parameters keep their init_r shape; pruning masks Λ's entries
    return _with_peft(
        an,
        _per_shape(
            an, roles, "AdaLoRA P, Λ, Q (r = init_r)", lambda sh: (f"r·({sh.din_sym}+{sh.dout_sym}) + r", env, "")
        )
        + _per_shape(an, roles, "AdaLoRA rank counters (ranknum, frozen)", lambda sh: ("1", {}, ""), trainable=False),
    )


def _loha(an: _Anatomy, cfg) -> list[Line]:
    roles = an.arch.resolve_roles(cfg.targets)
    return _with_peft(
        an,
        _per_shape(an, roles, "LoHa (B₁A₁)⊙(B₂A₂)", lambda sh: (f"2·r·({sh.din_sym}+{sh.dout_sym})", {"r": cfg.r}, "")),
    )


def _factorization(dim: int, factor: int = -1) -> tuple[int, int]:
    """dim = m·n with m <= n, as LyCORIS/PEFT split a LoKr dimension: m = factor when it divides dim,
    else the largest divisor pair with m <= factor (or near √dim for factor -1) found by ascending search."""
    if factor > 0 and dim % factor == 0:
        return factor, dim // factor
    factor = dim if factor == -1 else factor
    m, n = 1, dim
    while m < n:
        new_m = m + 1
        while dim % new_m:
            new_m += 1
        new_n = dim // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (m, n) if m <= n else (n, m)


def _lokr(an: _Anatomy, cfg) -> list[Line]:
    """W₁ ⊗ W₂ with out = o1·o2, in = i1·i2 (o1 <= o2, i1 <= i2); W₁ (o1×i1) is full unless decompose_both and
    r < max(o1, i1)/2, W₂ (o2×i2) is factored to rank r when r < max(o2, i2)/2 (PEFT's rule)."""
    roles = an.arch.resolve_roles(cfg.targets)

    def per_layer(sh: Shape):
        (o1, o2), (i1, i2) = _factorization(sh.dout, cfg.decompose_factor), _factorization(sh.din, cfg.decompose_factor)
        w1 = "r·(o1+i1)" if cfg.decompose_both and cfg.r < max(o1, i1) / 2 else "o1·i1"
        w2 = "r·(o2+i2)" if cfg.r < max(o2, i2) / 2 else "o2·i2"
        return (
            f"{w1} + {w2}",
            {"r": cfg.r, "o1": o1, "o2": o2, "i1": i1, "i2": i2},
            f"out {sh.dout} = {o1}·{o2}, in {sh.din} = {i1}·{i2}",
        )

    return _with_peft(an, _per_shape(an, roles, "LoKr W₁⊗W₂", per_layer))


def _vera(an: _Anatomy, cfg) -> list[Line]:
    roles = an.arch.resolve_roles(cfg.targets)
    added = _per_shape(
        an, roles, "VeRA scaling vectors b (d_out) and d (r)", lambda sh: (f"{sh.dout_sym} + r", {"r": cfg.r}, "")
    )
    # the shared random A (r × largest d_in) and B (largest d_out × r) are buffers, saved with the adapter
    added.append(Line("shared random A, B (frozen buffers, not parameters)", "0", "0", 0, False, "added"))
    return _with_peft(an, added)


def _ia3(an: _Anatomy, cfg) -> list[Line]:
    roles, ff = methods_mod.ia3_roles(an.arch, cfg)
    rest = [ro for ro in roles if ro not in ff]
    added = _per_shape(an, rest, "IA³ output scales", lambda sh: (sh.dout_sym, {}, "")) if rest else []
    if ff:
        added += _per_shape(an, ff, "IA³ input scales (feedforward)", lambda sh: (sh.din_sym, {}, ""))
    return _with_peft(an, added)


def _oft_block(d_in: int, size: int) -> int:
    """The block size PEFT's OFT uses for an input width: size if it divides d_in (at most d_in), else the
    nearest divisor of d_in, the smaller one on a tie."""
    if size >= d_in:
        return d_in
    if d_in % size == 0:
        return size
    up = size
    while up <= d_in and d_in % up:
        up += 1
    down = size
    while down > 1 and d_in % down:
        down -= 1
    return down if size - down <= up - size else up


def _oft(an: _Anatomy, cfg) -> list[Line]:
    """Per Linear: d_in/s skew-symmetric s×s blocks of s·(s−1)/2 free entries (one block if block_share)."""
    roles = an.arch.resolve_roles(cfg.targets)

    def per_layer(sh: Shape):
        s = _oft_block(sh.din, cfg.block_size)
        expr = "s·(s−1)/2" if cfg.block_share else f"({sh.din_sym}/s)·s·(s−1)/2"
        return expr, {"s": s}, f"block s={s}" + (", shared" if cfg.block_share else "")

    return _with_peft(an, _per_shape(an, roles, "OFT rotations", per_layer))


def _layernorm(an: _Anatomy, cfg) -> list[Line]:
    p = an.norms()  # PEFT ln_tuning trains a copy of every LayerNorm; the originals stay, frozen
    return _with_peft(an, [Line("LayerNorm copies (PEFT ln_tuning)", p.symbols, p.numbers, p.count, True, "added")])


FORMULAS: dict[str, Callable[[_Anatomy, object], list[Line]]] = {
    "head": _head,
    "last": _last,
    "freeze-first": _freeze_first,
    "bitfit": _bitfit,
    "layernorm": _layernorm,
    "lora": _lora,
    "lora-all": _lora,
    "rslora": _lora,
    "dora": _lora,
    "adalora": _adalora,
    "loha": _loha,
    "lokr": _lokr,
    "vera": _vera,
    "ia3": _ia3,
    "oft": _oft,
    "full": _full,
}
"""method name -> fn(anatomy, method_cfg) -> lines; one per registered method (the tests check)."""


# ------------------------------------------------------------------------- entry points


def supported(model_config) -> bool:
    """Whether derive() has formulas for this config (else use structural())."""
    try:
        _Theory(model_config, 1)
        return True
    except UserError:
        return False


def derive(model_config, method: str, method_cfg=None, num_labels: int = 2) -> Breakdown:
    """Parameter table of a ViT/DeiT config under a method. method_cfg defaults to the method's
    default config; model_config is a transformers config or anything with its attributes."""
    if isinstance(model_config, Mapping):
        model_config = _Attrs(model_config)
    return _build(_Theory(model_config, num_labels), method, method_cfg)


def structural(model: nn.Module, method: str, method_cfg=None, num_labels: int | None = None) -> Breakdown:
    """The same table counted from a built (not yet prepared) model's module shapes, for any
    architecture models.describe understands. kind="structural"; num_labels defaults to the head's."""
    return _build(_Structural(model, num_labels), method, method_cfg)


def _build(an: _Anatomy, method: str, method_cfg) -> Breakdown:
    spec = methods_mod.get(method)
    fn = FORMULAS.get(method)
    if fn is None:
        raise UserError(f"method '{method}' has no parameter formula; add one to peftlab.theory.FORMULAS")
    cfg = spec.config_cls() if method_cfg is None else method_cfg
    if not isinstance(cfg, spec.config_cls):
        raise UserError(f"method '{method}' takes a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    lines = fn(an, cfg)
    base = sum(ln.count for ln in lines if ln.part == "base")
    added = sum(ln.count for ln in lines if ln.part == "added")
    copy = sum(ln.count for ln in lines if ln.part == "copy")
    trainable = sum(ln.count for ln in lines if ln.trainable)
    total = base + added
    options = ", ".join(f"{k}={v}" for k, v in cfg.options().items() if k != "lr")
    bd = Breakdown(
        lines,
        total,
        trainable,
        base,
        added,
        total + copy,
        an.kind,
        f"{an.title}; method {method}{f' ({options})' if options else ''}",
        an.legend,
    )
    if copy:
        bd.notes.append(
            f'PEFT\'s "all params" {bd.peft_all_params:,} counts the head twice, the frozen '
            f"original and its trainable modules_to_save copy ({copy:,} each); the model's total "
            f"is base + added = {total:,}"
        )
    bd.notes.append(
        f"% trainable is on the base model with its new head: {trainable:,} / {base:,} = "
        f"{bd.trainable_pct:.4f} %"
        + (f" (PEFT prints trainable / its all params = {100 * trainable / bd.peft_all_params:.4f} %)" if copy else "")
    )
    return bd


_CHECKED = ("trainable", "total", "base", "added", "peft_all_params")


def check(breakdown: Breakdown, measured_params: dict) -> dict:
    """Compare with measure.count_params's dict. Keys are prefixed with the breakdown's kind:
    {"theory_trainable", "theory_total", "theory_match", "mismatches", "kind"} (structural_* for a
    structural breakdown); mismatches lists each figure that differs, with both numbers."""
    k = breakdown.kind
    mismatches = [
        {"what": key, k: getattr(breakdown, key), "measured": measured_params[key]}
        for key in _CHECKED
        if key in measured_params and measured_params[key] != getattr(breakdown, key)
    ]
    return {
        f"{k}_trainable": breakdown.trainable,
        f"{k}_total": breakdown.total,
        f"{k}_match": not mismatches,
        "mismatches": mismatches,
        "kind": k,
    }


class _Attrs:
    def __init__(self, d: Mapping):
        self.__dict__.update(d)


# ------------------------------------------------------------------------- configs and presets


@dataclass(frozen=True)
class Preset:
    """Architecture facts of a published model; enough to derive its counts offline."""

    model_type: str  # "vit" -> ViTForImageClassification, "deit" -> DeiTForImageClassification
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int = 224
    about: str = ""


PRESETS: dict[str, Preset] = {
    "vit-tiny-patch16-224": Preset("vit", 192, 12, 3, 768, 16, about="ViT-Ti/16 (AugReg in21k)"),
    "vit-small-patch16-224": Preset("vit", 384, 12, 6, 1536, 16, about="ViT-S/16 (AugReg in21k)"),
    "vit-base-patch16-224": Preset("vit", 768, 12, 12, 3072, 16, about="ViT-B/16, google/vit-base-patch16-224-in21k"),
    "vit-large-patch16-224": Preset(
        "vit", 1024, 24, 16, 4096, 16, about="ViT-L/16, google/vit-large-patch16-224-in21k"
    ),
    "vit-huge-patch14-224": Preset(
        "vit",
        1280,
        32,
        16,
        5120,
        14,
        about="ViT-H/14 (Google released H with 14-pixel patches only), google/vit-huge-patch14-224-in21k",
    ),
    # Facebook's plain DeiT checkpoints are ViT checkpoints: model_type "vit", one cls token.
    "deit-tiny-patch16-224": Preset("vit", 192, 12, 3, 768, 16, about="DeiT-Ti, a ViTForImageClassification"),
    "deit-small-patch16-224": Preset("vit", 384, 12, 6, 1536, 16, about="DeiT-S, a ViTForImageClassification"),
    "deit-base-patch16-224": Preset("vit", 768, 12, 12, 3072, 16, about="DeiT-B, a ViTForImageClassification"),
    # The distilled ones are model_type "deit": cls + distillation token, N+2 positions. Counted
    # as DeiTForImageClassification (one head); the hub checkpoints name ...WithTeacher (two heads).
    "deit-tiny-distilled-patch16-224": Preset("deit", 192, 12, 3, 768, 16, about="DeiT-Ti distilled"),
    "deit-small-distilled-patch16-224": Preset("deit", 384, 12, 6, 1536, 16, about="DeiT-S distilled"),
    "deit-base-distilled-patch16-224": Preset("deit", 768, 12, 12, 3072, 16, about="DeiT-B distilled"),
}


def _aliases() -> dict[str, str]:
    out = {}
    for name in PRESETS:
        short = name.removesuffix("-224")
        out[short] = name
        if name.startswith("vit-"):
            out[name + "-in21k"] = out[short + "-in21k"] = name
            if "tiny" not in name and "small" not in name:  # released by Google on the hub
                out["google/" + name] = out["google/" + name + "-in21k"] = name
        else:
            out["facebook/" + name] = name
    return out


ALIASES: dict[str, str] = _aliases()
"""Other spellings of the presets, hub ids included, so that no download happens for them."""


def preset_config(name: str):
    """A transformers ViTConfig / DeiTConfig for a preset or alias (no download)."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in PRESETS:
        near = difflib.get_close_matches(key.split("/")[-1], list(PRESETS), n=3, cutoff=0.6)
        raise UserError(
            f"unknown model preset '{name}'"
            + (f"; did you mean {', '.join(near)}?" if near else f"; presets: {', '.join(PRESETS)}")
        )
    p = PRESETS[key]
    import transformers

    cls = transformers.DeiTConfig if p.model_type == "deit" else transformers.ViTConfig
    config = cls(
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=p.num_attention_heads,
        intermediate_size=p.intermediate_size,
        patch_size=p.patch_size,
        image_size=p.image_size,
        num_channels=3,
        qkv_bias=True,
    )
    config.name_or_path = key
    return config


def load_config(spec: str):
    """A preset name or alias (hub ids of the presets included: no download), the bundled model's
    name, a config.json, a model folder, or a hub id (fetched with transformers.AutoConfig)."""
    from transformers import AutoConfig

    spec = spec.strip()
    if spec.lower() in PRESETS or spec.lower() in ALIASES:
        return preset_config(spec)
    path = Path(models.resolve_model_path(spec)).expanduser()
    if spec in (models.BUNDLED_NAME, "bundled") and not (path / "config.json").exists():
        raise UserError(f"the bundled model is not built yet ({path} has no config.json)")
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise UserError(f"'{spec}' is a folder without config.json")
        try:
            if path.is_file():
                data = json.loads(path.read_text())
                return AutoConfig.for_model(data.pop("model_type"), **data)
            return AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot read a model config from '{spec}': {e}") from e
    if spec.startswith((".", "/", "~")) or path.suffix or "/" not in spec:
        if "/" not in spec and not path.suffix:
            preset_config(spec)  # raises with close preset names
        raise UserError(
            f"'{spec}' does not exist; pass a preset ({', '.join(PRESETS)}), a config.json, a model folder or a hub id"
        )
    try:
        return AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the config of '{spec}': {first}") from e
