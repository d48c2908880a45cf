"""theory.py: derived parameter counts, checked against exact published figures and against
measure.count_params on models actually built (small ones on the CPU, big ones on the meta device:
same modules and shapes, no memory)."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from peftlab import methods, models, theory
from peftlab.errors import UserError
from peftlab.training import measure

C101 = 101
STEPS = 100  # planned optimizer steps handed to every method function (only AdaLoRA uses them)
VIT_B = "google/vit-base-patch16-224-in21k"  # an alias of the preset: no download


def build(config, num_labels: int, device: str = "cpu") -> tuple[nn.Module, int]:
    """The classifier transformers builds for this config, with a fresh head; and its base count."""
    cls = (
        transformers.DeiTForImageClassification
        if config.model_type == "deit"
        else transformers.ViTForImageClassification
    )
    with torch.device(device):
        model = cls(config)
        models.fit_head(model, [f"c{i}" for i in range(num_labels)], seed=0)
    return model, sum(p.numel() for p in model.parameters())


def measured(config, method: str, cfg, num_labels: int, device: str = "cpu") -> dict:
    model, base = build(config, num_labels, device)
    with torch.device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = methods.get(method).apply(model, models.describe(model), cfg, STEPS)
    return measure.count_params(prepared.model, base)


def derive(config, method: str, cfg=None, num_labels: int = 2):
    return theory.derive(config, methods.get(method), cfg, num_labels)


def structural(model, method: str, cfg=None, num_labels: int | None = None):
    return theory.structural(model, methods.get(method), cfg, num_labels)


def assert_matches(config, method, cfg, num_labels, device="cpu"):
    bd = derive(config, method, cfg, num_labels)
    got = measured(config, method, cfg, num_labels, device)
    result = theory.check(bd, got)
    assert result["theory_match"], (result["mismatches"], bd.format())
    return bd, got


# ------------------------------------------------------------------ registry


def test_every_built_in_method_derives_its_counts():
    missing = [name for name, m in methods.REGISTRY.items() if m.formula is None]
    assert not missing, f"built-in methods without a parameter formula: {missing}"


def test_a_method_without_formula_is_not_derived_and_never_aborts(monkeypatch):
    bare = dataclasses.replace(methods.REGISTRY["head"], name="bare", formula=None)
    assert theory.derive(theory.load_config(VIT_B), bare, None, C101) is None
    assert theory.check(None, {"trainable": 5}) == {"kind": theory.NOT_DERIVED, "mismatches": []}
    with pytest.raises(UserError, match="unknown method 'nope'"):
        derive(theory.load_config(VIT_B), "nope", None, C101)


# ------------------------------------------------------------------ ViT-B/16, 101 classes: exact figures


@pytest.fixture(scope="module")
def vit_b():
    return theory.load_config(VIT_B)


def test_vit_b_exact_numbers(vit_b):
    head = derive(vit_b, "head", methods.HeadConfig(), C101)
    assert (head.base, head.total, head.trainable, head.peft_all_params) == (85_876_325, 85_876_325, 77_669, 85_876_325)

    lora = derive(vit_b, "lora", methods.LoraConfig(r=8, targets="query,value"), C101)
    assert lora.added == 294_912 and lora.trainable == 372_581
    assert lora.total == 85_876_325 + 294_912 and lora.base == 85_876_325
    assert lora.peft_all_params == 86_248_906

    last = derive(vit_b, "last", methods.LastConfig(blocks=1), C101)
    assert [ln.count for ln in last.lines if ln.component == "last 1 block"] == [7_087_872]
    assert last.trainable == 7_165_541 and last.total == 85_876_325
    with_norm = derive(vit_b, "last", methods.LastConfig(blocks=1, final_norm=True), C101)
    assert with_norm.trainable == 7_165_541 + 2 * 768

    full = derive(vit_b, "full", methods.FullConfig(), C101)
    assert full.trainable == full.total == 85_876_325

    # BOFT (PEFT cannot build its butterfly permutations on the meta device: measured on vit-small below):
    # m = 2 factors of 768/4 blocks of 4×4 and 768 output scales per Linear: m·d_in·b + d_out
    boft = derive(vit_b, "boft", methods.BoftConfig(), C101)
    assert boft.added == 24 * (2 * 768 * 4 + 768) == 165_888 and boft.trainable == 165_888 + 77_669


# ViT-B/16 arithmetic by hand (d=768, m=3072, L=12, 101 classes), independent of theory.py's formulas
D, M_, L_ = 768, 3072, 12
HEAD = D * C101 + C101  # 77,669
BLOCK = 4 * (D * D + D) + (D * M_ + M_) + (M_ * D + D) + 4 * D  # 7,087,872
QV_LAYERS = 2 * L_  # query and value in every block


@pytest.mark.parametrize(
    "method,cfg,added,trainable",
    [
        # every bias: patch conv 768, per block q,k,v,o 4·768 + fc1 3072 + fc2 768 + LayerNorm β 2·768, final β 768
        ("bitfit", None, 0, 768 + L_ * (4 * D + M_ + D + 2 * D) + D + HEAD),
        # first 6 blocks frozen (half of 12) with the embeddings; 6 blocks, the final norm and the head train
        ("freeze-first", None, 0, 6 * BLOCK + 2 * D + HEAD),
        ("freeze-first", methods.FreezeFirstConfig(blocks=0), 0, L_ * BLOCK + 2 * D + HEAD),
        ("freeze-first", methods.FreezeFirstConfig(blocks=12), 0, 2 * D + HEAD),
        # PEFT LN tuning adds a trainable copy of the 2 LayerNorms per block and the final one
        ("layernorm", None, (2 * L_ + 1) * 2 * D, (2 * L_ + 1) * 2 * D + HEAD),
        ("lora-all", None, L_ * 8 * (4 * 2 * D + 2 * (D + M_)), L_ * 8 * (4 * 2 * D + 2 * (D + M_)) + HEAD),
        ("rslora", None, QV_LAYERS * 8 * 2 * D, QV_LAYERS * 8 * 2 * D + HEAD),
        ("dora", None, QV_LAYERS * (8 * 2 * D + D), QV_LAYERS * (8 * 2 * D + D) + HEAD),  # + one magnitude per output
        # P (12×768), Λ (12), Q (768×12) per Linear; plus one frozen rank counter each (in total, not trainable)
        ("adalora", None, QV_LAYERS * (12 * 2 * D + 12 + 1), QV_LAYERS * (12 * 2 * D + 12) + HEAD),
        ("loha", None, QV_LAYERS * 2 * 8 * 2 * D, QV_LAYERS * 2 * 8 * 2 * D + HEAD),
        # 768 = 24·32: W₁ 24×24 full, W₂ 32×32 as rank 8 (8 < 32/2): 576 + 8·(32+32)
        ("lokr", None, QV_LAYERS * (24 * 24 + 8 * 64), QV_LAYERS * (24 * 24 + 8 * 64) + HEAD),
        # W₂ kept full when r >= 32/2; decompose_both factors W₁ too when r < 24/2
        ("lokr", methods.LokrConfig(r=16), QV_LAYERS * (24 * 24 + 32 * 32), QV_LAYERS * (24 * 24 + 32 * 32) + HEAD),
        (
            "lokr",
            methods.LokrConfig(r=4, decompose_both=True),
            QV_LAYERS * (4 * 48 + 4 * 64),
            QV_LAYERS * (4 * 48 + 4 * 64) + HEAD,
        ),
        ("vera", None, QV_LAYERS * (D + 256), QV_LAYERS * (D + 256) + HEAD),  # b (768) and d (256) per Linear
        ("ia3", None, L_ * (D + D + M_), L_ * (D + D + M_) + HEAD),  # key, value outputs; fc2's 3072 inputs
        ("oft", None, QV_LAYERS * 24 * (32 * 31 // 2), QV_LAYERS * 24 * (32 * 31 // 2) + HEAD),  # 24 blocks of 32
        (
            "oft",
            methods.OftConfig(block_size=32, block_share=True),
            QV_LAYERS * 32 * 31 // 2,
            QV_LAYERS * 32 * 31 // 2 + HEAD,
        ),
        (
            "oft",
            methods.OftConfig(block_size=50),
            QV_LAYERS * 16 * (48 * 47 // 2),  # 50 -> nearest divisor 48
            QV_LAYERS * 16 * (48 * 47 // 2) + HEAD,
        ),
        # the vision PETL methods: counts as their papers' ViT-B/16 figures (without the head)
        ("ssf", None, 2 * (2 * D + L_ * (7 * D + M_)), 205_824 + HEAD),  # patch embed, final norm; per block 7d + m
        ("vpt-shallow", None, 5 * D, 5 * D + HEAD),
        ("vpt-deep", methods.VptDeepConfig(tokens=50), 460_800, 460_800 + HEAD),  # L·P·d
        # 2 adapters per block (2dr + r + d each) and, as in the paper, every LayerNorm (2·(2L + 1)·d)
        ("adapter", None, 313_536, 313_536 + (2 * L_ + 1) * 2 * D + HEAD),
        ("adaptformer", methods.AdaptFormerConfig(r=8), 156_768, 156_768 + HEAD),  # L·(2dr + r + d)
        ("repadapter", None, 239_808, 239_808 + HEAD),  # L·2·(dr + r + dr/g + d), r = 8, g = 2
        ("fact-tt", None, 21_504, 21_504 + HEAD),  # 2dr + 12·L·r², r = 8: 12 d×d slices per block
        ("fact-tk", methods.FactTkConfig(r=32), 86_528, 86_528 + HEAD),  # 2dr + r³ + 12·L·r
        ("hra", None, QV_LAYERS * D * 8, QV_LAYERS * D * 8 + HEAD),
        ("c3a", None, QV_LAYERS * D * D // 256, QV_LAYERS * D * D // 256 + HEAD),
        ("fourierft", None, QV_LAYERS * 1000, QV_LAYERS * 1000 + HEAD),
        ("vblora", None, QV_LAYERS * 4 * 2 * D + 256 * 256, QV_LAYERS * 4 * 2 * D + 256 * 256 + HEAD),
        ("randlora", None, QV_LAYERS * (32 * 24 + 24 * D), QV_LAYERS * (32 * 24 + 24 * D) + HEAD),  # k = 768/32
        ("miss", None, QV_LAYERS * 64 * D, QV_LAYERS * 64 * D + HEAD),
        ("shira", None, QV_LAYERS * 32 * 2 * D, QV_LAYERS * 32 * 2 * D + HEAD),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_vit_b_exact_numbers_of_more_methods(vit_b, method, cfg, added, trainable):
    assert BLOCK == 7_087_872 and HEAD == 77_669
    bd, got = assert_matches(vit_b, method, cfg or methods.get(method).config_cls(), C101, "meta")
    assert (bd.added, bd.trainable, bd.base) == (added, trainable, 85_876_325)
    assert (got["added"], got["trainable"]) == (added, trainable)


def test_vit_b_formula_strings_show_the_numbers(vit_b):
    lora = derive(vit_b, "lora", methods.LoraConfig(r=8, targets="q,v"), C101)
    text = {str(ln) for ln in lora.lines}
    assert "LoRA on query,value: L·2·r·(d+d) = 12·2·8·(768+768) = 294,912" in text
    assert "classifier copy (PEFT modules_to_save): d·C + C = 768·101 + 101 = 77,669" in text
    out = lora.format()
    for figure in ("85,876,325", "86,171,237", "372,581", "86,248,906", "0.4339 %"):
        assert figure in out
    assert any("counts the head twice" in n and "86,248,906" in n for n in lora.notes)

    head = derive(vit_b, "head", None, C101)
    assert "classifier: d·C + C = 768·101 + 101 = 77,669" in {str(ln) for ln in head.lines}
    assert not any("twice" in n for n in head.notes)  # no PEFT copy, no doubled head
    last = derive(vit_b, "last", methods.LastConfig(blocks=1), C101)
    assert "last 1 block: n·(4·d² + 2·d·m + m + 9·d) = 1·(4·768² + 2·768·3072 + 3072 + 9·768) = 7,087,872" in {
        str(ln) for ln in last.lines
    }


def test_vit_b_built_from_config_matches(vit_b):
    """The one full-size model built for real on the CPU (~86M parameters)."""
    bd, got = assert_matches(vit_b, "lora", methods.LoraConfig(r=8), C101)
    assert got["base"] == 85_876_325 and got["peft_all_params"] == 86_248_906
    assert theory.check(bd, got) == {
        "theory_trainable": 372_581,
        "theory_total": 86_171_237,
        "theory_match": True,
        "mismatches": [],
        "kind": "theory",
    }


@pytest.mark.parametrize(
    "name,total",
    [  # published totals with a 1000-class head (timm's counts)
        ("vit-tiny-patch16-224", 5_717_416),
        ("vit-small-patch16-224", 22_050_664),
        ("vit-base-patch16-224", 86_567_656),
        ("vit-large-patch16-224", 304_326_632),
        ("vit-huge-patch14-224", 632_045_800),
        ("deit-base-patch16-224", 86_567_656),
        # timm's distilled DeiT-B has a second 1000-class head (768·1000 + 1000) that DeiTForImageClassification lacks
        ("deit-base-distilled-patch16-224", 87_338_192 - 769_000),
    ],
)
def test_presets_reproduce_published_totals(name, total):
    assert derive(theory.load_config(name), "head", None, 1000).total == total


# ------------------------------------------------------------------ theory == measured on built models


@pytest.mark.parametrize(
    "preset,method,cfg,device",
    [
        ("vit-small-patch16-224", "last", methods.LastConfig(blocks=2, final_norm=True), "cpu"),
        ("vit-small-patch16-224", "lora", methods.LoraConfig(r=4, targets="all-linear", bias="all"), "cpu"),
        *[
            ("vit-small-patch16-224", "lora", methods.LoraConfig(r=r, targets="query,value"), "meta")
            for r in (1, 4, 8, 16, 64)
        ],
        ("vit-small-patch16-224", "lora", methods.LoraConfig(r=8, targets="k,o,fc2", bias="lora_only"), "meta"),
        ("vit-large-patch16-224", "lora", methods.LoraConfig(r=16, targets="all-linear", bias="lora_only"), "meta"),
        ("vit-large-patch16-224", "last", methods.LastConfig(blocks=24, final_norm=False), "meta"),
        ("vit-large-patch16-224", "full", methods.FullConfig(), "meta"),
        ("deit-small-patch16-224", "head", methods.HeadConfig(), "meta"),
        ("deit-small-distilled-patch16-224", "lora", methods.LoraConfig(r=8, targets="all-linear", bias="all"), "meta"),
        ("deit-small-distilled-patch16-224", "lora", methods.LoraConfig(r=2, targets="mlp", bias="lora_only"), "meta"),
        ("deit-base-distilled-patch16-224", "last", methods.LastConfig(blocks=3, final_norm=True), "meta"),
        ("deit-tiny-distilled-patch16-224", "full", methods.FullConfig(), "meta"),
        ("vit-small-patch16-224", "bitfit", methods.BitFitConfig(), "cpu"),
        ("vit-small-patch16-224", "dora", methods.DoraConfig(r=4, targets="all-linear", bias="all"), "cpu"),
        ("vit-small-patch16-224", "ia3", methods.Ia3Config(targets="all-linear", feedforward="mlp"), "meta"),
        ("vit-small-patch16-224", "oft", methods.OftConfig(block_size=24, targets="attention"), "meta"),
        (
            "vit-large-patch16-224",
            "adalora",
            methods.AdaLoraConfig(init_r=16, target_r=4, targets="all-linear"),
            "meta",
        ),
        ("vit-large-patch16-224", "lokr", methods.LokrConfig(r=8, targets="all-linear", decompose_both=True), "meta"),
        ("vit-large-patch16-224", "freeze-first", methods.FreezeFirstConfig(), "meta"),
        ("vit-huge-patch14-224", "layernorm", methods.LayerNormConfig(), "meta"),
        ("deit-small-distilled-patch16-224", "vera", methods.VeraConfig(r=64, targets="all-linear"), "meta"),
        ("deit-small-distilled-patch16-224", "loha", methods.LohaConfig(r=4, targets="mlp"), "meta"),
        ("deit-base-distilled-patch16-224", "rslora", methods.RsLoraConfig(r=16), "meta"),
        ("deit-base-distilled-patch16-224", "lora-all", methods.LoraAllConfig(bias="lora_only"), "meta"),
        ("vit-small-patch16-224", "boft", methods.BoftConfig(butterfly_factor=3, targets="all-linear"), "cpu"),
        ("vit-small-patch16-224", "fact-tk", methods.FactTkConfig(r=8), "meta"),
        ("deit-small-distilled-patch16-224", "ssf", methods.SsfConfig(), "meta"),
        ("deit-small-distilled-patch16-224", "vpt-deep", methods.VptDeepConfig(tokens=10), "meta"),
        ("vit-large-patch16-224", "repadapter", methods.RepAdapterConfig(r=16, groups=4), "meta"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_theory_matches_measured(preset, method, cfg, device):
    assert_matches(theory.load_config(preset), method, cfg, C101, device)


def test_bias_variants_on_qkv_without_bias():
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        image_size=16,
        patch_size=4,
        qkv_bias=False,
    )
    for bias in ("none", "all", "lora_only"):
        assert_matches(config, "lora", methods.LoraConfig(r=2, targets="query,value", bias=bias), 5)
    bd = derive(config, "lora", methods.LoraConfig(r=2, targets="query,value", bias="lora_only"), 5)
    assert [ln.count for ln in bd.lines if ln.part == "subset"] == [0]  # q/v have no bias to train


# ------------------------------------------------------------------ property: random small configs × methods

ROLES = ["query", "key", "value", "output", "fc1", "fc2"]


@st.composite
def small_configs(draw):
    heads = draw(st.integers(1, 4))
    d = heads * draw(st.integers(-(-8 // heads), 48 // heads))  # 8..48, divisible by heads
    patch = draw(st.sampled_from([2, 3, 4, 8]))
    kwargs = dict(
        hidden_size=d,
        num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 4)),
        intermediate_size=draw(st.integers(4, 64)),
        patch_size=patch,
        image_size=patch * draw(st.integers(1, 4)) + draw(st.integers(0, patch - 1)),
        num_channels=draw(st.integers(1, 3)),
        qkv_bias=draw(st.booleans()),
    )
    if draw(st.booleans()):  # attention width differs from the hidden width (head_dim set explicitly)
        kwargs["head_dim"] = draw(st.integers(2, 6))
    cls = draw(st.sampled_from([transformers.ViTConfig, transformers.DeiTConfig]))
    return cls(**kwargs)


TARGETS = st.one_of(
    st.just("all-linear"),
    st.sampled_from(["attention", "mlp", "q,v"]),
    st.lists(st.sampled_from(ROLES), min_size=1, max_size=6, unique=True).map(",".join),
)


def _lora_family(cls):
    return lambda layers: st.builds(
        cls, r=st.integers(1, 8), targets=TARGETS, bias=st.sampled_from(["none", "all", "lora_only"])
    )


@st.composite
def _ia3_options(draw, layers):
    targets = draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=6, unique=True))
    ff = draw(st.lists(st.sampled_from(targets), max_size=len(targets), unique=True))
    return methods.Ia3Config(targets=",".join(targets), feedforward=",".join(ff))


@st.composite
def _adalora_options(draw, layers):
    init_r = draw(st.integers(1, 8))
    return methods.AdaLoraConfig(init_r=init_r, target_r=draw(st.integers(1, init_r)), targets=draw(TARGETS))


# method -> (number of blocks -> strategy of its options); every registered method needs one (tested below)
OPTIONS = {
    "head": lambda layers: st.just(methods.HeadConfig()),
    "last": lambda layers: st.builds(methods.LastConfig, blocks=st.integers(1, layers), final_norm=st.booleans()),
    "freeze-first": lambda layers: st.builds(
        methods.FreezeFirstConfig, blocks=st.one_of(st.none(), st.integers(0, layers))
    ),
    "bitfit": lambda layers: st.just(methods.BitFitConfig()),
    "layernorm": lambda layers: st.just(methods.LayerNormConfig()),
    "lora": _lora_family(methods.LoraConfig),
    "lora-all": _lora_family(methods.LoraAllConfig),
    "rslora": _lora_family(methods.RsLoraConfig),
    "dora": _lora_family(methods.DoraConfig),
    "adalora": _adalora_options,
    "loha": lambda layers: st.builds(methods.LohaConfig, r=st.integers(1, 8), targets=TARGETS),
    "lokr": lambda layers: st.builds(
        methods.LokrConfig,
        r=st.integers(1, 32),
        targets=TARGETS,
        decompose_both=st.booleans(),
        decompose_factor=st.one_of(st.just(-1), st.integers(1, 16)),
    ),
    "vera": lambda layers: st.builds(methods.VeraConfig, r=st.integers(1, 64), targets=TARGETS),
    "ia3": _ia3_options,
    "oft": lambda layers: st.builds(
        methods.OftConfig, block_size=st.integers(1, 70), targets=TARGETS, block_share=st.booleans()
    ),
    "full": lambda layers: st.just(methods.FullConfig()),
}


def _space(space):
    if isinstance(space, methods.Choice):
        return st.sampled_from(space.values)
    if isinstance(space, methods.IntRange):
        return st.integers(space.low, space.high)
    return st.floats(space.low, space.high)


def method_options(name: str, layers: int):
    """Random options of a method: the strategy written here where there is one (wider than the tuner's),
    else drawn from the search space the method registers, so that every method gets the property test."""
    if name in OPTIONS:
        return OPTIONS[name](layers)
    m = methods.get(name)
    return st.builds(m.config_cls, **{k: _space(v) for k, v in m.search.items() if k != "lr"})


@pytest.mark.parametrize("method", list(methods.REGISTRY))
def test_every_search_space_gives_valid_options(method):
    """The tuner draws from these: every value of every searched option makes a valid configuration."""
    m = methods.get(method)
    assert "lr" in m.search and m.search["lr"].contains(m.config_cls().lr)
    for option, space in m.search.items():
        values = space.values if isinstance(space, methods.Choice) else (space.low, space.high)
        for v in values:
            assert m.config_cls(**{option: v}).options()[option] == v


@pytest.mark.parametrize("method", list(methods.REGISTRY))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_theory_equals_measured_on_random_small_vits(method, data):
    config = data.draw(small_configs())
    assert config.hidden_size % config.num_attention_heads == 0 and 8 <= config.hidden_size <= 48
    cfg = data.draw(method_options(method, config.num_hidden_layers))
    num_labels = data.draw(st.integers(2, 12))
    bd = derive(config, method, cfg, num_labels)
    got = measured(config, method, cfg, num_labels)
    assert (bd.trainable, bd.total) == (got["trainable"], got["total"]), bd.format()
    assert theory.check(bd, got)["theory_match"], bd.format()


# ------------------------------------------------------------------ structural, for other architectures


class ToyBlock(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.q, self.attn.k, self.attn.v = nn.Linear(d, d, bias=False), nn.Linear(d, d), nn.Linear(d, d)
        self.attn.proj = nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, m), nn.Linear(m, d)


class Toy(nn.Module):
    """Not a transformers model: timm-like names, a config-less nn.Module."""

    def __init__(self, d=16, m=24, layers=3, classes=7):
        super().__init__()
        self.config = type("Cfg", (), {"initializer_range": 0.02})()
        self.patch_embed = nn.Conv2d(3, d, 4, 4)
        self.blocks = nn.ModuleList([ToyBlock(d, m) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)


@pytest.mark.parametrize(
    "method,cfg",
    [
        ("head", None),
        ("full", None),
        ("last", methods.LastConfig(blocks=2, final_norm=True)),
        ("lora", methods.LoraConfig(r=3, targets="all-linear", bias="all")),
        ("lora", methods.LoraConfig(r=2, targets="q,k,fc1", bias="lora_only")),
        *[(name, None) for name in methods.REGISTRY if name not in ("head", "full")],
        ("dora", methods.DoraConfig(r=2, targets="all-linear")),
        ("ia3", methods.Ia3Config(targets="q,o,fc1,fc2", feedforward="mlp")),
        ("oft", methods.OftConfig(block_size=5, targets="all-linear")),
        ("lokr", methods.LokrConfig(r=1, targets="all-linear", decompose_both=True)),
        ("vera", methods.VeraConfig(r=7, targets="all-linear")),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_structural_counts_other_architectures(method, cfg):
    def fresh():
        model = Toy()
        models.fit_head(model, list("abcde"), seed=0)
        return model

    bd = structural(fresh(), method, cfg)
    assert bd.kind == "structural" and "Structural" in bd.format() and "Theory" not in bd.format()
    model = fresh()
    base = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = methods.get(method).apply(
            model, models.describe(model), cfg or methods.get(method).config_cls(), STEPS
        )
    result = theory.check(bd, measure.count_params(prepared.model, base))
    assert result["structural_match"] and result["kind"] == "structural", result
    assert not any(k.startswith("theory") for k in result)


def test_structural_agrees_with_theory_on_a_vit():
    config = transformers.ViTConfig(
        hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40, image_size=12, patch_size=4
    )
    model, _ = build(config, 9)
    for method, cfg in [
        ("last", methods.LastConfig(blocks=2)),
        ("lora", methods.LoraConfig(targets="all-linear")),
        *[(name, methods.get(name).config_cls()) for name in methods.REGISTRY],
    ]:
        s, t = structural(model, method, cfg), derive(config, method, cfg, 9)
        assert (s.base, s.added, s.total, s.trainable, s.peft_all_params) == (
            t.base,
            t.added,
            t.total,
            t.trainable,
            t.peft_all_params,
        )


def test_other_model_types_have_no_theory():
    config = transformers.Swinv2Config()
    assert not theory.supported(config) and theory.supported(theory.load_config(VIT_B))
    assert theory.supported(transformers.SwinConfig())  # theory/families.py
    with pytest.raises(UserError, match="structural"):
        derive(config, "head", None, 10)
    with pytest.raises(UserError, match="lacks hidden_size"):
        derive({"model_type": "vit"}, "head", None, 10)


# ------------------------------------------------------------------ check(), options, configs


def test_check_lists_mismatches_with_both_numbers(vit_b):
    bd = derive(vit_b, "head", None, C101)
    wrong = {
        "trainable": 1,
        "total": bd.total,
        "base": bd.base,
        "added": 0,
        "trainable_pct": 0.0,
        "peft_all_params": bd.total,
    }
    result = theory.check(bd, wrong)
    assert not result["theory_match"]
    assert result["mismatches"] == [{"what": "trainable", "theory": 77_669, "measured": 1}]


def test_bad_options_are_user_errors(vit_b):
    with pytest.raises(UserError, match="blocks"):
        derive(vit_b, "last", methods.LastConfig(blocks=13), C101)
    with pytest.raises(UserError, match="unknown target role"):
        derive(vit_b, "lora", methods.LoraConfig(targets="query,nope"), C101)
    with pytest.raises(UserError, match="LoraConfig"):
        derive(vit_b, "lora", methods.HeadConfig(), C101)
    with pytest.raises(UserError, match="freeze-first.blocks=13 but the model has 12 blocks"):
        derive(vit_b, "freeze-first", methods.FreezeFirstConfig(blocks=13), C101)
    with pytest.raises(UserError, match=r"ia3.feedforward must be among ia3.targets \(key, value\); not a target: fc2"):
        derive(vit_b, "ia3", methods.Ia3Config(targets="k,v", feedforward="fc2"), C101)


def test_a_mapping_config_works():
    bd = derive(
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "patch_size": 16,
            "image_size": 224,
            "num_channels": 3,
            "qkv_bias": True,
        },
        "head",
        None,
        C101,
    )
    assert bd.total == 85_876_325


def test_load_config_presets_and_aliases():
    for spec in (
        "vit-base-patch16-224",
        "VIT-BASE-PATCH16",
        "vit-base-patch16-224-in21k",
        VIT_B,
        "google/vit-base-patch16-224",
        "facebook/deit-base-patch16-224",
    ):
        c = theory.load_config(spec)
        assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.patch_size) == ("vit", 768, 12, 16), spec
    assert theory.load_config("facebook/deit-small-distilled-patch16-224").model_type == "deit"
    huge = theory.load_config("google/vit-huge-patch14-224-in21k")
    assert (huge.hidden_size, huge.num_hidden_layers, huge.patch_size, huge.intermediate_size) == (1280, 32, 14, 5120)
    with pytest.raises(UserError, match="vit-huge-patch14-224"):
        theory.load_config("vit-huge-patch16")


def test_load_config_files_folders_and_bundled(tmp_path, monkeypatch):
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=28,
        patch_size=4,
        num_channels=1,
    )
    folder = tmp_path / "model"
    config.save_pretrained(folder)
    for spec in (str(folder), str(folder / "config.json")):
        loaded = theory.load_config(spec)
        assert (loaded.hidden_size, loaded.num_channels, loaded.image_size) == (32, 1, 28)
    with pytest.raises(UserError, match="does not exist"):
        theory.load_config(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="without config.json"):
        theory.load_config(str(tmp_path))

    monkeypatch.setattr(models.loading, "BUNDLED_DIR", tmp_path / "bundled")
    with pytest.raises(UserError, match="bundled model"):
        theory.load_config("bundled")
    config.save_pretrained(tmp_path / "bundled")
    for spec in ("bundled", models.BUNDLED_NAME):
        assert theory.load_config(spec).hidden_size == 32


def test_breakdown_to_dict_is_json():
    bd = derive(theory.load_config(VIT_B), "lora", None, C101)
    data = json.loads(json.dumps(bd.to_dict()))
    assert data["kind"] == "theory" and data["peft_all_params"] == 86_248_906 and len(data["lines"]) == len(bd.lines)
