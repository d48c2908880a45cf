"""Models: loading a classifier and its input spec (loading, geometry), and finding its parts (arch, families)."""

from ..config import BUNDLED_NAME
from .arch import (
    CONV_ROLES,
    NORM_PATTERNS,
    ROLE_ALIASES,
    ROLE_GROUPS,
    ROLE_PATTERNS,
    Arch,
    Part,
)
from .families import FAMILIES, Family
from .finder import conv_role, describe, head_linear
from .loading import (
    BUNDLED_DIR,
    ImageSpec,
    bundled_path,
    bundled_record,
    check_model_path,
    fit_head,
    image_spec,
    load_model,
    resolve_model_path,
)

__all__ = [
    "BUNDLED_DIR",
    "BUNDLED_NAME",
    "CONV_ROLES",
    "FAMILIES",
    "NORM_PATTERNS",
    "ROLE_ALIASES",
    "ROLE_GROUPS",
    "ROLE_PATTERNS",
    "Arch",
    "Family",
    "ImageSpec",
    "Part",
    "bundled_path",
    "bundled_record",
    "check_model_path",
    "conv_role",
    "describe",
    "fit_head",
    "head_linear",
    "image_spec",
    "load_model",
    "resolve_model_path",
]
