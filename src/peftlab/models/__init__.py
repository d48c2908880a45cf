"""Models: loading a classifier and its input spec (loading), and finding its parts by role (arch)."""

from ..config import BUNDLED_NAME
from .arch import (
    NORM_PATTERNS,
    ROLE_ALIASES,
    ROLE_GROUPS,
    ROLE_PATTERNS,
    Arch,
    blocks_of,
    describe,
    norm_paths,
    role_modules,
    role_paths,
)
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
    "NORM_PATTERNS",
    "ROLE_ALIASES",
    "ROLE_GROUPS",
    "ROLE_PATTERNS",
    "Arch",
    "ImageSpec",
    "blocks_of",
    "bundled_path",
    "bundled_record",
    "check_model_path",
    "describe",
    "fit_head",
    "image_spec",
    "load_model",
    "norm_paths",
    "resolve_model_path",
    "role_modules",
    "role_paths",
]
