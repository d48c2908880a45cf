"""The frozen pretrained model's features: what its classification head reads, for every image of a split."""

from __future__ import annotations

import torch
from torch import nn

from ..models import ImageSpec, describe


@torch.no_grad()
def frozen_features(model: nn.Module, images: torch.Tensor, spec: ImageSpec, batch_size: int = 256) -> torch.Tensor:
    """float32 [N, d]: the input of the model's classification head (e.g. a ViT's final-norm [CLS] token),
    for uint8 images [N, C, H, W], in eval mode. Found with a hook on the head, so any classifier works."""
    head = model.get_submodule(describe(model).heads[0])
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().flatten(1).float().cpu()))
    was = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(pixel_values=spec.normalize(images[i : i + batch_size]))
    finally:
        hook.remove()
        model.train(was)
    d = seen[0].shape[1] if seen else 0
    return torch.cat(seen) if seen else torch.empty(0, d)
