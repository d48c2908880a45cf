"""What every PEFT-based method shares: importing PEFT so that it behaves the same on every machine,
wrapping a model with PEFT (the head in modules_to_save), turning a 'targets' option into PEFT's
target_modules, fitting an option to the adapted Linears' widths, and the LoRA branches' CPU dropout."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import Unsupported
from ..models.arch import Arch, Part

TARGETS_HELP = (
    "roles to adapt: any of query,key,value,output,qkv,fc1,fc2 and the convolution roles pointwise,spatial,"
    "depthwise; groups attention, mlp, convs, all-linear; auto: the method's usual roles where the model has "
    "them (query,value; a fused qkv; else fc1,fc2; else the convolutions it can adapt)"
)
QKV = ("query", "key", "value")


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
    """Wrap with PEFT; the config already names the head(s) in modules_to_save. The LoRA branches' input
    dropouts become CpuDropout (the same dropout, drawn faster on the CPU)."""
    peft = use_peft()

    pm = peft.get_peft_model(model, config)
    for name, m in list(pm.named_modules()):
        if name.rsplit(".", 1)[-1] == "lora_dropout" and isinstance(m, nn.ModuleDict):
            for key, d in m.items():
                if type(d) is nn.Dropout and d.p > 0:
                    m[key] = CpuDropout(d.p)
    return conv_attributes(pm)


def conv_attributes(model: nn.Module) -> nn.Module:
    """Give each PEFT layer wrapping a Conv2d its conv's geometry attributes: MobileNetV2's TF-style padding
    reads stride, kernel_size and dilation from the module it calls, which is then PEFT's wrapper (without
    them: AttributeError). Called after wrapping and after loading a saved adapter."""
    for m in model.modules():
        base = getattr(m, "base_layer", None)
        if isinstance(base, nn.Conv2d) and m is not base:
            for attr in ("stride", "kernel_size", "dilation", "padding", "groups"):
                if attr not in m.__dict__:
                    m.__dict__[attr] = getattr(base, attr)
    return model


def unwrap_copies(model: nn.Module) -> nn.Module:
    """Put each modules_to_save copy (the trained head) in its original's place. merge_and_unload does it for
    most tuners; LN tuning's leaves the wrapper, whose state would not load into the plain model."""
    for name, m in list(model.named_modules()):
        if hasattr(m, "modules_to_save") and hasattr(m, "original_module") and name:
            parent, _, attr = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, attr, m.modules_to_save[next(iter(m.modules_to_save))])
    return model


def method_roles(arch: Arch, cfg, usual: tuple[str, ...] = ("query", "value"), option: str = "targets") -> list[str]:
    """A method's target option (cfg.<option>) -> the roles it adapts on this model, checked against the
    Conv2d layers the method can adapt (its Capabilities.conv2d); 'auto' is the method's usual roles where the
    model has them (see auto_roles). A role the model lacks, or a conv the method cannot adapt, is Unsupported."""
    from .registry import get

    name = cfg.method_name()
    rule = get(name).caps.conv2d
    auto = auto_roles(arch, usual, rule)
    if getattr(cfg, option).strip().lower() == "auto" and not auto:
        kinds = "Linear layers" if not rule else f"Linear layers and convolutions ({rule})"
        raise Unsupported(
            f"{name} adapts {kinds}; this model's blocks have none of those (they have: {arch.roles_text()})"
        )
    roles = arch.resolve_roles(getattr(cfg, option), auto)
    for role in roles:
        why = next((w for p in arch.roles[role] if (w := conv_refusal(p, rule))), None)
        if why:
            raise Unsupported(f"{name} cannot adapt the '{role}' modules of this model: {why}")
    return roles


def auto_roles(arch: Arch, usual: tuple[str, ...], rule: str) -> list[str]:
    """What targets=auto adapts: the usual roles that the model has (its fused qkv in place of query, key, value
    when it lacks them), else its MLP (fc1, fc2), else its convolutions; only roles whose every module the
    method can adapt."""
    usual = list(usual)
    attn = [r for r in usual if r in QKV]
    if attn and not all(r in arch.roles for r in attn) and "qkv" in arch.roles:
        usual = ["qkv"] + [r for r in usual if r not in QKV]
    for choice in (usual, ["fc1", "fc2"], ["pointwise", "spatial"]):
        roles = [r for r in choice if r in arch.roles and not any(conv_refusal(p, rule) for p in arch.roles[r])]
        if roles:
            return roles
    return []


def conv_refusal(part: Part, rule: str) -> str:
    """Why a method whose conv rule is `rule` cannot adapt this module ('' when it can). Rules (PEFT 0.21):
    '' adapts Linear layers only; 'any' any Conv2d; 'groups=1' no depthwise or grouped conv (LoRA: the rank
    would have to be a multiple of the groups, and it cannot merge); '1x1' pointwise only (OFT's rotation of a
    k×k conv computes a different function); 'groups=1, no same padding' also not a conv with padding='same'
    (BOFT, HRA pass that string on as a number)."""
    if part.kind == "linear" or rule == "any":
        return ""
    if not rule:
        return f"it adapts Linear layers only and {part.path} is a {part.describe()}"
    if rule == "1x1" and part.k > 1:
        return f"it adapts 1×1 convolutions only and {part.path} is a {part.describe()}"
    if part.groups > 1 and rule != "1x1":
        return f"it cannot adapt a grouped or depthwise convolution ({part.path}: {part.describe()})"
    if "same" in rule and part.same:
        return f"it cannot adapt a convolution with padding='same' ({part.path})"
    return ""


def targets(arch: Arch, cfg, usual: tuple[str, ...] = ("query", "value")) -> str:
    """A method's 'targets' option -> PEFT target_modules regex over those roles' modules."""
    return arch.target_regex(method_roles(arch, cfg, usual))


def linear_dims(model: nn.Module, arch: Arch, roles: list[str]) -> list[tuple[int, int]]:
    """(fan-in, d_out) of these roles' modules in every block: in_features (a conv's in_channels·k_h·k_w /
    groups): what a formula reads from an anatomy's shapes."""
    return [(p.d_in * p.k // p.groups, p.d_out) for p in arch.parts(roles)]


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
