"""LayerNorm tuning through PEFT: trainable copies of every LayerNorm."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import nn

from ..errors import Unsupported
from ..models.arch import Arch
from ..theory.anatomy import Anatomy, with_peft
from ..theory.lines import Line
from .peftwrap import wrap
from .registry import Capabilities, MethodConfig, Prepared, register


@dataclass
class LayerNormConfig(MethodConfig):
    lr: float = field(default=2e-2, metadata={"help": "peak learning rate (AdamW)"})


def layer_norms(model: nn.Module, arch: Arch) -> list[str]:
    """Every LayerNorm of the model (found by type, not by name), the heads excluded."""
    heads = tuple(h + "." for h in arch.heads)
    return [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) and not (n + ".").startswith(heads)]


def _formula(an: Anatomy, cfg) -> list[Line]:
    p = an.norms()  # PEFT ln_tuning trains a copy of every LayerNorm; the originals stay, frozen
    return with_peft(an, [Line("LayerNorm copies (PEFT ln_tuning)", p.symbols, p.numbers, p.count, True, "added")])


@register(
    "layernorm",
    LayerNormConfig,
    "train every LayerNorm's weight and bias (PEFT LN tuning: trainable copies) and the head",
    "Zhao et al. 2023, Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM Finetuning",
    formula=_formula,
    caps=Capabilities(peft_format=True),
)
def layernorm(model: nn.Module, arch: Arch, cfg: LayerNormConfig, total_steps: int) -> Prepared:
    import peft

    names = layer_norms(model, arch)
    if not names:
        raise Unsupported(f"layernorm: {type(model).__name__} has no LayerNorm to tune (its norms are of other kinds)")
    with warnings.catch_warnings():  # PEFT's in/out-features probe warns on every LayerNorm it wraps
        warnings.filterwarnings("ignore", message="Unsupported layer type .*LayerNorm")
        pm = wrap(model, peft.LNTuningConfig(target_modules=names, modules_to_save=list(arch.heads)))
    return Prepared(pm)
