"""What every PEFT-based method shares: importing PEFT so that it behaves the same on every machine,
wrapping a model with PEFT (the head in modules_to_save), turning a 'targets' option into PEFT's
target_modules, fitting an option to the adapted Linears' widths, and the LoRA branches' CPU dropout."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models.arch import Arch

TARGETS_HELP = "roles to adapt: any of query,key,value,output,fc1,fc2, attention, mlp or all-linear"


def use_peft():
    """PEFT, made machine-independent. BOFT assembles its butterfly factors' block-diagonal matrices with a
    CUDA extension that PEFT compiles when it wraps a layer; where that fails (no CUDA toolkit, a CPU
    machine) PEFT warns, retries for every layer, and silently uses one butterfly factor whatever was
    asked — so a run's parameter count and function depended on the machine. Here the extension's two
    functions are given in plain torch (TorchBlockDiag) before PEFT looks for it: the factor asked is the
    factor used, everywhere, and nothing is compiled. Every PEFT entry point of peftlab (wrap, load_run)
    goes through this."""
    import peft
    from peft.tuners.boft import layer as boft_layer

    if boft_layer._FBD_CUDA is None:  # None: not loaded yet (a loaded CUDA extension computes the same)
        boft_layer._FBD_CUDA = TorchBlockDiag
    return peft


class TorchBlockDiag:
    """PEFT's fbd_cuda interface in plain torch: blocks (N, D, b, b) -> N block-diagonal (D·b × D·b)
    matrices, and the gradient back to the blocks (the diagonal blocks of the output's gradient)."""

    @staticmethod
    def forward(blocks: torch.Tensor) -> list[torch.Tensor]:
        n, d, b, _ = blocks.shape
        out = blocks.new_zeros(n, d, b, d, b)
        out.diagonal(dim1=1, dim2=3).copy_(blocks.permute(0, 2, 3, 1))  # out[:, i, :, i, :] = blocks[:, i]
        return [out.view(n, d * b, d * b)]

    @staticmethod
    def backward(grad: torch.Tensor, blocks: torch.Tensor) -> list[torch.Tensor]:
        n, d, b, _ = blocks.shape
        return [grad.reshape(n, d, b, d, b).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).contiguous()]


def wrap(model: nn.Module, config) -> nn.Module:
    """Wrap with PEFT; the config already names the head in modules_to_save. The LoRA branches' input
    dropouts become CpuDropout (the same dropout, drawn faster on the CPU)."""
    peft = use_peft()

    pm = peft.get_peft_model(model, config)
    for name, m in list(pm.named_modules()):
        if name.rsplit(".", 1)[-1] == "lora_dropout" and isinstance(m, nn.ModuleDict):
            for key, d in m.items():
                if type(d) is nn.Dropout and d.p > 0:
                    m[key] = CpuDropout(d.p)
    return pm


def unwrap_copies(model: nn.Module) -> nn.Module:
    """Put each modules_to_save copy (the trained head) in its original's place. merge_and_unload does it for
    most tuners; LN tuning's leaves the wrapper, whose state would not load into the plain model."""
    for name, m in list(model.named_modules()):
        if hasattr(m, "modules_to_save") and hasattr(m, "original_module") and name:
            parent, _, attr = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, attr, m.modules_to_save[next(iter(m.modules_to_save))])
    return model


def targets(arch: Arch, spec: str) -> str:
    """A method's 'targets' option -> PEFT target_modules regex over those roles' Linears."""
    return arch.target_regex(arch.resolve_roles(spec))


def linear_dims(model: nn.Module, arch: Arch, roles: list[str]) -> list[tuple[int, int]]:
    """(d_in, d_out) of these roles' Linears in every block: what a formula reads from an anatomy's shapes."""
    return [
        (lin.in_features, lin.out_features)
        for b in arch.block_names()
        for lin in [model.get_submodule(f"{b}.{arch.roles[r]}") for r in roles]
    ]


def nearest_divisor(n: int, want: int) -> int:
    """The divisor of n nearest to want (at most n), the smaller one on a tie: how an option that must divide
    a width is fitted to the model, the same way in the formula and in the method."""
    if want >= n:
        return n
    divisors = [k for k in range(1, n + 1) if n % k == 0]
    return min(divisors, key=lambda k: (abs(k - want), k))


def common_divisor(dims: list[int], want: int) -> int:
    """nearest_divisor of the widths' greatest common divisor: a size that must divide every width."""
    return nearest_divisor(math.gcd(*dims), want)


def fitted(name: str, used, asked) -> str:
    """The note of a formula line: the value used, and the one asked for when the widths changed it."""
    return f"{name}={used}" + (f", fitted from {asked} to the widths" if used != asked else "")


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
