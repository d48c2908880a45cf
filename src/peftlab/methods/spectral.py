"""Updates trained in a transformed domain, through PEFT: FourierFT (a few trained 2-D Fourier
coefficients of ΔW) and C3A (ΔW block-circulant, applied as circular convolutions by FFT). Both start at
exactly zero here (PEFT's default draws them at random)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..models.arch import Arch
from ..theory.anatomy import Anatomy, per_shape, with_peft
from ..theory.lines import Line
from .peftwrap import TARGETS_HELP, common_divisor, fitted, linear_dims, method_roles, targets, wrap
from .registry import Capabilities, Choice, MethodConfig, Prepared, register

PEFT_CAPS = Capabilities(peft_format=True)


# ---------------------------------------------------------------- FourierFT
@dataclass
class FourierFtConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    n_frequency: int = field(
        default=1000,
        metadata={"help": "trained spectral coefficients per Linear (at most d_in·d_out: fitted down to it)"},
    )
    scaling: float = field(default=150.0, metadata={"help": "ΔW is multiplied by this"})
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})
    loc_seed: int = field(default=777, metadata={"help": "seed of the (shared) random frequency locations"})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.n_frequency >= 1, "n_frequency", ">= 1")
        self._require(self.scaling > 0, "scaling", "> 0")


def _n_frequency(dims: list[tuple[int, int]], want: int) -> int:
    return min([want] + [i * o for i, o in dims])  # PEFT: n_frequency <= d_in·d_out


def _fourierft(an: Anatomy, cfg) -> list[Line]:
    roles = method_roles(an.arch, cfg)
    n = _n_frequency([(sh.din, sh.dout) for sh in an.shapes(roles)], cfg.n_frequency)
    return with_peft(
        an,
        per_shape(
            an, roles, "FourierFT spectral coefficients", lambda sh: ("n", {"n": n}, fitted("n", n, cfg.n_frequency))
        ),
    )


@register(
    "fourierft",
    FourierFtConfig,
    "ΔW = scaling·Re(IDFT₂(F)), F zero but at n fixed random frequencies whose values train",
    "Gao et al. 2024, Parameter-Efficient Fine-Tuning with Discrete Fourier Transform (FourierFT)",
    formula=_fourierft,
    search={"n_frequency": Choice((100, 1000, 3000)), "scaling": Choice((100.0, 150.0, 300.0))},
    caps=PEFT_CAPS,
)
def fourierft(model: nn.Module, arch: Arch, cfg: FourierFtConfig, total_steps: int) -> Prepared:
    """ΔW = scaling·Re(IDFT₂(F)), F (d_out × d_in) zero except at n seeded random locations, whose values
    train. They start at 0 (init_weights=True): the identity; PEFT's default N(0,1) start is not."""
    import peft

    roles = method_roles(arch, cfg)
    config = peft.FourierFTConfig(
        n_frequency=_n_frequency(linear_dims(model, arch, roles), cfg.n_frequency),
        scaling=cfg.scaling,
        random_loc_seed=cfg.loc_seed,
        init_weights=True,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))


# ---------------------------------------------------------------- C3A
@dataclass
class C3aConfig(MethodConfig):
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate (AdamW)"})
    block_size: int = field(
        default=256, metadata={"help": "size b of the circulant blocks (fitted to divide every adapted width)"}
    )
    targets: str = field(default="auto", metadata={"help": TARGETS_HELP})

    def __post_init__(self):
        super().__post_init__()
        self._require(self.block_size >= 1, "block_size", ">= 1")


def _block_size(dims: list[tuple[int, int]], want: int) -> int:
    return common_divisor([x for pair in dims for x in pair], want)


def _c3a(an: Anatomy, cfg) -> list[Line]:
    """Per Linear: (d_out/b)·(d_in/b) circulant blocks, each defined by one b-long kernel."""
    roles = method_roles(an.arch, cfg)
    b = _block_size([(sh.din, sh.dout) for sh in an.shapes(roles)], cfg.block_size)
    return with_peft(
        an,
        per_shape(
            an,
            roles,
            "C3A circulant kernels",
            lambda sh: (f"{sh.din_sym}·{sh.dout_sym}/b", {"b": b}, fitted("b", b, cfg.block_size)),
        ),
    )


@register(
    "c3a",
    C3aConfig,
    "block-circulant ΔW on chosen Linears, applied as circular convolutions (FFT)",
    "Chen et al. 2024, Parameter-Efficient Fine-Tuning via Circular Convolution (C3A)",
    formula=_c3a,
    search={"block_size": Choice((8, 16, 64, 256))},
    caps=PEFT_CAPS,
)
def c3a(model: nn.Module, arch: Arch, cfg: C3aConfig, total_steps: int) -> Prepared:
    """ΔW·x: the input cut into b-wide pieces, each circularly convolved with a trained kernel per
    (output, input) block pair and summed; the kernels start at 0 (init_weights=True): the identity, and
    ΔW is linear in them, so they still get gradients (PEFT's default xavier start is not the identity)."""
    import peft

    roles = method_roles(arch, cfg)
    config = peft.C3AConfig(
        block_size=_block_size(linear_dims(model, arch, roles), cfg.block_size),
        init_weights=True,
        target_modules=targets(arch, cfg),
        modules_to_save=list(arch.heads),
    )
    return Prepared(wrap(model, config))
