"""Fine-tuning methods: one config dataclass plus one function each, registered in one small registry
(registry.py) with their formula, search space and capabilities. Importing this package registers
every method, in the order of these imports (the order of table rows).

Every method trains the new classification head: PEFT methods through modules_to_save (PEFT keeps a
trainable copy beside the frozen original), the others by unfreezing it. Adapted modules always come
from the Arch's roles (query, key, value, output, fc1, fc2) and block norms (norm1, norm2), never from
hard-coded module names. The hand-written methods that add modules (SSF, VPT, the adapters, FacT) attach
them as sites (sites.py); the mergeable ones fold them into the base weights with their own merge.
To add a method: one module here (config dataclass, formula, @register'ed function) and its import below.
"""

from .registry import (  # isort: skip
    REGISTRY,
    Capabilities,
    Choice,
    IntRange,
    LogRange,
    Method,
    MethodConfig,
    Prepared,
    get,
    parse_methods,
    register,
)
from .peftwrap import CpuDropout  # isort: skip

# the order of these imports is the order of registration: of methods in tables and listings
# isort: off
from .partial import BitFitConfig, FreezeFirstConfig, HeadConfig, LastConfig
from .norm import LayerNormConfig
from .ssf import SsfConfig
from .prompts import VptConfig, VptDeepConfig
from .adapters import AdapterConfig, AdaptFormerConfig, RepAdapterConfig
from .lora import AdaLoraConfig, DoraConfig, LoraAllConfig, LoraConfig, RsLoraConfig
from .lycoris import LohaConfig, LokrConfig
from .vectors import Ia3Config, VeraConfig, ia3_roles
from .oft import OftConfig
from .orthogonal import BoftConfig, HraConfig
from .fact import FactConfig, FactTkConfig
from .lowrank import MissConfig, RandLoraConfig, ShiraConfig, VbLoraConfig
from .spectral import C3aConfig, FourierFtConfig
from .full import FullConfig

# isort: on

__all__ = [
    "REGISTRY",
    "AdaLoraConfig",
    "AdaptFormerConfig",
    "AdapterConfig",
    "BitFitConfig",
    "BoftConfig",
    "C3aConfig",
    "Capabilities",
    "Choice",
    "CpuDropout",
    "DoraConfig",
    "FactConfig",
    "FactTkConfig",
    "FourierFtConfig",
    "FreezeFirstConfig",
    "FullConfig",
    "HeadConfig",
    "HraConfig",
    "Ia3Config",
    "IntRange",
    "LastConfig",
    "LayerNormConfig",
    "LogRange",
    "LohaConfig",
    "LokrConfig",
    "LoraAllConfig",
    "LoraConfig",
    "Method",
    "MethodConfig",
    "MissConfig",
    "OftConfig",
    "Prepared",
    "RandLoraConfig",
    "RepAdapterConfig",
    "RsLoraConfig",
    "ShiraConfig",
    "SsfConfig",
    "VbLoraConfig",
    "VeraConfig",
    "VptConfig",
    "VptDeepConfig",
    "get",
    "ia3_roles",
    "parse_methods",
    "register",
]
