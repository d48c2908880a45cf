"""Parameter formulas of more families, from their configs, per stage: Swin (v1), ConvNeXt (and V2), ResNet,
DINOv2 and BEiT (and Data2VecVision). Symbols carry the stage's number: d2 is stage 2's width, L2 its
depth. Where a model's modules come from (paths, roles) is its Arch, read from the model built on the meta
device (no weights); the counts come from the formulas alone."""

from __future__ import annotations

from dataclasses import dataclass

from .. import models
from ..errors import Unsupported, UserError
from .anatomy import Anatomy, Shape, pair
from .lines import ZERO, Piece, formula


@dataclass(frozen=True)
class RoleSpec:
    """The modules of one role in one stage that share a shape, in symbols."""

    stage: int
    role: str
    n_sym: str
    din: str  # fan-in (a conv's in_channels·k / groups)
    dout: str
    bias: str  # the bias width per module ("0": none)
    cin: str = ""  # input channels when they differ from the fan-in (a conv)
    k: int = 1
    kind: str = "linear"


def _meta_arch(config) -> models.Arch:
    import torch
    from transformers import AutoModelForImageClassification

    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    return models.describe(model)


class FamilyTheory(Anatomy):
    """Formulas of one family from its config. Subclasses set env, title, legend and fill the tables below."""

    kind = "theory"
    classes: tuple[str, ...] = ()  # the transformers classes the formulas describe

    def __init__(self, config, num_labels: int):
        self.config = config
        self.arch = _meta_arch(config)
        self.env: dict[str, int] = {"C": int(num_labels), "c": int(getattr(config, "num_channels", 3))}
        self.emb: list[tuple[str, str]] = []
        self.between_exprs: dict[tuple[int, str], list[tuple[str, str]]] = {}
        self.neck_exprs: list[tuple[str, str]] = []
        self.head_expr = "d·C + C"
        self.role_specs: list[RoleSpec] = []
        self.bias_expr = "0"
        self.norm_expr = "0"
        self.patch_expr = "0"

    def finish(self) -> None:
        """What method formulas name besides shapes: the residual width at the head and the number of blocks."""
        self.env.setdefault("d", self.arch.width)
        self.env.setdefault("L", self.arch.num_blocks)

    def f(self, expr: str, **extra) -> Piece:
        return formula(expr, {**self.env, **extra})

    def block(self, stage: int, first: bool) -> str:
        raise NotImplementedError

    def embeddings(self):
        return [(name, self.f(e)) for name, e in self.emb]

    def blocks(self, lo, hi, mult, n):
        s = self.arch.stages[lo]
        first, rest = self.block(s, True), self.block(s, False)
        if first == rest or lo != self.arch.stage_blocks(s)[0]:
            return self.f(f"{mult}·({rest})", n=n)
        more = f"({mult}−1)" if not mult.isdigit() else str(int(mult) - 1)
        return self.f(f"({first})" + (f" + {more}·({rest})" if more != "0" else ""), n=n)

    def between(self, stage, when):
        return [(name, self.f(e)) for name, e in self.between_exprs.get((stage, when), [])]

    def neck(self):
        return [(name, self.f(e)) for name, e in self.neck_exprs]

    def final_norm(self):
        return self.f(self.neck_exprs[0][1]) if self.neck_exprs else None

    def head(self):
        return self.f(self.head_expr)

    def biases_all(self):
        return self.f(self.bias_expr)

    def norms(self):
        return self.f(self.norm_expr)

    def patch_channels(self):
        return self.f(self.patch_expr) if self.patch_expr != "0" else ZERO

    def _specs(self, roles: list[str]) -> list[RoleSpec]:
        for r in roles:
            if r not in self.arch.roles:
                raise Unsupported(f"this model has no '{r}' module in its blocks; it has: {self.arch.roles_text()}")
        return [sp for sp in self.role_specs if sp.role in roles]

    def biases_of(self, roles):
        terms = [f"{sp.n_sym}·{sp.bias}" for sp in self._specs(roles) if sp.bias != "0"]
        return self.f(" + ".join(terms)) if terms else ZERO

    def shapes(self, roles):
        groups: dict[tuple, list[RoleSpec]] = {}
        for sp in sorted(self._specs(roles), key=lambda sp: (sp.stage, roles.index(sp.role))):
            groups.setdefault((sp.stage, sp.din, sp.dout, sp.cin, sp.k, sp.kind), []).append(sp)
        staged = len(set(self.arch.stages)) > 1
        out = []
        for (stage, din, dout, cin, k, kind), specs in groups.items():
            names = list(dict.fromkeys(sp.role for sp in specs))
            n_sym = " + ".join(sp.n_sym for sp in specs) if len(specs) > 1 else specs[0].n_sym
            n_sym = f"({n_sym})" if len(specs) > 1 else n_sym
            label = ",".join(names) + (f" (stage {stage + 1})" if staged else "")
            ev = lambda e: formula(e, self.env).count  # noqa: E731
            if ev(n_sym) == 0:
                continue
            out.append(
                Shape(label, n_sym, ev(n_sym), din, dout, ev(din), ev(dout), k, cin, ev(cin) if cin else 0, kind)
            )
        return out


# ------------------------------------------------------------------------- Swin
class SwinTheory(FamilyTheory):
    classes = ("SwinForImageClassification",)

    def __init__(self, config, num_labels):
        super().__init__(config, num_labels)
        S = len(config.depths)
        w = int(config.window_size)
        p = pair(config.patch_size)
        self.b = 1 if config.qkv_bias else 0
        self.env |= {"p": p[0], "w": w}
        for s in range(S):
            d = int(config.embed_dim * 2**s)
            self.env |= {f"d{s + 1}": d, f"m{s + 1}": int(config.mlp_ratio * d)}
            self.env |= {f"h{s + 1}": int(config.num_heads[s]), f"L{s + 1}": int(config.depths[s])}
        if p[0] != p[1]:
            raise UserError("Swin formulas assume square patches")
        self.emb = [("patch embedding (conv) and its norm", "c·p²·d1 + d1 + 2·d1")]
        if getattr(config, "use_absolute_embeddings", False):
            ih, iw = pair(config.image_size)
            self.env["N"] = (ih // p[0]) * (iw // p[1])
            self.emb.append(("position embeddings", "(N+1)·d1"))
        for s in range(S - 1):
            self.between_exprs[(s, "after")] = [("patch merging (LN 4d, Linear 4d→2d)", f"8·d{s + 1}² + 8·d{s + 1}")]
        last = f"d{S}"
        self.neck_exprs = [("final layernorm", f"2·{last}")]
        self.head_expr = f"{last}·C + C"
        qkv_b = "d{}" if self.b else "0"
        for s in range(1, S + 1):
            d, m, L = f"d{s}", f"m{s}", f"L{s}"
            for role, din, dout, bias in (
                ("query", d, d, qkv_b.format(s)),
                ("key", d, d, qkv_b.format(s)),
                ("value", d, d, qkv_b.format(s)),
                ("output", d, d, d),
                ("fc1", d, m, m),
                ("fc2", m, d, d),
            ):
                self.role_specs.append(RoleSpec(s - 1, role, L, din, dout, bias))
        per_stage = [f"L{s}·({3 * self.b + 4}·d{s} + m{s})" for s in range(1, S + 1)]
        merges = [f"4·d{s}" for s in range(1, S)]
        self.bias_expr = " + ".join(["2·d1"] + per_stage + merges + [last])
        self.norm_expr = " + ".join(
            ["2·d1"] + [f"L{s}·4·d{s}" for s in range(1, S + 1)] + [f"8·d{s}" for s in range(1, S)]
        )
        self.norm_expr += f" + 2·{last}"
        self.patch_expr = "d1"
        self.title = f"SwinForImageClassification, {num_labels} classes, depths {list(config.depths)}"
        self.legend = (
            f"d_s = {config.embed_dim}·2^(s−1) stage widths, m_s MLP, L_s depths, h_s heads, w={w} window, "
            f"p={p[0]} patch, c={self.env['c']} channels, C={num_labels} classes"
        )

    def block(self, stage, first):
        s = stage + 1
        return f"4·d{s}² + 2·d{s}·m{s} + m{s} + {6 + 3 * self.b}·d{s} + (2·w−1)²·h{s}"


# ------------------------------------------------------------------------- ConvNeXt (V1, V2)
class ConvNextTheory(FamilyTheory):
    classes = ("ConvNextForImageClassification", "ConvNextV2ForImageClassification")

    def __init__(self, config, num_labels):
        super().__init__(config, num_labels)
        S = len(config.depths)
        self.v2 = config.model_type == "convnextv2"
        self.ls = not self.v2 and (config.layer_scale_init_value or 0) > 0
        self.env["p"] = int(config.patch_size)
        for s in range(S):
            self.env |= {f"d{s + 1}": int(config.hidden_sizes[s]), f"L{s + 1}": int(config.depths[s])}
        self.emb = [("patch embedding (conv p×p) and its norm", "c·p²·d1 + d1 + 2·d1")]
        for s in range(1, S):
            self.between_exprs[(s, "before")] = [
                ("downsampling (LN, conv 2×2)", f"2·d{s} + 4·d{s}·d{s + 1} + d{s + 1}")
            ]
        last = f"d{S}"
        self.neck_exprs = [("final layernorm", f"2·{last}")]
        self.head_expr = f"{last}·C + C"
        for s in range(1, S + 1):
            d, L = f"d{s}", f"L{s}"
            self.role_specs += [
                RoleSpec(s - 1, "fc1", L, d, f"4·{d}", f"4·{d}"),
                RoleSpec(s - 1, "fc2", L, f"4·{d}", d, d),
                RoleSpec(s - 1, "depthwise", L, "49", d, d, cin=d, k=49, kind="conv"),
            ]
        grn = 4 if self.v2 else 0  # ConvNeXtV2's GRN bias (4d) is a parameter named bias
        self.bias_expr = " + ".join(
            ["2·d1"]
            + [f"L{s}·{7 + grn}·d{s}" for s in range(1, S + 1)]
            + [f"d{s} + d{s + 1}" for s in range(1, S)]
            + [last]
        )
        self.norm_expr = " + ".join(
            ["2·d1"] + [f"L{s}·2·d{s}" for s in range(1, S + 1)] + [f"2·d{s}" for s in range(1, S)] + [f"2·{last}"]
        )
        self.patch_expr = " + ".join(["d1"] + [f"d{s}" for s in range(2, S + 1)])
        name = "ConvNextV2" if self.v2 else "ConvNext"
        self.title = f"{name}ForImageClassification, {num_labels} classes, depths {list(config.depths)}"
        self.legend = (
            f"d_s stage widths {list(config.hidden_sizes)}, L_s depths, p={self.env['p']} patch, "
            f"c={self.env['c']} channels, C={num_labels} classes; a block is a 7×7 depthwise conv, LayerNorm, "
            "Linear d→4d, Linear 4d→d" + (", GRN" if self.v2 else ", layer scale" if self.ls else "")
        )

    def block(self, stage, first):
        s = stage + 1
        extra = 8 if self.v2 else 1 if self.ls else 0  # GRN 2·4d; layer scale d
        return f"8·d{s}² + {57 + extra}·d{s}"


# ------------------------------------------------------------------------- ResNet
class ResNetTheory(FamilyTheory):
    classes = ("ResNetForImageClassification",)

    def __init__(self, config, num_labels):
        super().__init__(config, num_labels)
        S = len(config.depths)
        self.bottleneck = config.layer_type == "bottleneck"
        self.env["E"] = int(config.embedding_size)
        self.shortcut = []
        for s in range(S):
            h = int(config.hidden_sizes[s])
            self.env |= {f"h{s + 1}": h, f"L{s + 1}": int(config.depths[s]), f"w{s + 1}": h // 4}
            i = int(config.embedding_size) if s == 0 else int(config.hidden_sizes[s - 1])
            stride = 2 if s > 0 or config.downsample_in_first_stage else 1
            self.shortcut.append(i != h or stride != 1)
        self.emb = [("stem (conv 7×7, no bias) and its BatchNorm", "49·c·E + 2·E")]
        self.head_expr = f"h{S}·C + C"
        for s in range(1, S + 1):
            i, h, w, L = ("E" if s == 1 else f"h{s - 1}"), f"h{s}", f"w{s}", f"L{s}"
            if self.bottleneck:
                specs = [
                    ("pointwise", "1", i, w),
                    ("pointwise", f"({L}−1)", h, w),
                    ("spatial", L, f"9·{w}", w),
                    ("pointwise", L, w, h),
                ]
            else:
                specs = [("spatial", "1", f"9·{i}", h), ("spatial", f"(2·{L}−1)", f"9·{h}", h)]
            if self.shortcut[s - 1]:
                specs.append(("pointwise", "1", i, h))
            for role, n, din, dout in specs:
                cin = din.removeprefix("9·")
                self.role_specs.append(
                    RoleSpec(s - 1, role, n, din, dout, "0", cin=cin, k=9 if din.startswith("9·") else 1, kind="conv")
                )
        bn = []  # BatchNorm β per block: one per conv
        for s in range(1, S + 1):
            h, w, L = f"h{s}", f"w{s}", f"L{s}"
            bn.append(f"{L}·(2·{w} + {h})" if self.bottleneck else f"{L}·2·{h}")
            if self.shortcut[s - 1]:
                bn.append(h)
        self.bias_expr = " + ".join(["E"] + bn)
        self.patch_expr = "E"
        kind = "bottleneck" if self.bottleneck else "basic"
        self.title = f"ResNetForImageClassification ({kind}), {num_labels} classes, depths {list(config.depths)}"
        self.legend = (
            f"E={self.env['E']} stem width, h_s stage widths {list(config.hidden_sizes)}, w_s = h_s/4 bottleneck "
            f"widths, L_s depths, c={self.env['c']} channels, C={num_labels} classes; every conv is followed "
            "by a BatchNorm (2 parameters per channel); the first block of a stage adds a 1×1 shortcut conv "
            "where its width or stride changes"
        )

    def block(self, stage, first):
        s = stage + 1
        i = "E" if s == 1 else f"h{s - 1}"
        h, w = f"h{s}", f"w{s}"
        sc = f" + {i}·{h} + 2·{h}" if first and self.shortcut[stage] else ""
        if self.bottleneck:
            return f"{i if first else h}·{w} + 9·{w}² + {w}·{h} + 4·{w} + 2·{h}" + sc
        return f"9·{i if first else h}·{h} + 9·{h}² + 4·{h}" + sc


# ------------------------------------------------------------------------- DINOv2, BEiT: one stack
class _Stack(FamilyTheory):
    """A ViT-like stack: d hidden, m MLP, L blocks, patch p, N patches."""

    def __init__(self, config, num_labels):
        super().__init__(config, num_labels)
        d, L = int(config.hidden_size), int(config.num_hidden_layers)
        ih, iw = pair(config.image_size)
        ph, pw = pair(config.patch_size)
        self.env |= {"d": d, "L": L, "p": ph, "N": (ih // ph) * (iw // pw), "h": int(config.num_attention_heads)}
        self.env |= {"Wh": ih // ph, "Ww": iw // pw}
        if ph != pw:
            raise UserError("these formulas assume square patches")

    def _roles(self, q: str, k: str, v: str):
        for role, din, dout, bias in (
            ("query", "d", "d", q),
            ("key", "d", "d", k),
            ("value", "d", "d", v),
            ("output", "d", "d", "d"),
            ("fc1", "d", "m", "m"),
            ("fc2", "m", "d", "d"),
        ):
            self.role_specs.append(RoleSpec(0, role, "L", din, dout, bias))


class Dinov2Theory(_Stack):
    classes = ("Dinov2ForImageClassification",)

    def __init__(self, config, num_labels):
        if getattr(config, "use_swiglu_ffn", False):
            raise UserError("no DINOv2 formulas for the SwiGLU MLP (use_swiglu_ffn); counted structurally")
        super().__init__(config, num_labels)
        self.b = 1 if getattr(config, "qkv_bias", True) else 0
        self.env["m"] = int(config.hidden_size * config.mlp_ratio)
        self.emb = [
            ("patch embedding (conv)", "c·p²·d + d"),
            ("cls token and mask token (unused in classification)", "2·d"),
            ("position embeddings", "(N+1)·d"),
        ]
        self.neck_exprs = [("final layernorm", "2·d")]
        self.head_expr = "2·d·C + C"  # the head reads [CLS] concatenated with the mean of the patch tokens
        qkv = "d" if self.b else "0"
        self._roles(qkv, qkv, qkv)
        self.bias_expr = f"d + L·({3 * self.b + 4}·d + m) + d"
        self.norm_expr = "L·4·d + 2·d"
        self.patch_expr = "d"
        self.title = f"Dinov2ForImageClassification, {num_labels} classes"
        self.legend = (
            f"d={self.env['d']} hidden, m={self.env['m']} MLP, L={self.env['L']} blocks, N={self.env['N']} patches, "
            f"p={self.env['p']} patch, c={self.env['c']} channels, C={num_labels} classes; per block two layer "
            "scales (2·d); the head is Linear(2·d, C)"
        )

    def block(self, stage, first):
        return f"4·d² + 2·d·m + m + {8 + 3 * self.b}·d"


class BeitTheory(_Stack):
    classes = ("BeitForImageClassification", "Data2VecVisionForImageClassification")

    def __init__(self, config, num_labels):
        super().__init__(config, num_labels)
        c = config
        self.env["m"] = int(c.intermediate_size)
        self.env["T"] = (2 * self.env["Wh"] - 1) * (2 * self.env["Ww"] - 1) + 3  # relative distances (+3 for [CLS])
        self.emb = [("patch embedding (conv)", "c·p²·d + d"), ("cls token", "d")]
        if getattr(c, "use_mask_token", False):
            self.emb.append(("mask token", "d"))
        if getattr(c, "use_absolute_position_embeddings", False):
            self.emb.append(("position embeddings", "(N+1)·d"))
        if getattr(c, "use_shared_relative_position_bias", False):
            self.emb.append(("shared relative position bias table", "T·h"))
        self.rel = bool(getattr(c, "use_relative_position_bias", False))
        self.ls = (getattr(c, "layer_scale_init_value", 0) or 0) > 0
        pooled = "mean of the patch tokens" if getattr(c, "use_mean_pooling", True) else "[CLS]"
        self.neck_exprs = [(f"final layernorm (of the {pooled})", "2·d")]
        self._roles("d", "0", "d")  # the key projection has no bias
        self.bias_expr = "d + L·(6·d + m) + d"
        self.norm_expr = "L·4·d + 2·d"
        self.patch_expr = "d"
        self.title = f"{self.classes[c.model_type != 'beit']}, {num_labels} classes"
        self.legend = (
            f"d={self.env['d']} hidden, m={self.env['m']} MLP, L={self.env['L']} blocks, N={self.env['N']} patches, "
            f"p={self.env['p']} patch, c={self.env['c']} channels, C={num_labels} classes, h={self.env['h']} heads"
            + (f", T={self.env['T']} relative distances per block" if self.rel else "")
            + "; the key projection has no bias"
        )

    def block(self, stage, first):
        extra = " + T·h" if self.rel else ""
        return f"4·d² + 2·d·m + m + {8 + 2 * self.ls}·d" + extra


def family_theory(config, num_labels: int) -> FamilyTheory:
    an = THEORIES[config.model_type](config, num_labels)
    an.finish()
    return an


THEORIES: dict[str, type[FamilyTheory]] = {
    "swin": SwinTheory,
    "convnext": ConvNextTheory,
    "convnextv2": ConvNextTheory,
    "resnet": ResNetTheory,
    "dinov2": Dinov2Theory,
    "beit": BeitTheory,
    "data2vec-vision": BeitTheory,
}
