"""Train and eval modes, BatchNorm honoured: a BatchNorm whose parameters no method trains stays in eval mode
while the rest of the model trains, so its running statistics stay the pretrained ones (in train mode every
forward would replace them with the training batches', head-only runs included); one that trains (full
fine-tuning, a trained block, BitFit's biases) updates them, and they are saved with the run."""

from __future__ import annotations

import contextlib

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def trained_norm(m: nn.Module) -> bool:
    """A BatchNorm whose statistics training changes: one with a trainable weight or bias."""
    return isinstance(m, _BatchNorm) and any(p.requires_grad for p in m.parameters(recurse=False))


def train_mode(model: nn.Module) -> nn.Module:
    """model.train(), but every BatchNorm that does not train stays in eval mode (statistics frozen)."""
    model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm) and not trained_norm(m):
            m.eval()
    return model


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode inside, and afterwards every module's mode as it was (not model.train(), which would put
    frozen BatchNorms back in train mode)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was


def trained_norm_buffers(model: nn.Module) -> dict:
    """The running statistics of the BatchNorms that trained (state_dict names): what training changed
    besides the trainable parameters, saved with the run."""
    names = {n for n, m in model.named_modules() if trained_norm(m)}
    return {
        f"{n}.{b}" if n else b: t.detach().contiguous().cpu()
        for n in names
        for b, t in model.get_submodule(n).named_buffers(recurse=False)
    }
