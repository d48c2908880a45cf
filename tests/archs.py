"""Tiny random-init classifiers of every Hugging Face family peftlab describes (models/families.py), each with
its PIL image processor, built offline from transformers' own config classes, and the architecture × method
matrix computed on them (what the README shows; tests/test_archs.py checks both).

    python -m tests.archs            # print the matrix as markdown (what the README's section holds)

Sizes are tiny (hidden 8-32, one or two blocks per stage) but the structure (module names and classes,
heads, norms, token layout) is the family's; the processors keep each family's resize/crop recipe
(DeiT's 256/224 warp then crop, ConvNeXt's crop_pct, DINOv2's shortest edge then crop...) scaled so
their output is the model's input side. LeViT, MobileViT and Hiera need 64-pixel inputs (their strides),
every other family takes 32.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import torch

FAMILIES = [
    "vit",
    "deit",
    "deit-distilled",  # DeiTForImageClassificationWithTeacher: [CLS] and distillation heads
    "beit",
    "data2vec-vision",
    "dinov2",
    "swin",
    "swinv2",
    "convnext",
    "convnextv2",
    "resnet",
    "regnet",
    "efficientnet",
    "mobilenet_v2",
    "mobilevit",
    "levit",
    "poolformer",
    "cvt",
    "segformer",
    "hiera",
    "clip",
    "siglip",
]
SIZE = {"levit": 64, "mobilevit": 64, "hiera": 64}  # input side; 32 for the others
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LABELS = ["a", "b", "c"]


def side(family: str) -> int:
    return SIZE.get(family, 32)


def _stages(n: int) -> dict:
    names = ["stem"] + [f"stage{i + 1}" for i in range(n)]
    return {"out_indices": [n], "stage_names": names}


def config(family: str, shape: str = "tiny"):
    """(model class, config) of a tiny model of the family. shape='deep': the block counts of the common hub
    checkpoint (Swin-T 2,2,6,2, ConvNeXt-T 3,3,9,3, ResNet-50 3,4,6,3) at the same tiny widths."""
    import transformers as T

    S, deep, kw = side(family), shape == "deep", {"num_labels": len(LABELS)}
    vit = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": S, "patch_size": 8}
    if family == "vit":
        return T.ViTForImageClassification, T.ViTConfig(intermediate_size=32, **vit, **kw)
    if family in ("deit", "deit-distilled"):
        cls = T.DeiTForImageClassification if family == "deit" else T.DeiTForImageClassificationWithTeacher
        return cls, T.DeiTConfig(intermediate_size=32, **vit, **kw)
    if family in ("beit", "data2vec-vision"):  # as the hub's classifiers: relative position bias, mean pooling
        cls, cfg = {
            "beit": (T.BeitForImageClassification, T.BeitConfig),
            "data2vec-vision": (T.Data2VecVisionForImageClassification, T.Data2VecVisionConfig),
        }[family]
        opts = {"use_relative_position_bias": True, "use_mean_pooling": True, "layer_scale_init_value": 0.1}
        return cls, cfg(intermediate_size=32, drop_path_rate=0.0, out_indices=[2], **opts, **vit, **kw)
    if family == "dinov2":
        return T.Dinov2ForImageClassification, T.Dinov2Config(mlp_ratio=2, **_stages(2), **vit, **kw)
    if family in ("swin", "swinv2"):
        # deep: patch and window 2 so that no stage is smaller than the window (Swin v1 breaks there)
        depths, patch = ([2, 2, 6, 2], 2) if deep else ([1, 2], 4)
        common = dict(image_size=S, patch_size=patch, embed_dim=8, depths=depths, window_size=patch, mlp_ratio=2.0)
        common |= dict(num_heads=[1, 2, 2, 2][: len(depths)], drop_path_rate=0.0, **_stages(len(depths)), **kw)
        if family == "swin":
            return T.SwinForImageClassification, T.SwinConfig(**common)
        return T.Swinv2ForImageClassification, T.Swinv2Config(pretrained_window_sizes=[0] * len(depths), **common)
    if family in ("convnext", "convnextv2"):
        depths = [3, 3, 9, 3] if deep else [1, 2]
        cls, cfg = {
            "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig),
            "convnextv2": (T.ConvNextV2ForImageClassification, T.ConvNextV2Config),
        }[family]
        sizes = [8, 16, 16, 16][: len(depths)]
        return cls, cfg(num_stages=len(depths), hidden_sizes=sizes, depths=depths, **_stages(len(depths)), **kw)
    if family == "resnet":  # bottleneck blocks, like microsoft/resnet-50
        depths = [3, 4, 6, 3] if deep else [1, 2]
        sizes = [16, 32, 32, 32][: len(depths)]
        return T.ResNetForImageClassification, T.ResNetConfig(
            embedding_size=8, hidden_sizes=sizes, depths=depths, layer_type="bottleneck", **_stages(len(depths)), **kw
        )
    if family == "regnet":
        return T.RegNetForImageClassification, T.RegNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], groups_width=8, layer_type="y", **kw
        )
    if family == "efficientnet":
        from transformers.models.efficientnet.modeling_efficientnet import round_filters

        c = T.EfficientNetConfig(image_size=S, width_coefficient=0.1, depth_coefficient=0.1, **kw)
        c.hidden_dim = round_filters(c, 1280)  # the top conv's width, which the head reads
        return T.EfficientNetForImageClassification, c
    if family == "mobilenet_v2":
        return T.MobileNetV2ForImageClassification, T.MobileNetV2Config(image_size=S, depth_multiplier=0.1, **kw)
    if family == "mobilevit":
        return T.MobileViTForImageClassification, T.MobileViTConfig(
            image_size=S,
            patch_size=2,
            hidden_sizes=[16, 16, 24],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
            num_attention_heads=2,
            expand_ratio=2.0,
            **kw,
        )
    if family == "levit":
        return T.LevitForImageClassification, T.LevitConfig(
            image_size=S,
            patch_size=16,
            hidden_sizes=[16, 24, 32],
            num_attention_heads=[2, 3, 4],
            depths=[1, 1, 1],
            key_dim=[8, 8, 8],
            **kw,
        )
    if family == "poolformer":
        return T.PoolFormerForImageClassification, T.PoolFormerConfig(
            hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], **kw
        )
    if family == "cvt":  # depth[s] >= s + 1 (modeling_cvt indexes its drop-path rates by stage)
        return T.CvtForImageClassification, T.CvtConfig(
            embed_dim=[8, 16, 24], num_heads=[1, 2, 2], depth=[1, 2, 3], drop_path_rate=[0.0] * 3, **kw
        )
    if family == "segformer":
        return T.SegformerForImageClassification, T.SegformerConfig(
            hidden_sizes=[8, 16, 24, 32],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=16,
            drop_path_rate=0.0,
            **kw,
        )
    if family == "hiera":
        return T.HieraForImageClassification, T.HieraConfig(
            image_size=[S, S], embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], mlp_ratio=2.0, **kw
        )
    if family in ("clip", "siglip"):
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
        vision |= dict(image_size=S, patch_size=8)
        text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
        text |= dict(max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        if family == "clip":
            return T.CLIPForImageClassification, T.CLIPConfig(
                vision_config=vision | {"projection_dim": 8},
                text_config=text | {"projection_dim": 8},
                projection_dim=8,
                **kw,
            )
        return T.SiglipForImageClassification, T.SiglipConfig(
            vision_config=vision, text_config=text | {"projection_size": 16}, **kw
        )
    raise KeyError(family)


def processor(family: str):
    """The family's PIL image processor, its hub recipe scaled so that it outputs side(family) pixels."""
    import transformers as T

    S = side(family)
    square, crop = {"height": S, "width": S}, {"crop_size": {"height": S, "width": S}}
    up = round(S * 256 / 224)
    if family in ("vit", "swin", "swinv2"):
        return T.ViTImageProcessorPil(size=square)
    if family in ("deit", "deit-distilled"):  # warp 256×256, crop 224
        return T.DeiTImageProcessorPil(size={"height": up, "width": up}, **crop)
    if family in ("beit", "data2vec-vision"):
        return T.BeitImageProcessorPil(size=square, **crop)
    if family in ("dinov2", "hiera"):  # shortest edge 256, crop 224, ImageNet mean/std
        return T.BitImageProcessorPil(
            size={"shortest_edge": up}, **crop, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
        )
    if family in ("convnext", "convnextv2", "resnet", "regnet", "cvt"):  # shortest edge S/crop_pct, crop S
        return T.ConvNextImageProcessorPil(size={"shortest_edge": S}, crop_pct=224 / 256)
    if family == "efficientnet":
        return T.EfficientNetImageProcessorPil(size=square, **crop)
    if family == "mobilenet_v2":
        return T.MobileNetV2ImageProcessorPil(size={"shortest_edge": up}, **crop)
    if family == "mobilevit":  # shortest edge 288, crop 256; no normalisation, BGR
        return T.MobileViTImageProcessorPil(size={"shortest_edge": round(S * 288 / 256)}, **crop)
    if family == "levit":
        return T.LevitImageProcessorPil(size={"shortest_edge": S}, **crop)
    if family == "poolformer":
        return T.PoolFormerImageProcessorPil(size={"shortest_edge": S}, **crop, crop_pct=0.9)
    if family == "segformer":
        return T.SegformerImageProcessorPil(size=square)
    if family == "clip":
        return T.CLIPImageProcessorPil(size={"shortest_edge": S}, **crop)
    if family == "siglip":
        return T.SiglipImageProcessorPil(size=square)
    raise KeyError(family)


def build(family: str, shape: str = "tiny", seed: int = 0, lively: bool = False) -> torch.nn.Module:
    """A random-init model of the family (eval mode). lively: Kaiming weights, unit norms and layer scales,
    BatchNorm statistics calibrated on random batches, so that the logits depend on the image (with
    transformers' init, those of EfficientNet, MobileNetV2, MobileViT and LeViT barely do)."""
    cls, cfg = config(family, shape)
    torch.manual_seed(seed)
    model = cls(cfg)
    if lively:
        _lively(model, side(family))
    return model.eval()


def _lively(model: torch.nn.Module, S: int) -> None:
    from torch import nn

    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if re.search(r"layer_scale|lambda", n):  # ConvNeXt's 1e-6 gain hides everything inside its blocks
                p.fill_(1.0)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average of the calibration batches
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(pixel_values=torch.randn(4, 3, S, S, generator=g))
    for m in bns:
        m.momentum = 0.1


def save(family: str, folder, shape: str = "tiny", lively: bool = False):
    """save_pretrained the model and its processor into folder, laid out like a hub model."""
    build(family, shape, lively=lively).save_pretrained(folder)
    processor(family).save_pretrained(folder)
    return folder


def pictures(n: int = 3, seed: int = 0) -> list:
    """Random RGB pictures of assorted shapes (wider, taller, square), as users' files are."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = [(45, 60), (70, 38), (50, 50), (33, 90)]
    return [Image.fromarray(rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8), "RGB") for i in range(n)]


# ---------------------------------------------------------------- the matrix
@dataclass(frozen=True)
class Cell:
    ok: bool  # applied, one optimizer step taken, counts checked
    text: str  # ✓, ✓ (structural count), or unsupported: why


@functools.cache
def folder(family: str) -> str:
    import tempfile

    return save(family, tempfile.mkdtemp(prefix=f"peftlab-{family}-"))


@functools.cache
def _base(family: str):
    from peftlab.models import image_spec, load_model

    path = folder(family)
    model = load_model(path, LABELS, seed=0)
    model.requires_grad_(False)
    spec = image_spec(path, model.config)
    from peftlab.data.decoding import _pil_to_array

    images = torch.from_numpy(np.stack([_pil_to_array(p, spec) for p in pictures(2)]))
    return model, spec.normalize(images)


@functools.cache
def cell(family: str, method: str) -> Cell:
    """One method on one family as `peftlab run` does it: counts derived (or counted from the structure) before
    the method is applied, the method applied, the measured counts checked against them, then one
    forward, backward and optimizer step in train mode (BatchNorm honoured). A method that cannot apply is
    unsupported, with its reason; anything else that goes wrong raises."""
    import copy

    from peftlab import methods as M
    from peftlab import theory
    from peftlab.errors import Unsupported
    from peftlab.models import describe
    from peftlab.training.measure import count_params
    from peftlab.training.modes import train_mode

    base, x = _base(family)
    model = copy.deepcopy(base)
    model.requires_grad_(True)
    m = M.get(method)
    cfg = m.config_cls()
    try:
        derived = theory.counts(model, m, cfg, len(LABELS))
        prepared = m.apply(model, describe(model), cfg, 10)
    except Unsupported as e:
        return Cell(False, f"unsupported: {e}")
    params = count_params(prepared.model, sum(p.numel() for p in base.parameters()))
    checked = theory.check(derived, params)
    assert not checked["mismatches"], (family, method, checked["mismatches"])
    pm = train_mode(prepared.model)
    trainable = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    out = pm(pixel_values=x)
    logits = out.logits if hasattr(out, "logits") else out[0]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    if prepared.after_step:
        prepared.after_step(1, 10)
    assert torch.isfinite(loss), (family, method, loss)
    assert any(p.grad is not None and p.grad.any() for p in trainable), (family, method, "no gradient")
    return Cell(True, MARKS[checked["kind"]])


MARKS = {"theory": "✓", "structural": "✓s", "not derived": "✓?"}
# why a method is unsupported, in a few words: (code, pattern on the reason, what the legend says)
WHY = [
    (
        "cls",
        r"puts prompt tokens",
        "VPT puts prompt tokens after [CLS] in one stack of blocks whose head reads [CLS] "
        "alone; this head reads other tokens (the distillation token, the patch mean, a pooled map) or the blocks "
        "are in stages",
    ),
    ("qkv", r"has: .*\bqkv\b", "needs separate query, key, value Linear layers; this model's are fused"),
    (
        "ln",
        r"no LayerNorm to tune|LayerNorms before attention|pre-norm blocks|one norm2 and one fc2",
        "needs LayerNorms (for AdaptFormer, RepAdapter: the pre-attention and pre-MLP norms of pre-norm blocks); "
        "this model normalises otherwise (BatchNorm, GroupNorm, post-norm, one norm per block)",
    ),
    (
        "bias",
        r"without a bias",
        "folds into a Linear without a bias (the key projection), which this architecture "
        "cannot load with one: the merged model would lose the folded bias",
    ),
    ("bn", r"also has BatchNorm", "folds into LayerNorm, Linear and the patch conv; this model also has BatchNorm"),
    (
        "cl",
        r"channels-last",
        "PEFT's OFT takes a conv's (N, C, H, W) input; ConvNeXt's MLP Linears read channels-last maps",
    ),
    (
        "g1",
        r"groups=1",
        "adapts Linear layers and convolutions with groups=1 and no 'same' padding; this model's "
        "block convs are depthwise or 'same'-padded",
    ),
    (
        "mix",
        r"read the norms directly",
        "RepAdapter folds into q, k, v and fc1, which must read the block's norms "
        "directly; these blocks have convolutions in between",
    ),
    ("conv", r"Linear layers", "adapts Linear layers; the roles it needs are convolutions in this model's blocks"),
]


def why(reason: str) -> str:
    """The legend code of an unsupported reason (the reason itself when no code fits)."""
    return next((code for code, pattern, _ in WHY if re.search(pattern, reason)), reason)


def matrix() -> str:
    """The architecture × method matrix as markdown: one row per method, one column per family; ✓ = one step
    taken and the counts derived from the family's formulas equal the measured ones, ✓s = they equal the
    counts from the model's structure (theory/structural.py), ✗ code = unsupported, why in the legend."""
    from peftlab import methods as M

    rows = ["| method | " + " | ".join(FAMILIES) + " |", "|---|" + "---|" * len(FAMILIES)]
    used: set[str] = set()
    for method in M.REGISTRY:
        cells = []
        for family in FAMILIES:
            c = cell(family, method)
            if not c.ok:
                used.add(why(c.text.removeprefix("unsupported: ")))
            cells.append(c.text if c.ok else f"✗ {why(c.text.removeprefix('unsupported: '))}")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    legend = [f"- ✗ {code}: {text}" for code, _, text in WHY if code in used]
    legend += [f"- ✗ {code}" for code in sorted(used - {w[0] for w in WHY})]  # a reason no code fits, in full
    return "\n".join(rows + [""] + legend) + "\n"


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(matrix(), end="")
