"""Load an image classifier (hub id, local folder or the bundled model), fit its head to a label set,
and read what its image processor asks of an input image."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import BUNDLED_NAME
from ..errors import UserError
from . import geometry
from .finder import describe

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


@dataclass(frozen=True)
class ImageSpec:
    """What the model's image processor does to an input image: the resize and crop steps (on the uint8
    image, models.geometry) giving height × width, then per channel (x·rescale − mean) / std and, for a
    BGR model, the channel order flipped."""

    height: int
    width: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rescale: float = 1 / 255  # uint8 -> [0, 1]
    # where these numbers come from when not from the model's image processor (a warning); not part of
    # the identity of the spec
    fallback: str = field(default="", compare=False)
    steps: tuple = ()  # ("warp", h, w) | ("shortest", edge) | ("crop", h, w); () = warp to height × width
    resample: int = geometry.BILINEAR  # the PIL filter of the resizes
    bgr: bool = False  # the model reads channels in BGR order (MobileViT)

    @property
    def geometry(self) -> tuple:
        """The resize and crop steps (a plain warp to height × width when none are recorded)."""
        return self.steps or (("warp", self.height, self.width),)

    def record(self) -> dict:
        """The geometry as result.json records it (data.geometry)."""
        return {
            "steps": [list(s) for s in self.geometry],
            "resample": self.resample,
            "bgr": self.bgr,
            "text": geometry.describe_steps(self.geometry, self.resample) + (", BGR" if self.bgr else ""),
        }

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] on any device -> normalized float32: (x·rescale - mean) / std, computed as
        one in-place multiply-add with per-channel constants made once per device (a tensor built from
        Python numbers on a GPU is a host copy that waits for the GPU: once per step, that stalls it)."""
        scale, shift = _affine(self.mean, self.std, self.rescale, images.device)
        x = images.to(torch.float32, copy=True).mul_(scale).add_(shift)  # a copy: never the caller's tensor
        return x.flip(1) if self.bgr else x


@functools.lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], rescale: float, device: torch.device):
    m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    return ((rescale / s).float().view(1, -1, 1, 1).to(device), (-m / s).float().view(1, -1, 1, 1).to(device))


def resolve_model_path(name: str) -> str:
    """The bundled model's name (or 'bundled') -> its folder; anything else is passed through."""
    if name in (BUNDLED_NAME, "bundled"):
        return str(BUNDLED_DIR)
    return str(Path(name).expanduser()) if name.startswith("~") else name


def check_model_path(name: str) -> str:
    """The folder (or hub id) to load for name; a local-looking path that does not exist is an error."""
    path = resolve_model_path(name)
    if Path(path).exists():
        return path
    # a hub id is 'name' or 'owner/name', and may contain dots ('timm/vit_tiny_patch16_224.augreg_in21k')
    hub_like = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) and not path.startswith(".")
    if path.startswith((".", "/", "~")) or (Path(path).suffix and "/" not in path) or not hub_like:
        raise UserError(
            f"model folder '{name}' does not exist; pass a local model folder, a hub id or '{BUNDLED_NAME}'"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise UserError(
            f"model '{name}' is not a local folder, and HF_HUB_OFFLINE is set and it is not in the "
            f"Hugging Face cache; pass a local model folder or '{BUNDLED_NAME}', or unset "
            "HF_HUB_OFFLINE to download it"
        )
    return path


def load_kwargs(path: str, trust_remote_code: bool = False) -> dict:
    """What every from_pretrained gets: a model folder's own Python code never runs unless asked (transformers
    would ask on a terminal, and run it on 'y'), and a local folder is read locally only: no hub fallback."""
    return {"trust_remote_code": trust_remote_code} | ({"local_files_only": True} if Path(path).exists() else {})


def config_errors() -> tuple[type[BaseException], ...]:
    """What loading a model or its config raises for a bad folder, name or config.json (a value of the wrong
    type: huggingface_hub's strict dataclass check in transformers 5)."""
    from huggingface_hub import errors

    strict = getattr(errors, "StrictDataclassError", None)
    return (OSError, ValueError, TypeError, KeyError) + ((strict,) if strict else ())


def why(e: BaseException) -> str:
    """A library's error message on one line (its first two lines: the second often says which value)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()][:2]
    return (" ".join(lines) or type(e).__name__)[:300]


def remote_code_error(name: str, e: BaseException) -> UserError | None:
    """The one-line error for a model that needs its own Python code to load, or None for any other error."""
    if "trust_remote_code" not in str(e) and "custom code" not in str(e):
        return None
    return UserError(
        f"model '{name}' needs its own Python code to load (its config's auto_map), which peftlab does not run "
        "unless you pass --trust-remote-code: dangerous, that code runs with your permissions; read it first"
    )


def image_spec(name: str, config, trust_remote_code: bool = False) -> ImageSpec:
    """What the model's image processor does to an image: resize and crop steps, rescale, mean/std, channel
    order (models.geometry); without a readable processor, a plain resize to the config's image_size and
    mean/std 0.5, with a warning in ImageSpec.fallback."""
    from transformers import AutoImageProcessor

    channels = int(getattr(config, "num_channels", 3))
    path = resolve_model_path(name)
    try:
        proc = AutoImageProcessor.from_pretrained(path, **load_kwargs(path, trust_remote_code))
        steps, resample, note = geometry.processor_steps(proc)
        mean, std, rescale, bgr = geometry.processor_affine(proc, channels)
        height, width = geometry.output_size(steps)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        if err := remote_code_error(name, e):
            raise err from e
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        side = _config_size(config)
        fallback = (
            f"no image processor could be read for '{name}' ({first}): inputs are resized to {side}×{side} "
            "and normalised with mean 0.5 and std 0.5, which may not be how the model was pretrained; add "
            "its preprocessor_config.json"
        )
        return ImageSpec(side, side, channels, (0.5,) * channels, (0.5,) * channels, 1 / 255, fallback)
    if len(mean) != channels:
        mean, std = (mean[0],) * channels, (std[0],) * channels
    return ImageSpec(height, width, channels, mean, std, float(rescale), note, steps, resample, bgr)


def _config_size(config) -> int:
    size = getattr(config, "image_size", None) or getattr(getattr(config, "vision_config", None), "image_size", None)
    size = size[0] if isinstance(size, (list, tuple)) else size
    if not size:
        raise UserError(
            "the model has no image processor and its config no image_size; add its preprocessor_config.json"
        )
    return int(size)


def fit_head(model: nn.Module, label_names: list[str], seed: int) -> None:
    """Replace the Linear of every classification head (a Sequential's, LeViT's after its BatchNorm, both
    heads of a distilled model) with a fresh, seeded one for these labels."""
    arch = describe(model)
    gen = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    for path in arch.head_linears:
        old: nn.Linear = model.get_submodule(path)
        head = nn.Linear(old.in_features, len(label_names))
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen).mul_(std).clamp_(-2 * std, 2 * std))
            head.bias.zero_()
        model.set_submodule(path, head.to(old.weight.device, old.weight.dtype))
    model.num_labels = len(label_names)
    model.config.num_labels = len(label_names)
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}
    model.config.problem_type = "single_label_classification"


def load_model(
    name: str, label_names: list[str], seed: int = 0, scratch: bool = False, trust_remote_code: bool = False
) -> nn.Module:
    """A hub id, a local folder or the bundled model -> classifier with a fresh head for label_names.
    scratch: the same architecture with every weight initialised afresh (seeded), none pretrained.
    trust_remote_code: let transformers run the model's own Python code (never unless the user asked)."""
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    path = check_model_path(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is re-initialised on purpose: silence the warning
    hf_logging.disable_progress_bar()
    try:
        if scratch:
            from transformers import AutoConfig

            torch.manual_seed(seed)
            model = AutoModelForImageClassification.from_config(
                AutoConfig.from_pretrained(path, num_labels=len(label_names), **load_kwargs(path, trust_remote_code)),
                trust_remote_code=trust_remote_code,
            )
        else:
            model = AutoModelForImageClassification.from_pretrained(
                path, num_labels=len(label_names), ignore_mismatched_sizes=True, **load_kwargs(path, trust_remote_code)
            )
    except config_errors() as e:
        if err := remote_code_error(name, e):
            raise err from e
        raise UserError(f"cannot load model '{name}': {why(e)}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    fit_head(model, label_names, seed)
    return model


def bundled_path() -> Path:
    """Where the bundled model's folder is (what '--model peftlab-vit-tiny' loads): a path that resolves
    from anywhere, for model cards and plain transformers code."""
    return BUNDLED_DIR


def bundled_record() -> dict:
    path = BUNDLED_DIR / "pretrain.json"
    return json.loads(path.read_text()) if path.exists() else {}
