"""The parameter table of any classifier, counted from the built model's module shapes (numbers only): what a
method should adapt, from the model's structure. Its blocks are found by their class (the family's block
classes), not by the paths the methods are applied through, so a block the description misses is a
mismatch in the check, not a ✓."""

from __future__ import annotations

from torch import nn

from .. import models
from ..errors import Unsupported, UserError
from .anatomy import Anatomy, Shape
from .lines import ZERO, Piece


def _count(model: nn.Module, path: str) -> int:
    try:
        return sum(p.numel() for p in model.get_submodule(path).parameters())
    except AttributeError:
        return model.get_parameter(path).numel()


def _numbers(counts: list[int]) -> str:
    return f"{len(counts)}·{counts[0]}" if len(set(counts)) == 1 and len(counts) > 1 else "+".join(map(str, counts))


class Structural(Anatomy):
    kind = "structural"

    def __init__(self, model: nn.Module, num_labels: int | None):
        if hasattr(model, "peft_config"):
            raise UserError("structural() counts a plain model; pass it before a method is applied")
        self.arch = arch = models.describe(model)
        typed = self._typed_blocks(model, arch)
        self.notes = []
        if typed != list(arch.blocks):
            self.notes.append(
                f"the blocks found by path ({arch.num_blocks}) are not the model's blocks of their classes "
                f"({len(typed)}): counted are the latter"
            )
        params = dict(model.named_parameters())  # unique tensors, as measure.count_params
        self.blocks_n = [_count(model, b) for b in typed]
        if len(typed) != arch.num_blocks:  # keep one count per block the methods see
            self.blocks_n = (self.blocks_n + [0] * arch.num_blocks)[: arch.num_blocks]
            self.blocks_n[-1] += sum(_count(model, b) for b in typed[arch.num_blocks :])
        self.between_n = {(s, w): [] for s, w, _ in arch.between}
        for s, w, path in arch.between:
            self.between_n[(s, w)].append((path, _count(model, path)))
        self.neck_n = [(path, _count(model, path)) for path in arch.neck]
        heads = [model.get_submodule(h) for h in arch.heads]
        linears = [model.get_submodule(h) for h in arch.head_linears]
        self.d = linears[0].in_features
        self.C = int(num_labels or linears[0].out_features)
        old_heads = sum(p.numel() for h in heads for p in h.parameters())
        self.head_rest = old_heads - sum(p.numel() for lin in linears for p in lin.parameters())  # LeViT's BN
        self.head_in = [lin.in_features for lin in linears]
        inside = sum(self.blocks_n) + sum(c for v in self.between_n.values() for _, c in v)
        self.outside = sum(p.numel() for p in params.values()) - inside - sum(c for _, c in self.neck_n) - old_heads
        under = tuple(h + "." for h in arch.heads)
        self.all_biases = sum(
            p.numel() for n, p in params.items() if (n == "bias" or n.endswith(".bias")) and not n.startswith(under)
        )
        self.norm_params = [
            p.numel()
            for n, m in model.named_modules()
            if isinstance(m, nn.LayerNorm) and not (n in arch.heads or n.startswith(under))
            for p in m.parameters(recurse=False)
        ]
        skip = tuple(b + "." for b in arch.blocks) + under
        self.conv_channels = [
            m.out_channels
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and not (n + ".").startswith(skip)
        ]
        # what method formulas name besides shapes: the residual width at the head, and the blocks
        self.env = {"d": arch.width, "L": arch.num_blocks}
        self.title = f"{type(model).__name__}, {self.C} classes, counted from module shapes"
        stages = len(set(arch.stages))
        self.legend = (
            f"{arch.family}: {arch.num_blocks} blocks"
            + (f" in {stages} stages" if stages > 1 else "")
            + f", head {'+'.join(arch.heads)}"
        )

    @staticmethod
    def _typed_blocks(model: nn.Module, arch: models.Arch) -> list[str]:
        """The model's blocks by class: every module of its family's block classes (the generic search's one
        class), in module order."""
        fam = models.FAMILIES.get(arch.family)
        if fam is None:
            return list(arch.blocks)
        return [n for n, m in model.named_modules() if type(m).__name__ in fam.block_types]

    def embeddings(self):
        return [("outside the blocks (embeddings etc.)", Piece("Σ shapes", str(self.outside), self.outside))]

    def blocks(self, lo, hi, mult, n):
        counts = self.blocks_n[lo:hi]
        return Piece(f"{mult}·block", _numbers(counts), sum(counts))

    def between(self, stage, when):
        out = []
        for path, c in self.between_n.get((stage, when), []):
            out.append((path.rsplit(".", 1)[-1].replace("_", " "), Piece("Σ shapes", str(c), c)))
        return out

    def neck(self):
        return [(f"{path} (after the last block)", Piece("Σ shapes", str(c), c)) for path, c in self.neck_n]

    def final_norm(self):
        return next((Piece("Σ shapes", str(c), c) for p, c in self.neck_n if p == self.arch.final_norm), None)

    def head(self):
        C = self.C
        if len(self.head_in) == 1 and not self.head_rest:
            return Piece("d·C + C", f"{self.d}·{C} + {C}", self.d * C + C)
        count = self.head_rest + sum(d * C + C for d in self.head_in)
        numbers = " + ".join([str(self.head_rest)] * bool(self.head_rest) + [f"{d}·{C} + {C}" for d in self.head_in])
        return Piece("Σ heads: norm + d·C + C", numbers, count)

    def biases_all(self):
        return Piece("Σ biases", str(self.all_biases), self.all_biases)

    def biases_of(self, roles):
        counts = [p.d_out for p in self.arch.parts(roles) if p.bias]
        return Piece("Σ biases", "+".join(map(str, counts)) or "0", sum(counts)) if counts else ZERO

    def shapes(self, roles):
        staged = len(set(self.arch.stages)) > 1
        groups: dict[tuple, tuple[list[str], list]] = {}
        for role in roles:
            if role not in self.arch.roles:
                raise Unsupported(f"this model has no '{role}' module in its blocks; it has: {self.arch.roles_text()}")
            for p in self.arch.roles[role]:
                stage = self.arch.stages[p.block] if staged else None
                key = (stage, p.d_in * p.k // p.groups, p.d_out, p.d_in, p.k, p.kind)
                group = groups.setdefault(key, ([], []))
                if role not in group[0]:
                    group[0].append(role)
                group[1].append(p)
        out = []
        for (stage, fan_in, dout, cin, k, kind), (names, parts) in groups.items():
            label = ",".join(names) + (f" (stage {stage + 1})" if stage is not None else "")
            out.append(
                Shape(label, str(len(parts)), len(parts), str(fan_in), str(dout), fan_in, dout, k, str(cin), cin, kind)
            )
        return out

    def patch_channels(self):
        c = self.conv_channels
        return Piece("Σ Conv2d channels", "+".join(map(str, c)) or "0", sum(c)) if c else ZERO

    def norms(self):
        c = self.norm_params
        numbers = f"{len(c)}·{c[0]}" if len(set(c)) == 1 and len(c) > 1 else "+".join(map(str, c)) or "0"
        return Piece("Σ LayerNorm shapes", numbers, sum(c))
