"""Where each family of Hugging Face image classifiers keeps its parts, written out per family: the blocks
of every stage in forward order, what runs between them, what lies between the last block and the head,
what each role (query … fc2, the fused qkv) is called inside a block, and what the head reads.

Read from transformers 5's modules (module names, classes, forward order checked with hooks on every
family: tests/test_archs.py). A model whose type is not here, or whose modules do not fit its entry, is
described by arch.describe's generic search, which says what it found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# role -> regex (fullmatch) on a module's path relative to its block
NEW = {  # transformers 5's names (ViT, DeiT, BEiT, DINOv2, Swin, SegFormer)
    "query": r"attention\.q_proj",
    "key": r"attention\.k_proj",
    "value": r"attention\.v_proj",
    "output": r"attention\.o_proj",
    "fc1": r"mlp\.fc1",
    "fc2": r"mlp\.fc2",
}
OLD = {  # the transformers 4 names some families keep (Data2VecVision, MobileViT; CvT and Swinv2 alike)
    "query": r"attention\.attention\.query",
    "key": r"attention\.attention\.key",
    "value": r"attention\.attention\.value",
    "output": r"attention\.output\.dense",
    "fc1": r"intermediate\.dense",
    "fc2": r"output\.dense",
}
CLIP = {
    "query": r"self_attn\.q_proj",
    "key": r"self_attn\.k_proj",
    "value": r"self_attn\.v_proj",
    "output": r"self_attn\.out_proj",
    "fc1": r"mlp\.fc1",
    "fc2": r"mlp\.fc2",
}
BEFORE_AFTER = {"norm1": r"layernorm_before", "norm2": r"layernorm_after"}


def _within(prefix: str, roles: dict[str, str]) -> dict[str, str]:
    return {k: prefix + v for k, v in roles.items()}


# What the head reads, which decides what token-level methods may do:
#   cls       the [CLS] token (position 0) after the final norm: prompts may follow it
#   cls+dist  [CLS] and the distillation token (positions 0 and 1), averaged heads
#   cls+mean  [CLS] concatenated with the mean of the patch tokens (DINOv2)
#   patches   the mean of the patch tokens, [CLS] excluded (BEiT, Data2VecVision, CLIP)
#   tokens    the mean of all tokens (no [CLS]: Swin, SegFormer, Hiera, LeViT, SigLIP)
#   pooled    a global average pool of a feature map (CNNs)
#   stage-cls a [CLS] token that only the last stage carries and returns apart (CvT)


TOKENS = {
    "cls": "the [CLS] token",
    "cls+dist": "the [CLS] and distillation tokens",
    "cls+mean": "[CLS] and the mean of the patch tokens",
    "patches": "the mean of the patch tokens",
    "tokens": "the mean of all tokens (no [CLS])",
    "pooled": "a global average pool of the last feature map",
    "stage-cls": "a [CLS] token only its last stage carries",
}


@dataclass(frozen=True)
class Family:
    """One family's layout. Paths are full module paths; {s} is a stage index. Conv2d layers of a block that no
    role names get a role by their shape (arch.conv_role): pointwise, spatial or depthwise."""

    block_types: tuple[str, ...]  # the classes of its blocks
    blocks: str  # regex (fullmatch) of a block's path; its group 'stage' is the stage index, if any
    roles: dict[str, str] = field(default_factory=dict)  # role -> regex relative to the block
    norms: dict[str, str] = field(default_factory=dict)  # norm1 (before attention), norm2 (before the MLP)
    pre_norm: bool = True  # norm1/norm2 normalise the inputs of attention / MLP (False: their outputs, Swinv2)
    stage: str | None = None  # the module of stage {s} ("last" with unit=stages trains it whole)
    before: tuple[str, ...] = ()  # per stage: run before its blocks (downsampling, patch embedding)
    after: tuple[str, ...] = ()  # per stage: run after its blocks (patch merging, the stage's norm)
    neck: tuple[str, ...] = ()  # after the last block, before the head (the final norm first)
    tokens: str = "cls"
    note: str = ""  # what users should know (fused projections, unused modules)
    channels_last: tuple[str, ...] = ()  # roles whose Linear reads a (B, H, W, C) feature map


FUSED = (
    "attention computes query, key and value with one fused Linear: methods that adapt q/k/v adapt it whole, "
    "as the role 'qkv' (targets=auto picks it)"
)

FAMILIES: dict[str, Family] = {
    "vit": Family(("ViTLayer",), r"vit\.layers\.\d+", NEW, BEFORE_AFTER, neck=("vit.layernorm",)),
    "deit": Family(("DeiTLayer",), r"deit\.layers\.\d+", NEW, BEFORE_AFTER, neck=("deit.layernorm",)),
    "beit": Family(
        ("BeitLayer",),
        r"beit\.layers\.\d+",
        NEW,
        BEFORE_AFTER,
        neck=("beit.layernorm", "beit.pooler.layernorm"),
        tokens="patches",
    ),
    "data2vec-vision": Family(
        ("Data2VecVisionLayer",),
        r"data2vec_vision\.encoder\.layer\.\d+",
        OLD,
        BEFORE_AFTER,
        neck=("data2vec_vision.layernorm", "data2vec_vision.pooler.layernorm"),
        tokens="patches",
    ),
    "dinov2": Family(
        ("Dinov2Layer",),
        r"dinov2\.encoder\.layer\.\d+",
        {**NEW, "fc1": r"mlp\.(fc1|gate_proj|up_proj)", "fc2": r"mlp\.(fc2|down_proj)"},
        {"norm1": "norm1", "norm2": "norm2"},
        neck=("dinov2.layernorm",),
        tokens="cls+mean",
        note="embeddings.mask_token is unused in classification (it never gets a gradient)",
    ),
    "swin": Family(
        ("SwinLayer",),
        r"swin\.encoder\.layers\.(?P<stage>\d+)\.blocks\.\d+",
        NEW,
        BEFORE_AFTER,
        stage="swin.encoder.layers.{s}",
        after=("swin.encoder.layers.{s}.downsample",),
        neck=("swin.layernorm",),
        tokens="tokens",
    ),
    "swinv2": Family(
        ("Swinv2Layer",),
        r"swinv2\.encoder\.layers\.(?P<stage>\d+)\.blocks\.\d+",
        {
            "query": r"attention\.self\.query",
            "key": r"attention\.self\.key",
            "value": r"attention\.self\.value",
            "output": OLD["output"],
            "fc1": OLD["fc1"],
            "fc2": OLD["fc2"],
        },
        BEFORE_AFTER,
        pre_norm=False,  # res-post-norm: x + LN(attn(x)), x + LN(mlp(x))
        stage="swinv2.encoder.layers.{s}",
        after=("swinv2.encoder.layers.{s}.downsample",),
        neck=("swinv2.layernorm",),
        tokens="tokens",
    ),
    "convnext": Family(
        ("ConvNextLayer",),
        r"convnext\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",
        {"fc1": r"pwconv1", "fc2": r"pwconv2"},  # Linear layers fed channels-last (B, H, W, C) maps
        {"norm2": "layernorm"},
        stage="convnext.encoder.stages.{s}",
        before=("convnext.encoder.stages.{s}.downsampling_layer",),
        neck=("convnext.layernorm",),
        tokens="pooled",
        channels_last=("fc1", "fc2"),
    ),
    "convnextv2": Family(
        ("ConvNextV2Layer",),
        r"convnextv2\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",
        {"fc1": r"pwconv1", "fc2": r"pwconv2"},
        {"norm2": "layernorm"},
        stage="convnextv2.encoder.stages.{s}",
        before=("convnextv2.encoder.stages.{s}.downsampling_layer",),
        neck=("convnextv2.layernorm",),
        tokens="pooled",
        channels_last=("fc1", "fc2"),
    ),
    "resnet": Family(
        ("ResNetBottleNeckLayer", "ResNetBasicLayer"),
        r"resnet\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",
        stage="resnet.encoder.stages.{s}",
        tokens="pooled",
    ),
    "regnet": Family(
        ("RegNetYLayer", "RegNetXLayer"),
        r"regnet\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",
        stage="regnet.encoder.stages.{s}",
        tokens="pooled",
    ),
    "efficientnet": Family(
        ("EfficientNetBlock",),
        r"efficientnet\.encoder\.blocks\.\d+",
        neck=("efficientnet.encoder.top_conv", "efficientnet.encoder.top_bn"),
        tokens="pooled",
    ),
    "mobilenet_v2": Family(
        ("MobileNetV2InvertedResidual",),
        r"mobilenet_v2\.layer\.\d+",
        neck=("mobilenet_v2.conv_1x1",),
        tokens="pooled",
        note="the first inverted residual is part of the stem (conv_stem)",
    ),
    "mobilevit": Family(
        ("MobileViTMobileNetLayer", "MobileViTLayer"),
        r"mobilevit\.encoder\.layer\.\d+",  # its five stage units: two MobileNet stages, three MobileViT blocks
        _within(r"transformer\.layer\.\d+\.", OLD),
        _within(r"transformer\.layer\.\d+\.", BEFORE_AFTER),
        neck=("mobilevit.conv_1x1_exp",),
        tokens="pooled",
        note="its blocks are the five stage units of the encoder; the attention roles sit in the transformer "
        "layers of the last three",
    ),
    "levit": Family(
        ("LevitResidualLayer", "LevitAttentionSubsample"),
        r"levit\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",  # residual units: attention, MLP, ..., subsample
        {
            "qkv": r"module\.queries_keys_values\.linear|keys_values\.linear",
            "query": r"queries\.linear",  # the subsampling attention's own queries
            "output": r"(module\.)?projection\.linear",
            "fc1": r"module\.linear_up\.linear",
            "fc2": r"module\.linear_down\.linear",
        },
        stage="levit.encoder.stages.{s}",
        tokens="tokens",
        note=FUSED + " (keys and values fused in the subsampling units); every Linear is followed by a BatchNorm1d",
    ),
    "poolformer": Family(
        ("PoolFormerLayer",),
        r"poolformer\.encoder\.block\.(?P<stage>\d+)\.\d+",
        {"fc1": r"output\.conv1", "fc2": r"output\.conv2"},  # 1×1 Conv2d MLP
        {"norm1": "before_norm", "norm2": "after_norm"},  # GroupNorm
        stage="poolformer.encoder.block.{s}",
        before=("poolformer.encoder.patch_embeddings.{s}",),
        neck=("norm",),
        tokens="pooled",
    ),
    "cvt": Family(
        ("CvtLayer",),
        r"cvt\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",
        {
            "query": r"attention\.attention\.projection_query",
            "key": r"attention\.attention\.projection_key",
            "value": r"attention\.attention\.projection_value",
            "output": OLD["output"],
            "fc1": OLD["fc1"],
            "fc2": OLD["fc2"],
        },
        BEFORE_AFTER,
        stage="cvt.encoder.stages.{s}",
        before=("cvt.encoder.stages.{s}.embedding", "cvt.encoder.stages.{s}.cls_token"),
        neck=("layernorm",),
        tokens="stage-cls",
    ),
    "segformer": Family(
        ("SegformerLayer",),
        r"segformer\.stages\.(?P<stage>\d+)\.blocks\.\d+",
        NEW,
        BEFORE_AFTER,
        stage="segformer.stages.{s}",
        before=("segformer.stages.{s}.patch_embeddings",),
        after=("segformer.stages.{s}.layer_norm",),
        tokens="tokens",
    ),
    "hiera": Family(
        ("HieraLayer",),
        r"hiera\.encoder\.stages\.(?P<stage>\d+)\.layers\.\d+",
        {
            "qkv": r"attn\.qkv",
            "output": r"attn\.proj",
            "fc1": r"mlp\.fc1",
            "fc2": r"mlp\.fc2",
            "shortcut": r"proj",  # the first block of a pooling stage projects its residual
        },
        BEFORE_AFTER,
        neck=("hiera.pooler.layernorm",),
        tokens="tokens",
        note=FUSED,
    ),
    "clip": Family(
        ("CLIPEncoderLayer",),
        r"vision_model\.encoder\.layers\.\d+",
        CLIP,
        {"norm1": "layer_norm1", "norm2": "layer_norm2"},
        tokens="patches",
        note="the head reads the mean of the patch tokens without post_layernorm, which stays unused",
    ),
    "siglip": Family(
        ("SiglipEncoderLayer",),
        r"vision_model\.encoder\.layers\.\d+",
        CLIP,
        {"norm1": "layer_norm1", "norm2": "layer_norm2"},
        neck=("vision_model.post_layernorm",),
        tokens="tokens",
        note="the attention-pooling head vision_model.head is computed but unused by the classifier",
    ),
}

# the classification heads a model may have, as attributes of the model itself
HEAD_NAMES = ("classifier", "cls_classifier", "distillation_classifier", "classifier_distill", "head", "fc")
