"""Methods that train vectors only: VeRA (scalings of shared frozen random matrices) and IA³ (rescalings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import UserError
from ..models.arch import Arch
from ..theory.anatomy import Anatomy, per_shape, with_peft
from ..theory.lines import Line
from .peftwrap import TARGETS_HELP, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register


# ---------------------------------------------------------------- VeRA
@dataclass
class VeraConfig(MethodConfig):
    lr: float = field(default=2e-2, metadata={"help": "peak learning rate (AdamW)"})
    r: int = field(default=256, metadata={"help": "rank of the shared frozen random matrices A and B"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    d_initial: float = field(default=0.1, metadata={"help": "initial value of the scaling vector d"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter branch's input"})
    prng_key: int = field(default=0, metadata={"help": "seed of the shared random A and B"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.r >= 1, "r", ">= 1")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")


def _vera(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    added = per_shape(
        an, roles, "VeRA scaling vectors b (d_out) and d (r)", lambda sh: (f"{sh.dout_sym} + r", {"r": cfg.r}, "")
    )
    # the shared random A (r × largest d_in) and B (largest d_out × r) are buffers, saved with the adapter
    added.append(Line("shared random A, B (frozen buffers, not parameters)", "0", "0", 0, False, "added"))
    return with_peft(an, added)


def _ia3(an: Anatomy, cfg) -> list[Line]:
    roles, ff = ia3_roles(an.arch, cfg)
    rest = [ro for ro in roles if ro not in ff]
    added = per_shape(an, rest, "IA³ output scales", lambda sh: (sh.dout_sym, {}, "")) if rest else []
    if ff:
        added += per_shape(an, ff, "IA³ input scales (feedforward)", lambda sh: (sh.channels_in[0], {}, ""))
    return with_peft(an, added)


@register(
    "vera",
    VeraConfig,
    "shared frozen random A, B; trains only two scaling vectors per Linear, Λb·B·Λd·A",
    "Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation",
    formula=_vera,
    search={"r": Choice((64, 128, 256)), "d_initial": Choice((0.01, 0.1, 1.0))},
    caps=Capabilities(peft_format=True),
)
def vera(model: nn.Module, arch: Arch, cfg: VeraConfig, total_steps: int) -> Prepared:
    import peft

    config = peft.VeraConfig(
        r=cfg.r,
        d_initial=cfg.d_initial,
        vera_dropout=cfg.dropout,
        projection_prng_key=cfg.prng_key,
        save_projection=True,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


# ---------------------------------------------------------------- IA³
@dataclass
class Ia3Config(MethodConfig):
    lr: float = field(default=3e-2, metadata={"help": "peak learning rate (AdamW)"})
    targets: str = field(
        default="auto",
        metadata={
            "help": "roles whose activations are rescaled (auto: key,value,fc2 where the model has them): "
            + TARGETS_HELP.split(": ", 1)[1]
        },
    )
    feedforward: str = field(
        default="auto",
        metadata={
            "help": "those of targets rescaled on their input (the MLP's hidden activations) instead of their "
            "output; auto: fc2 when it is a target; empty for none"
        },
    )


def ia3_roles(arch: Arch, cfg: Ia3Config) -> tuple[list[str], list[str]]:
    """(target roles, feedforward roles), checked: the feedforward roles must be among the targets."""
    roles = method_roles(arch, cfg, usual=("key", "value", "fc2"))
    ff_auto = ["fc2"] if "fc2" in roles else []
    spec = cfg.feedforward.strip()
    ff = [] if not spec or (spec == "auto" and not ff_auto) else arch.resolve_roles(spec, ff_auto)
    extra = [r for r in ff if r not in roles]
    if extra:
        raise UserError(
            f"ia3.feedforward must be among ia3.targets ({', '.join(roles)}); not a target: {', '.join(extra)}"
        )
    return roles, ff


@register(
    "ia3",
    Ia3Config,
    "learned rescaling vectors on keys, values and the MLP's hidden activations",
    "Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning (IA³)",
    formula=_ia3,
    caps=Capabilities(peft_format=True, conv2d="any"),
)
def ia3(model: nn.Module, arch: Arch, cfg: Ia3Config, total_steps: int) -> Prepared:
    import peft

    roles, ff = ia3_roles(arch, cfg)
    config = peft.IA3Config(
        target_modules=arch.target_regex(roles),
        feedforward_modules=arch.target_regex(ff) if ff else [],
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))
