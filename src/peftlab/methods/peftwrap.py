"""What every PEFT-based method shares: wrapping a model with PEFT (the head in modules_to_save),
turning a 'targets' option into PEFT's target_modules, and the LoRA branches' CPU dropout."""

from __future__ import annotations

import torch
from torch import nn

from ..models.arch import Arch

TARGETS_HELP = "roles to adapt: any of query,key,value,output,fc1,fc2, attention, mlp or all-linear"


def wrap(model: nn.Module, config) -> nn.Module:
    """Wrap with PEFT; the config already names the head in modules_to_save. The LoRA branches' input
    dropouts become CpuDropout (the same dropout, drawn faster on the CPU)."""
    import peft

    pm = peft.get_peft_model(model, config)
    for name, m in list(pm.named_modules()):
        if name.rsplit(".", 1)[-1] == "lora_dropout" and isinstance(m, nn.ModuleDict):
            for key, d in m.items():
                if type(d) is nn.Dropout and d.p > 0:
                    m[key] = CpuDropout(d.p)
    return pm


def targets(arch: Arch, spec: str) -> str:
    """A method's 'targets' option -> PEFT target_modules regex over those roles' Linears."""
    return arch.target_regex(arch.resolve_roles(spec))


class CpuDropout(nn.Dropout):
    """nn.Dropout whose mask, on the CPU, takes 16 random bits per element, four per 64-bit draw. torch's
    CPU dropout draws a Mersenne-Twister number per element: for LoRA on the bundled ViT that was ~15% of
    a training step. An element is dropped when its bits fall below t = round(p·65536), so the dropped
    share is t/65536 (within 2^-17 of p), and kept values are scaled by 65536/(65536 - t): the expected
    output is exactly the input, as with nn.Dropout. Seeded by torch.manual_seed like it. Elsewhere
    (GPUs draw masks fast) it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0 and x.device.type == "cpu"):
            return super().forward(x)
        t = round(self.p * 65536)
        if t >= 65536:  # p rounds to 1: everything dropped
            return x * 0
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= t - 32768  # int16: uniform on ±32768
        return x * keep * (65536 / (65536 - t))
