"""Frozen-prefix caching: when every trainable parameter sits after block k (head, last N blocks,
first-N-frozen, ...), run the embeddings and blocks 0..k-1 once per image and train the rest on the
cached activations. Decided from requires_grad and the method's capabilities (a method that adds tokens
gets no cache: batches.data_path), so any such method gets it without a branch on its name.

It is exact only when the prefix is deterministic: no augmentation and no active dropout in it. The
suffix forward (blocks k.., final norm, head on the [CLS] token) is checked against the model's own
forward on a few images before it is used; an architecture where that differs falls back to the
ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models import Arch, describe
from .modes import evaluating


def _out(x):
    return x[0] if isinstance(x, tuple) else x


def _trainable(m: nn.Module) -> bool:
    return any(p.requires_grad for p in m.parameters())


def _cls_stack(model: nn.Module) -> Arch | None:
    """The model's Arch when its blocks are one stack whose output the head reads at [CLS] alone (a ViT):
    the shape the fast paths are written for; None for any other (stages, mean-pooling heads, two heads)."""
    try:
        arch = describe(model)
    except Exception:  # noqa: BLE001 - not a block-structured classifier: no fast path
        return None
    return arch if arch.flat and arch.tokens == "cls" and len(arch.heads) == 1 else None


def _embeddings(model: nn.Module, blocks_path: str) -> nn.Module | None:
    """The module that turns pixels into tokens: the one named '*embeddings' outside the blocks."""
    for name, m in model.named_modules():
        if name.endswith("embeddings") and not name.startswith(blocks_path) and isinstance(m, nn.Module):
            return m
    return None


class PrefixCache:
    def __init__(self, model: nn.Module, k: int):
        arch = _cls_stack(model)
        self.k, self.model = k, model
        self.embeddings = _embeddings(model, arch.flat)
        blocks = model.get_submodule(arch.flat)
        self.prefix, self.suffix = list(blocks)[:k], list(blocks)[k:]
        self.norm = model.get_submodule(arch.final_norm) if arch.final_norm else nn.Identity()
        self.head = model.get_submodule(arch.heads[0])
        # all blocks frozen: the head reads only the [CLS] token and the norm works per token, so only
        # that token is kept (d numbers per image instead of T·d)
        self.cls_only = not self.suffix

    @staticmethod
    def frozen_blocks(model: nn.Module) -> int:
        """How many leading blocks (after frozen embeddings) hold no trainable parameter; 0 if none."""
        arch = _cls_stack(model)
        if arch is None:
            return 0
        emb = _embeddings(model, arch.flat)
        if emb is None or _trainable(emb):
            return 0
        k = 0
        for block in model.get_submodule(arch.flat):
            if _trainable(block):
                break
            k += 1
        return k

    @staticmethod
    def deterministic(model: nn.Module, k: int) -> bool:
        arch = _cls_stack(model)
        mods = [_embeddings(model, arch.flat)] + list(model.get_submodule(arch.flat))[:k]
        return not any(isinstance(m, nn.Dropout) and m.p > 0 for mod in mods for m in mod.modules())

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = _out(self.embeddings(pixel_values))
        for b in self.prefix:
            h = _out(b(h))
        return h[:, :1] if self.cls_only else h

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        h = features
        for b in self.suffix:
            h = _out(b(h))
        return self.head(self.norm(h)[:, 0])

    @torch.no_grad()
    def matches_model(self, pixel_values: torch.Tensor, low_precision: bool = False) -> bool:
        """Whether features + logits give the model's own logits (see same_logits). Call it under the
        autocast the training uses: a wrapped model's forward may autocast by itself."""
        with evaluating(self.model):
            try:
                ours = self.logits(self.features(pixel_values)).float()
                theirs = self.model(pixel_values=pixel_values).logits.float()
                return same_logits(ours, theirs, low_precision)
            except Exception:  # noqa: BLE001 - an architecture the suffix forward does not fit
                return False


def same_logits(ours: torch.Tensor, theirs: torch.Tensor, low_precision: bool) -> bool:
    """Elementwise within 1e-4 + 1e-3·|logit| in fp32; under bf16/fp16 (rounding 2^-8) within 1% of the norm."""
    if ours.shape != theirs.shape:
        return False
    if low_precision:
        return bool((ours.float() - theirs.float()).norm() <= 1e-2 * theirs.float().norm())
    return torch.allclose(ours.float(), theirs.float(), atol=1e-4, rtol=1e-3)


def trim_last_block(model: nn.Module, check: Callable[[], bool]):
    """Make the last block compute only the [CLS] token's row (its other rows never reach the head),
    for any method and either data path: the block's forward is replaced on the instance and returns
    [B, 1, d], which the final norm, the head and a PrefixCache take as before. check() (logits against
    the whole forward, run by the caller) decides; returns the function that puts the block back, or
    None when not trimmed."""
    arch = _cls_stack(model)
    if arch is None:
        return None
    block = model.get_submodule(arch.blocks[-1])
    row = _cls_row_forward(block, arch)
    if row is None:
        return None
    block.forward = lambda hidden_states, *args, **kwargs: row(hidden_states)

    def restore() -> None:
        block.__dict__.pop("forward", None)

    if not check():
        restore()
        return None
    return restore


def _cls_row_forward(block: nn.Module, arch: Arch):
    """The output of a pre-norm ViT block (layernorm_before, attention with q/k/v/o projections and its
    dropout, layernorm_after, mlp, dropout: transformers' ViT/DeiT layers) at the [CLS] token only: keys
    and values for every token, the query, attention row, output projection and MLP for one token
    instead of T (~5x fewer FLOPs for the block at T=50). Dropout acts on that row as on every row, so
    training draws from the same distribution; with no dropout active it is the same function. None for
    any other block shape. The caller checks it against the model's own forward before using it."""
    att = getattr(block, "attention", None)
    heads, dim = getattr(att, "num_attention_heads", None), getattr(att, "head_dim", None)
    i = arch.num_blocks - 1
    try:  # the last block's role modules, as the Arch names them
        roles = {
            r: block.get_submodule(p[0].path.removeprefix(arch.blocks[i] + "."))
            for r in arch.roles
            if len(p := arch.in_block(i, r)) == 1
        }
    except AttributeError:  # not that block
        return None
    if (
        att is None
        or heads is None
        or dim is None
        or not all(hasattr(block, n) for n in ("layernorm_before", "layernorm_after", "mlp"))
        or not all(r in roles for r in ("query", "key", "value", "output"))
    ):
        return None
    q, k, v, o = (roles[r] for r in ("query", "key", "value", "output"))
    scale = getattr(att, "scaling", None)
    drop = getattr(block, "dropout", None) or nn.Identity()

    def forward(h: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, 1, d]
        b, t, _ = h.shape
        a = block.layernorm_before(h)
        heads_of = lambda x, n: x.view(b, n, heads, dim).transpose(1, 2)  # noqa: E731
        row = torch.nn.functional.scaled_dot_product_attention(
            heads_of(q(a[:, :1]), 1),
            heads_of(k(a), t),
            heads_of(v(a), t),
            scale=scale,
            dropout_p=float(getattr(att, "attention_dropout", 0.0) or 0.0) if block.training else 0.0,
        )
        x = h[:, :1] + drop(o(row.transpose(1, 2).reshape(b, 1, heads * dim)))
        return x + drop(block.mlp(block.layernorm_after(x)))

    return forward
