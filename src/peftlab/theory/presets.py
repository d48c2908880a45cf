"""Architecture presets of published models (enough to derive their counts offline) and reading a
model config from a preset, the bundled model, a config.json, a model folder or a hub id."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import models
from ..errors import UserError

# ------------------------------------------------------------------------- configs and presets


@dataclass(frozen=True)
class Preset:
    """Architecture facts of a published model; enough to derive its counts offline."""

    model_type: str  # "vit" -> ViTForImageClassification, "deit" -> DeiTForImageClassification
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int = 224
    about: str = ""


PRESETS: dict[str, Preset] = {
    "vit-tiny-patch16-224": Preset("vit", 192, 12, 3, 768, 16, about="ViT-Ti/16 (AugReg in21k)"),
    "vit-small-patch16-224": Preset("vit", 384, 12, 6, 1536, 16, about="ViT-S/16 (AugReg in21k)"),
    "vit-base-patch16-224": Preset("vit", 768, 12, 12, 3072, 16, about="ViT-B/16, google/vit-base-patch16-224-in21k"),
    "vit-large-patch16-224": Preset(
        "vit", 1024, 24, 16, 4096, 16, about="ViT-L/16, google/vit-large-patch16-224-in21k"
    ),
    "vit-huge-patch14-224": Preset(
        "vit",
        1280,
        32,
        16,
        5120,
        14,
        about="ViT-H/14 (Google released H with 14-pixel patches only), google/vit-huge-patch14-224-in21k",
    ),
    # Facebook's plain DeiT checkpoints are ViT checkpoints: model_type "vit", one cls token.
    "deit-tiny-patch16-224": Preset("vit", 192, 12, 3, 768, 16, about="DeiT-Ti, a ViTForImageClassification"),
    "deit-small-patch16-224": Preset("vit", 384, 12, 6, 1536, 16, about="DeiT-S, a ViTForImageClassification"),
    "deit-base-patch16-224": Preset("vit", 768, 12, 12, 3072, 16, about="DeiT-B, a ViTForImageClassification"),
    # The distilled ones are model_type "deit": cls + distillation token, N+2 positions. Counted
    # as DeiTForImageClassification (one head); the hub checkpoints name ...WithTeacher (two heads).
    "deit-tiny-distilled-patch16-224": Preset("deit", 192, 12, 3, 768, 16, about="DeiT-Ti distilled"),
    "deit-small-distilled-patch16-224": Preset("deit", 384, 12, 6, 1536, 16, about="DeiT-S distilled"),
    "deit-base-distilled-patch16-224": Preset("deit", 768, 12, 12, 3072, 16, about="DeiT-B distilled"),
}


def _aliases() -> dict[str, str]:
    out = {}
    for name in PRESETS:
        short = name.removesuffix("-224")
        out[short] = name
        if name.startswith("vit-"):
            out[name + "-in21k"] = out[short + "-in21k"] = name
            if "tiny" not in name and "small" not in name:  # released by Google on the hub
                out["google/" + name] = out["google/" + name + "-in21k"] = name
        else:
            out["facebook/" + name] = name
    return out


ALIASES: dict[str, str] = _aliases()
"""Other spellings of the presets, hub ids included, so that no download happens for them."""


def preset_config(name: str):
    """A transformers ViTConfig / DeiTConfig for a preset or alias (no download)."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in PRESETS:
        near = difflib.get_close_matches(key.split("/")[-1], list(PRESETS), n=3, cutoff=0.6)
        raise UserError(
            f"unknown model preset '{name}'"
            + (f"; did you mean {', '.join(near)}?" if near else f"; presets: {', '.join(PRESETS)}")
        )
    p = PRESETS[key]
    import transformers

    cls = transformers.DeiTConfig if p.model_type == "deit" else transformers.ViTConfig
    config = cls(
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=p.num_attention_heads,
        intermediate_size=p.intermediate_size,
        patch_size=p.patch_size,
        image_size=p.image_size,
        num_channels=3,
        qkv_bias=True,
    )
    config.name_or_path = key
    return config


def load_config(spec: str):
    """A preset name or alias (hub ids of the presets included: no download), the bundled model's
    name, a config.json, a model folder, or a hub id (fetched with transformers.AutoConfig)."""
    from transformers import AutoConfig

    spec = spec.strip()
    if spec.lower() in PRESETS or spec.lower() in ALIASES:
        return preset_config(spec)
    path = Path(models.resolve_model_path(spec)).expanduser()
    if spec in (models.BUNDLED_NAME, "bundled") and not (path / "config.json").exists():
        raise UserError(f"the bundled model is not built yet ({path} has no config.json)")
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise UserError(f"'{spec}' is a folder without config.json")
        try:
            if path.is_file():
                data = json.loads(path.read_text())
                return AutoConfig.for_model(data.pop("model_type"), **data)
            return AutoConfig.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
        except models.loading.config_errors() as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"cannot read a model config from '{spec}': {first}") from e
    if spec.startswith((".", "/", "~")) or path.suffix or "/" not in spec:
        if "/" not in spec and not path.suffix:
            preset_config(spec)  # raises with close preset names
        raise UserError(
            f"'{spec}' does not exist; pass a preset ({', '.join(PRESETS)}), a config.json, a model folder or a hub id"
        )
    try:
        return AutoConfig.from_pretrained(spec, trust_remote_code=False)  # theory never runs a model's code
    except models.loading.config_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the config of '{spec}': {first}") from e
