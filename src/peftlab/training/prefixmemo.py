"""Frozen-prefix features kept for the images they were computed from, so that the trials of a search and
the final run of the same seed (each a fresh model, each a fit of its own) run the prefix once, not once
per fit.

An entry lives exactly as long as the training images tensor it was computed from (a weakref finalizer
drops it): a Worker that moves to the next seed, or a task that is let go, frees its features with its
images. An entry is used only when everything the features depend on is the same: the same image tensors
(identity, not equality), the same prefix (module types, trimmed forwards, and every parameter and buffer
equal, compared exactly against a copy kept with the entry), the same image spec, eval batch, precision
and device. Anything else computes afresh. The entries together stay within a byte budget (budget()):
kept features never take the memory a later fit needs.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..data.storage import memory_budget

ROLES = ("train", "val", "test")
PER_IMAGES = 4  # entries kept per training tensor (e.g. head's [CLS] features and last's token features)


def budget(device: torch.device) -> int:
    """Bytes the kept features (and weight copies) may take: an eighth of the GPU's memory, or of the RAM;
    past it the oldest entries go, so later fits (a LoRA or full run) keep their memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 8
    return memory_budget() // 2  # a quarter of the RAM, halved


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _modules(cache) -> list[nn.Module]:
    return [cache.embeddings, *cache.prefix]


def _structure(cache) -> tuple:
    """What, besides the weights, decides the prefix's function: each module's type, and whether its forward
    was replaced on the instance (the [CLS]-row last block)."""
    return tuple((type(m).__name__, "forward" in m.__dict__) for top in _modules(cache) for m in top.modules())


def _state(cache) -> list[torch.Tensor]:
    return [t for m in _modules(cache) for t in (*m.parameters(), *m.buffers())]


class PrefixMemo:
    def __init__(self):
        # id(train images) -> [(refs, key, structure, weights, feats, bytes, order)], oldest first
        self.entries: dict[int, list[tuple]] = {}
        self.order = 0

    def _images(self, task) -> tuple:
        return tuple(getattr(task, r).images for r in ROLES)

    def get(self, task, cache, key: tuple) -> dict | None:
        images = self._images(task)
        structure = None
        for refs, k, struct, weights, feats, _, _ in self.entries.get(id(images[0]), []):
            if k != key or any(r() is not x for r, x in zip(refs, images)):
                continue
            structure = _structure(cache) if structure is None else structure
            state = _state(cache)
            same = struct == structure and len(state) == len(weights)
            if same and all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(state, weights)
            ):
                return feats
        return None

    def put(self, task, cache, key: tuple, feats: dict) -> None:
        images = self._images(task)
        try:
            refs = tuple(weakref.ref(x) for x in images)
        except TypeError:  # not weak-referenceable: nothing would free the entry, so keep none
            return
        weights = [t.detach().clone() for t in _state(cache)]
        size = _bytes([*weights, *(f for f in feats.values() if f is not None)])
        limit = budget(weights[0].device if weights else torch.device("cpu"))
        while self.entries and self.bytes() + size > limit:  # the oldest entries go first
            oldest = min(self.entries, key=lambda s: self.entries[s][0][-1])
            self.entries[oldest].pop(0)
            if not self.entries[oldest]:
                del self.entries[oldest]
        if size > limit:
            return
        slot = id(images[0])
        if slot not in self.entries:
            weakref.finalize(images[0], self.entries.pop, slot, None)
        self.order += 1
        kept = self.entries.setdefault(slot, [])
        kept.append((refs, key, _structure(cache), weights, feats, size, self.order))
        del kept[:-PER_IMAGES]

    def bytes(self) -> int:
        return sum(e[-2] for kept in self.entries.values() for e in kept)

    def clear(self) -> None:
        self.entries.clear()


prefix_memo = PrefixMemo()
