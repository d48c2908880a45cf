"""Each method trains exactly its own parameters; parameter counts on ViT-B/16 match the arithmetic."""

from __future__ import annotations

import copy
import json
import re

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftlab import cli
from peftlab import methods as M
from peftlab.config import DEFAULT_METHODS
from peftlab.errors import UserError
from peftlab.models import BUNDLED_DIR, describe, load_model
from peftlab.runs.artifacts import save_trained_part
from peftlab.training.measure import count_params

from .helpers import FMNIST_OK

LABELS = ["a", "b", "c"]

STEPS = 10  # the planned optimizer steps every method function is told (AdaLoRA's schedule needs them)

# Which parameters must get gradients, written from what each method is (not from its code).
# Names are those of a transformers-5 ViTForImageClassification, PEFT-wrapped for the PEFT methods
# (adapter tensors inside the wrapped Linears, the head's trainable copy under modules_to_save).
# arch gives only the number of blocks.
_LORA_QV = re.compile(r"^base_model\.model\.vit\.layers\.\d+\.attention\.(q_proj|v_proj)\.lora_[AB]\.default\.weight$")
_LORA_HEAD = re.compile(r"^base_model\.model\.classifier\.modules_to_save\.default\.(weight|bias)$")
_QV = r"attention\.(q_proj|v_proj)"
_ALL_LINEAR = r"(attention\.(q_proj|k_proj|v_proj|o_proj)|mlp\.fc1|mlp\.fc2)"
_HEAD = ("classifier.weight", "classifier.bias")


def _peft(modules: str, tensors: str):
    """Adapter tensors in the given Linears of every block, or the head's trainable copy."""
    adapter = re.compile(rf"^base_model\.model\.vit\.layers\.\d+\.{modules}\.{tensors}$")
    return lambda name, arch: bool(adapter.match(name) or _LORA_HEAD.match(name))


_LN_COPY = re.compile(
    r"^base_model\.model\.vit\.(layers\.\d+\.layernorm_(before|after)|layernorm)"
    r"\.ln_tuning_layers\.default\.(weight|bias)$"
)
EXPECTED = {
    "head": lambda name, arch: name in _HEAD,
    "last": lambda name, arch: name.startswith(f"vit.layers.{arch.num_blocks - 1}.") or name in _HEAD,
    # default: the first half of the blocks (rounded down) frozen with the embeddings; the rest trains
    "freeze-first": lambda name, arch: (
        name.startswith(
            tuple(f"vit.layers.{i}." for i in range(arch.num_blocks // 2, arch.num_blocks)) + ("vit.layernorm.",)
        )
        or name in _HEAD
    ),
    "bitfit": lambda name, arch: name.endswith(".bias") or name in _HEAD,
    "layernorm": lambda name, arch: bool(_LN_COPY.match(name) or _LORA_HEAD.match(name)),
    "lora": lambda name, arch: bool(_LORA_QV.match(name) or _LORA_HEAD.match(name)),
    "lora-all": _peft(_ALL_LINEAR, r"lora_[AB]\.default\.weight"),
    "rslora": _peft(_QV, r"lora_[AB]\.default\.weight"),
    "dora": _peft(_QV, r"(lora_[AB]|lora_magnitude_vector)\.default\.weight"),
    "adalora": _peft(_QV, r"lora_[ABE]\.default"),  # P, Λ, Q; not the rank counter (ranknum)
    "loha": _peft(_QV, r"hada_w[12]_[ab]\.default"),
    "lokr": _peft(_QV, r"lokr_w[12](_[ab])?\.default"),  # W₁ and W₂ (each full or as a low-rank pair)
    "vera": _peft(_QV, r"vera_lambda_[bd]\.default"),  # not the shared random A, B
    "ia3": _peft(r"(attention\.(k_proj|v_proj)|mlp\.fc2)", r"ia3_l\.default"),
    "oft": _peft(_QV, r"oft_R\.default\.weight"),
    "full": lambda name, arch: True,
}

# Adapters that start as the identity have a zero factor, so on the very first step the factors
# multiplied by it get an exactly zero gradient (still trainable). Which ones, from each method's init:
FIRST_STEP_ZERO_GRAD = {
    "lora": r"\.lora_A\.",
    "lora-all": r"\.lora_A\.",
    "rslora": r"\.lora_A\.",
    "dora": r"\.lora_A\.",  # B = 0
    "loha": r"\.hada_w(1_a|1_b|2_a)\.",  # hada_w2_b = 0 makes the second factor, hence the product, zero
    "lokr": r"\.lokr_w2",  # W₁ = 0
    "vera": r"\.vera_lambda_d\.",  # b = 0
}


def test_default_methods_are_registered():
    assert set(DEFAULT_METHODS) <= set(M.REGISTRY)


def _nonzero_lora_b(model: nn.Module) -> None:
    """LoRA's B starts at zero, so A's gradient is zero after one step; give B values so A's is not."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)


def _nonzero_zero_inits(model: nn.Module) -> list[str]:
    """Give every all-zero trainable tensor values (as training soon would): LoRA's B, LoHa's hada_w2_b,
    LoKr's W₁, VeRA's b, AdaLoRA's Λ, OFT's rotations, the head's bias. Returns their names."""
    hit = []
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.1)
                hit.append(n)
    return hit


def _prepared(method: str, tiny_vit, cfg=None, steps: int = STEPS):
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0)
    arch = describe(model)
    return M.get(method).apply(model, arch, cfg or M.get(method).config_cls(), steps), arch, model


def _one_backward(pm: nn.Module) -> None:
    pm.train()
    torch.manual_seed(1)
    pm(pixel_values=torch.randn(6, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0, 1, 2])).loss.backward()


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_one_step_gives_gradients_exactly_to_the_methods_parameters(method, tiny_vit):
    """Gradients reach exactly the method's parameters: those EXPECTED says (written from the papers, for
    the methods listed there), else those the method made trainable; and always the new head."""
    prepared, arch, model = _prepared(method, tiny_vit)
    pm = prepared.model
    _nonzero_zero_inits(pm)
    _one_backward(pm)
    own = EXPECTED.get(method, lambda name, arch: pm.get_parameter(name).requires_grad)
    expected = {n for n, _ in pm.named_parameters() if own(n, arch)}
    assert expected, "the expectation matches no parameter: names changed?"
    # the head is new and random: every method must train it (both its weight and bias)
    assert sum("classifier" in n for n in expected) == 2, sorted(expected)
    wrong = []
    for n, p in pm.named_parameters():
        if n in expected:
            if not p.requires_grad or p.grad is None or not p.grad.abs().sum() > 0:
                wrong.append(f"{n}: expected a non-zero gradient")
        elif p.requires_grad or p.grad is not None:
            wrong.append(f"{n}: expected no gradient")
    assert not wrong, "\n".join(wrong)
    # the trainable count reported is the size of that set
    assert count_params(pm, sum(p.numel() for p in model.parameters()))["trainable"] == sum(
        p.numel() for n, p in pm.named_parameters() if n in expected
    )


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_first_step_without_perturbation(method, tiny_vit):
    """The honest first step: every parameter of the method is trainable and gets a gradient tensor;
    exactly those multiplied by a zero-initialised factor get an all-zero one."""
    prepared, arch, _ = _prepared(method, tiny_vit)
    pm = prepared.model
    _one_backward(pm)
    zero = re.compile(FIRST_STEP_ZERO_GRAD.get(method, r"^$"))
    own = EXPECTED.get(method, lambda name, arch: pm.get_parameter(name).requires_grad)
    wrong = []
    for n, p in pm.named_parameters():
        if not own(n, arch):
            continue
        if not p.requires_grad or p.grad is None:
            wrong.append(f"{n}: not trainable")
        elif method in EXPECTED and bool(zero.search(n)) != (not p.grad.any()):
            wrong.append(f"{n}: gradient {'non-zero' if p.grad.any() else 'zero'}, expected the opposite")
    assert not wrong, "\n".join(wrong)
    if method in FIRST_STEP_ZERO_GRAD:
        assert any(zero.search(n) for n, _ in pm.named_parameters()), "the zero-gradient pattern matches nothing"


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_every_method_starts_as_the_base_model(method, tiny_vit):
    """Adapters start as the identity and the head copy equals the head: same logits as before; a method
    that declares it does not (caps.identity_at_init False) indeed changes them."""
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0).eval()
    x = torch.randn(4, 3, 16, 16)
    before = model(pixel_values=x).logits
    pm = M.get(method).apply(model, describe(model), M.get(method).config_cls(), STEPS).model.eval()
    same = torch.allclose(pm(pixel_values=x).logits, before, atol=1e-5)
    assert same == M.get(method).caps.identity_at_init


def test_lora_starts_as_the_base_model(tiny_vit):
    """B = 0 at init: the adapted model computes exactly what the base model does."""
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0).eval()
    x = torch.randn(4, 3, 16, 16)
    before = model(pixel_values=x).logits
    pm = M.get("lora").apply(model, describe(model), M.LoraConfig(targets="all-linear"), STEPS).model.eval()
    b = [p for n, p in pm.named_parameters() if ".lora_B." in n]
    assert len(b) == 2 * 6 and all(torch.all(p == 0) for p in b)
    assert torch.allclose(pm(pixel_values=x).logits, before, atol=1e-6)
    _nonzero_lora_b(pm)
    assert not torch.allclose(pm(pixel_values=x).logits, before, atol=1e-4)


def test_lora_without_perturbation_gives_b_gradients_and_requires_grad_on_a(tiny_vit):
    """The honest first step: B (zero) gets a gradient, A gets zero gradient but is trainable."""
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0)
    pm = M.get("lora").apply(model, describe(model), M.LoraConfig(dropout=0.0), STEPS).model
    pm(pixel_values=torch.randn(6, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0, 1, 2])).loss.backward()
    named = dict(pm.named_parameters())
    a = [p for n, p in named.items() if ".lora_A." in n]
    b = [p for n, p in named.items() if ".lora_B." in n]
    assert len(a) == len(b) == 4  # query and value in 2 blocks
    assert all(p.requires_grad and p.grad is not None and torch.all(p.grad == 0) for p in a)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in b)
    head = {n: p for n, p in named.items() if "classifier" in n and p.requires_grad}
    assert set(head) == {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }
    assert all(p.grad.abs().sum() > 0 for p in head.values())


def test_last_with_more_blocks_and_final_norm(tiny_vit):
    model = load_model(str(tiny_vit), LABELS)
    arch = describe(model)
    M.get("last").apply(model, arch, M.LastConfig(blocks=2, final_norm=True), STEPS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    want = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("vit.layers.0.", "vit.layers.1.", "vit.layernorm.", "classifier."))
    }
    assert trainable == want and "vit.embeddings.cls_token" not in trainable


def test_full_with_layer_decay_trains_each_depth_at_its_own_lr_through_the_schedule(tiny_vit):
    """Layer-wise lr decay on the 2-block ViT at decay 0.5: embeddings at lr/8, block 0 at lr/4, block 1 at
    lr/2, the final norm and the head at lr; the cosine schedule scales every group alike, so the ratios hold."""
    from transformers import get_cosine_schedule_with_warmup

    from peftlab.training.loop import param_groups

    model = load_model(str(tiny_vit), LABELS)
    prepared = M.get("full").apply(model, describe(model), M.FullConfig(lr=0.01, layer_decay=0.5), STEPS)
    want = {"vit.embeddings.": 1 / 8, "vit.layers.0.": 1 / 4, "vit.layers.1.": 1 / 2, "vit.layernorm.": 1}
    for name, p in model.named_parameters():
        assert p.requires_grad
        k = next((v for q, v in want.items() if name.startswith(q)), 1 if name in _HEAD else None)
        assert prepared.lr_scale[name] == k, name
    groups = param_groups(model, 0.01, prepared.lr_scale)
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.01 / 8, 0.01 / 4, 0.01 / 2, 0.01])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 2, STEPS)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert 0 < lrs[-1] < 0.01 and lrs == pytest.approx([lrs[-1] / 8, lrs[-1] / 4, lrs[-1] / 2, lrs[-1]])
    plain = M.get("full").apply(load_model(str(tiny_vit), LABELS), describe(model), M.FullConfig(), STEPS)
    assert plain.lr_scale is None and len(param_groups(plain.model, 0.01, None)) == 1
    with pytest.raises(UserError, match=r"full\.layer_decay must be in \(0, 1\] \(got 1\.5\)"):
        M.FullConfig(layer_decay=1.5)
    with pytest.raises(UserError, match=r"full\.layer_decay must be in \(0, 1\] \(got 0\)"):
        M.FullConfig(layer_decay=0)


def test_method_option_checks(tiny_vit):
    with pytest.raises(UserError, match=r"lora\.r must be >= 1 \(got 0\)"):
        M.LoraConfig(r=0)
    with pytest.raises(UserError, match=r"lora\.dropout"):
        M.LoraConfig(dropout=1.0)
    with pytest.raises(UserError, match=r"lora\.bias"):
        M.LoraConfig(bias="some")
    with pytest.raises(UserError, match=r"last\.blocks must be >= 1"):
        M.LastConfig(blocks=0)
    with pytest.raises(UserError, match=r"head\.lr must be > 0"):
        M.HeadConfig(lr=0)
    model = load_model(str(tiny_vit), LABELS)
    with pytest.raises(UserError, match="last.blocks=3 but the model has 2 blocks"):
        M.get("last").apply(model, describe(model), M.LastConfig(blocks=3), STEPS)


@pytest.mark.parametrize(
    "cls,opts,message",
    [
        (M.DoraConfig, {"r": 0}, r"dora\.r must be >= 1 \(got 0\)"),  # the variants name themselves
        (M.RsLoraConfig, {"dropout": -0.1}, r"rslora\.dropout must be in \[0, 1\)"),
        (M.LoraAllConfig, {"bias": "x"}, r"lora-all\.bias must be none, all or lora_only \(got 'x'\)"),
        (M.FreezeFirstConfig, {"blocks": -1}, r"freeze-first\.blocks must be >= 0"),
        (M.AdaLoraConfig, {"target_r": 13}, r"adalora\.target_r must be in \[1, init_r=12\] \(got 13\)"),
        (M.AdaLoraConfig, {"tinit": 0.5, "tfinal": 0.5}, r"adalora\.tfinal must be in \[0, 1 - tinit\)"),
        (M.AdaLoraConfig, {"delta_t": 0}, r"adalora\.delta_t must be >= 1"),
        (M.AdaLoraConfig, {"orth_reg_weight": -1.0}, r"adalora\.orth_reg_weight must be >= 0"),
        (M.LohaConfig, {"r": 0}, r"loha\.r must be >= 1"),
        (M.LohaConfig, {"module_dropout": 1.0}, r"loha\.module_dropout must be in \[0, 1\)"),
        (M.LokrConfig, {"decompose_factor": 0}, r"lokr\.decompose_factor must be -1 or >= 1"),
        (M.VeraConfig, {"r": 0}, r"vera\.r must be >= 1"),
        (M.OftConfig, {"block_size": 0}, r"oft\.block_size must be >= 1"),
        (M.BitFitConfig, {"lr": -1.0}, r"bitfit\.lr must be > 0"),
        (M.LayerNormConfig, {"lr": 0.0}, r"layernorm\.lr must be > 0"),
        (M.Ia3Config, {"lr": 0.0}, r"ia3\.lr must be > 0"),
    ],
)
def test_more_option_checks(cls, opts, message):
    with pytest.raises(UserError, match=message):
        cls(**opts)


def test_options_checked_against_the_model(tiny_vit):
    for method, cfg, message in [
        ("freeze-first", M.FreezeFirstConfig(blocks=3), "freeze-first.blocks=3 but the model has 2 blocks"),
        ("ia3", M.Ia3Config(targets="q,v", feedforward="fc1"), r"ia3.feedforward must be among ia3.targets"),
        ("oft", M.OftConfig(targets="q,nope"), "unknown target role 'nope'"),
    ]:
        model = load_model(str(tiny_vit), LABELS)
        with pytest.raises(UserError, match=message):
            M.get(method).apply(model, describe(model), cfg, STEPS)
    model = load_model(str(tiny_vit), LABELS)
    with pytest.raises(UserError, match="adalora needs the planned number of optimizer steps"):
        M.get("adalora").apply(model, describe(model), M.AdaLoraConfig(), 0)


def test_freeze_first_options(tiny_vit):
    for blocks, trained_blocks in [(0, {0, 1}), (2, set()), (None, {1})]:
        model = load_model(str(tiny_vit), LABELS)
        M.get("freeze-first").apply(model, describe(model), M.FreezeFirstConfig(blocks=blocks), STEPS)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        want = {
            n
            for n, _ in model.named_parameters()
            if n.startswith(tuple(f"vit.layers.{i}." for i in trained_blocks) + ("vit.layernorm.", "classifier."))
        }
        assert trainable == want and not any(n.startswith("vit.embeddings.") for n in trainable)


def test_ia3_without_feedforward_scales_outputs_only(tiny_vit):
    model = load_model(str(tiny_vit), LABELS)
    pm = M.get("ia3").apply(model, describe(model), M.Ia3Config(targets="fc1,fc2", feedforward=""), STEPS).model
    shapes = {n.split(".")[-3]: tuple(p.shape) for n, p in pm.named_parameters() if ".ia3_l." in n}
    assert shapes == {"fc1": (64, 1), "fc2": (32, 1)}  # out_features of each: fc1 32->64, fc2 64->32


def test_parse_methods():
    assert M.parse_methods("head, lora") == ["head", "lora"]
    assert M.parse_methods("all") == list(M.REGISTRY)
    with pytest.raises(UserError, match="unknown method 'nope'; available: head"):
        M.parse_methods("head,nope")
    with pytest.raises(UserError, match="no methods given"):
        M.parse_methods(",")


# ---------------------------------------------------------------- ViT-B/16 with 101 labels
# Arithmetic: a ViT-B block has 4 attention Linears 768x768 (+bias), an MLP 768->3072->768, 2 LayerNorms.
D, MLP, BLOCKS, CLASSES = 768, 3072, 12, 101
BLOCK = 4 * (D * D + D) + (D * MLP + MLP) + (MLP * D + D) + 2 * 2 * D
EMBED = 3 * 16 * 16 * D + D + D + (14 * 14 + 1) * D  # patch conv + bias, cls token, position embeddings
HEAD = D * CLASSES + CLASSES
BASE = EMBED + BLOCKS * BLOCK + 2 * D + HEAD  # + final LayerNorm
LORA_QV_R8 = BLOCKS * 2 * 8 * (D + D)


@pytest.fixture(scope="module")
def vit_b16():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(num_labels=CLASSES))
    model.requires_grad_(False)  # nothing is trained here; keeps deepcopy cheap
    return model


def _counts(vit_b16, method: str, **opts) -> dict:
    model = copy.deepcopy(vit_b16)
    base = sum(p.numel() for p in model.parameters())
    prepared = M.get(method).apply(model, describe(model), M.get(method).config_cls(**opts), 100)
    return count_params(prepared.model, base)


def test_vit_b16_arithmetic_matches_the_issue():
    # the figures the issue states; checks the arithmetic above, not the code
    assert BASE == 85_876_325 and HEAD == 77_669
    assert LORA_QV_R8 + HEAD == 372_581 and BLOCK + HEAD == 7_165_541


def test_vit_b16_base_and_head(vit_b16):
    assert sum(p.numel() for p in vit_b16.parameters()) == BASE
    c = _counts(vit_b16, "head")
    assert c["trainable"] == HEAD == 77_669
    assert c["total"] == c["base"] == c["peft_all_params"] == 85_876_325 and c["added"] == 0
    assert c["trainable_pct"] == pytest.approx(100 * 77_669 / 85_876_325)


def test_vit_b16_last_block(vit_b16):
    c = _counts(vit_b16, "last")
    assert c["trainable"] == BLOCK + HEAD == 7_165_541
    assert c["total"] == 85_876_325


def test_vit_b16_full(vit_b16):
    c = _counts(vit_b16, "full")
    assert c["trainable"] == c["total"] == 85_876_325


def test_vit_b16_lora_r8_query_value(vit_b16):
    c = _counts(vit_b16, "lora", r=8, targets="query,value")
    assert c["trainable"] == LORA_QV_R8 + HEAD == 372_581
    assert c["total"] == BASE + LORA_QV_R8 == 86_171_237
    assert c["added"] == LORA_QV_R8
    # PEFT's own "all params" counts the head twice (frozen original + trainable copy)
    assert c["peft_all_params"] == BASE + LORA_QV_R8 + HEAD == 86_248_906
    assert c["trainable_pct"] == pytest.approx(100 * 372_581 / 85_876_325)


# ---------------------------------------------------------------- save -> reload, AdaLoRA's schedule
def _train_a_little(prepared, steps: int) -> None:
    """A few AdamW steps on random data after perturbing every trainable tensor (so nothing is at its
    init), calling the method's hook as the training loop does."""
    pm = prepared.model
    params = [p for p in pm.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    opt = torch.optim.AdamW(params, lr=1e-2)
    pm.train()
    torch.manual_seed(2)
    for step in range(1, steps + 1):
        pm(pixel_values=torch.randn(6, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0, 1, 2])).loss.backward()
        opt.step()
        if prepared.after_step:
            prepared.after_step(step, steps)
        opt.zero_grad(set_to_none=True)
    pm.eval()


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_saved_part_reloads_to_identical_logits(method, tiny_vit, tmp_path):
    steps = 5
    prepared, _, _ = _prepared(method, tiny_vit, steps=steps)
    _train_a_little(prepared, steps)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        want = prepared.model(pixel_values=x).logits
    adapter = tmp_path / "adapter"
    assert save_trained_part(prepared.model, adapter) > 0
    fresh = load_model(str(tiny_vit), LABELS, seed=1234).eval()  # another head: the saved one must replace it
    with torch.no_grad():
        assert not torch.allclose(fresh(pixel_values=x).logits, want, atol=1e-3)
    if (adapter / "adapter_config.json").exists():
        reloaded = peft.PeftModel.from_pretrained(fresh, str(adapter)).eval()
    else:  # as runs.artifacts.load_run: the method's modules on a fresh base (random), then its saved tensors
        fresh = M.get(method).apply(fresh, describe(fresh), M.get(method).config_cls(), steps).model.eval()
        tensors = load_file(str(adapter / "trainable.safetensors"))
        missing, unexpected = fresh.load_state_dict(tensors, strict=False)
        assert not unexpected and set(tensors) | set(missing) == set(fresh.state_dict())
        reloaded = fresh
    with torch.no_grad():
        got = reloaded(pixel_values=x).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_adalora_schedule_runs_through_the_hook_and_prunes_to_the_budget(tiny_vit):
    """update_and_allocate runs from Prepared.after_step: by the end the ranks sum to target_r per Linear."""
    steps = 6
    cfg = M.AdaLoraConfig(init_r=6, target_r=2, tinit=0.2, tfinal=0.3)  # prune during steps 2..4 of 6
    prepared, _, _ = _prepared("adalora", tiny_vit, cfg, steps=steps)
    pm = prepared.model
    assert prepared.after_step is not None
    assert pm.peft_config["default"].total_step == steps
    assert (pm.peft_config["default"].tinit, pm.peft_config["default"].tfinal) == (1, 1)
    with pytest.raises(RuntimeError, match="prepared for 6 optimizer steps but training runs 7"):
        prepared.after_step(1, steps + 1)
    _train_a_little(prepared, steps)
    pattern = pm.peft_config["default"].rank_pattern
    assert pattern and len(pattern) == 4  # query and value in 2 blocks
    assert sum(sum(mask) for mask in pattern.values()) == 2 * 4
    kept = sum(int((p != 0).sum()) for n, p in pm.named_parameters() if ".lora_E." in n)
    assert kept == 2 * 4  # the pruned singular values are zero


def test_every_method_gets_the_planned_steps():
    import inspect

    for name, m in M.REGISTRY.items():
        assert list(inspect.signature(m.apply).parameters)[-1] == "total_steps", name


# ---------------------------------------------------------------- every method learns the bundled task
_BUNDLED_READY = (BUNDLED_DIR / "model.safetensors").exists() and FMNIST_OK


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    """One `peftlab run --methods all` on the bundled model and Fashion-MNIST 5-9 with each method's default
    options: 300 train / 100 eval images, 2 epochs of batches of 32 (20 steps); ~50 s on 2 CPU cores."""
    if not _BUNDLED_READY:
        pytest.skip(
            "bundled model or Fashion-MNIST missing ('peftlab pretrain'; apt-get install dataset-fashion-mnist)"
        )
    out = tmp_path_factory.mktemp("bundled-all")
    rc = cli.main(
        [
            "run",
            "--methods",
            "all",
            "--train-size",
            "300",
            "--val-size",
            "100",
            "--test-size",
            "100",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    return out


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_every_method_learns_the_bundled_task(method, bundled_run):
    r = json.loads((bundled_run / f"{method}-seed0" / "result.json").read_text())
    m, p = r["metrics"], r["params"]
    assert r["status"] == "ok" and p["theory_match"], p["mismatches"]
    start, test = m["val"]["start_accuracy"], m["test"]["accuracy"]
    assert test > start + 0.1, (start, test)
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]


def test_cpu_dropout_is_dropout():
    """The faster CPU mask drops each element independently with probability ~p and keeps the mean."""
    d = M.CpuDropout(0.1).train()
    x = torch.ones(1_000_000, requires_grad=True)
    torch.manual_seed(0)
    y = d(x)
    t = round(0.1 * 65536)
    dropped = (y == 0).float()
    assert abs(dropped.mean().item() - t / 65536) < 0.0015  # 5 binomial standard deviations
    assert y.detach().unique().tolist() == [0.0, pytest.approx(65536 / (65536 - t))]
    assert abs(y.mean().item() - 1) < 0.0017
    pairs = dropped.view(-1, 2)  # neighbours share a 64-bit draw: still independent
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item() - (t / 65536) ** 2) < 0.002
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(d(x), y)  # seeded by torch.manual_seed
    assert torch.equal(d.eval()(x), x)


def test_lora_branch_dropout_uses_the_cpu_mask(tiny_vit):
    model = load_model(str(tiny_vit), LABELS, seed=0)
    pm = M.get("lora").apply(model, describe(model), M.LoraConfig(), STEPS).model
    drops = [m for n, m in pm.named_modules() if ".lora_dropout." in n]
    assert len(drops) == 4 and all(type(m) is M.CpuDropout and m.p == 0.1 for m in drops)
    model = load_model(str(tiny_vit), LABELS, seed=0)
    pm = M.get("lora").apply(model, describe(model), M.LoraConfig(dropout=0.0), STEPS).model
    assert not any(type(m) is M.CpuDropout for m in pm.modules())


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_trimmed_last_block_is_the_same_function_for_every_method(method, tiny_vit):
    """The [CLS]-row last block (train.py trims it for every method) gives the same logits, the same
    loss and the same gradients, to the same parameters, as the whole block (eval mode: no dropout).
    Methods that add tokens (VPT) included: the last block then reads N + P tokens, [CLS] still first."""
    from peftlab.training.fastpaths import trim_last_block

    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0)
    pm = M.get(method).apply(model, describe(model), M.get(method).config_cls(), STEPS).model.eval()
    _nonzero_zero_inits(pm)  # every adapter's branch must count in the comparison
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    tokens = []  # what the last block reads (after the method's own pre-hooks)
    seen = pm.get_submodule(describe(pm).blocks[-1]).register_forward_pre_hook(
        lambda m, args: tokens.append(args[0].shape[1])
    )
    pm(pixel_values=x)
    seen.remove()
    assert (tokens[0] > 1 + 4) == (not M.get(method).caps.keeps_tokens), tokens  # 4 patches + [CLS]

    def step():
        loss = pm(pixel_values=x, labels=y).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in pm.named_parameters() if p.grad is not None}
        pm.zero_grad(set_to_none=True)
        return pm(pixel_values=x).logits.detach(), loss.detach(), grads

    whole = step()
    restore = trim_last_block(pm, lambda: True)
    assert restore is not None
    trimmed = step()
    restore()
    assert torch.allclose(trimmed[0], whole[0], atol=1e-5) and torch.allclose(trimmed[1], whole[1], atol=1e-6)
    assert trimmed[2].keys() == whole[2].keys() and len(whole[2]) > 0
    assert all(torch.allclose(trimmed[2][n], whole[2][n], atol=1e-5) for n in whole[2])
    assert torch.equal(step()[0], whole[0])  # restored: the block's own forward again


# ---------------------------------------------------------------- merging, and what some methods do specially
@pytest.mark.parametrize("method", [n for n, m in M.REGISTRY.items() if m.caps.mergeable])
def test_merged_model_is_the_base_architecture_with_the_same_logits(method, tiny_vit):
    """Every mergeable method folds into plain base weights (PEFT's merge_and_unload, a hand-written method's
    own fold, nothing for those that add nothing): the base model's parameters, the trained model's logits."""
    steps = 5
    prepared, _, _ = _prepared(method, tiny_vit, steps=steps)
    _train_a_little(prepared, steps)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        want = prepared.model(pixel_values=x).logits
    merged = M.get(method).merged(prepared.model).eval()
    base = load_model(str(tiny_vit), LABELS, seed=0)
    assert type(merged) is type(base)
    assert {n: p.shape for n, p in merged.named_parameters()} == {n: p.shape for n, p in base.named_parameters()}
    assert not merged._forward_hooks and not any(m._forward_hooks or m._forward_pre_hooks for m in merged.modules())
    with torch.no_grad():
        got = merged(pixel_values=x).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("method", [n for n, m in M.REGISTRY.items() if not m.caps.mergeable])
def test_methods_that_do_not_merge_say_what_they_keep(method, tiny_vit):
    prepared, _, _ = _prepared(method, tiny_vit)
    with pytest.raises(UserError, match=rf"method '{method}' does not merge into the base weights \(\+"):
        M.get(method).merged(prepared.model)


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_puts_prompts_after_cls_in_the_blocks_it_says(deep, tiny_vit):
    """Shallow: P prompts inserted after [CLS] at the first block's input, then carried along; deep: the
    prompt positions of every block's input are that block's own prompts. [CLS] stays at position 0."""
    name = "vpt-deep" if deep else "vpt-shallow"
    prepared, arch, _ = _prepared(name, tiny_vit, M.get(name).config_cls(tokens=3))
    pm = prepared.model.eval()
    seen = []  # (block, its input) after the method's pre-hook
    for i, block in enumerate(pm.get_submodule(b) for b in describe(pm).blocks):
        block.register_forward_pre_hook(lambda m, args, i=i: seen.append((i, args[0].detach().clone())))
    emb = []
    pm.vit.embeddings.register_forward_hook(lambda m, args, out: emb.append(out.detach()))
    with torch.no_grad():
        pm(pixel_values=torch.randn(2, 3, 16, 16))
    assert [h.shape[1] for _, h in seen] == [1 + 3 + 4] * arch.num_blocks  # [CLS] + P + 4 patches everywhere
    prompts = {n: p for n, p in pm.named_parameters() if ".vpt." in n}
    assert set(prompts) == {f"vit.layers.{i}.vpt.prompts" for i in range(arch.num_blocks if deep else 1)}
    i0, h0 = seen[0]
    assert torch.equal(h0[:, 0], emb[0][:, 0]) and torch.equal(h0[:, 4:], emb[0][:, 1:])  # [CLS], patches unmoved
    assert torch.equal(h0[0, 1:4], prompts["vit.layers.0.vpt.prompts"])
    if deep:
        assert torch.equal(seen[1][1][1, 1:4], prompts["vit.layers.1.vpt.prompts"])  # replaced, not appended
    else:
        assert not torch.equal(seen[1][1][0, 1:4], prompts["vit.layers.0.vpt.prompts"])  # carried through block 0


def test_no_prefix_cache_for_a_method_that_adds_tokens(tiny_vit, image_folder):
    """The prefix cache follows the method's capabilities, not only requires_grad: with keeps_tokens False
    nothing is cached even when every block is frozen."""
    import dataclasses

    from peftlab.config import TrainConfig
    from peftlab.models import image_spec
    from peftlab.training import data_path, make_accelerator

    from .helpers import load_task

    model = load_model(str(tiny_vit), LABELS, seed=0)
    spec = image_spec(str(tiny_vit), model.config)
    task = load_task(image_folder, spec, min_per_class=1, warn=lambda s: None)
    prepared = M.get("head").apply(model, describe(model), M.HeadConfig(), STEPS)
    acc = make_accelerator("cpu", "fp32")
    assert data_path(model, task, spec, TrainConfig(), acc, 0, prepared.caps).info["path"].startswith("cached prefix")
    adds_tokens = dataclasses.replace(prepared.caps, keeps_tokens=False)
    path = data_path(model, task, spec, TrainConfig(), acc, 0, adds_tokens)
    assert path.info["path"] == "full"
    if path.restore:
        path.restore()


def test_boft_uses_the_butterfly_factor_it_is_given_on_any_machine(tiny_vit, recwarn):
    """PEFT builds a CUDA extension for BOFT's block-diagonal matrices and, where that fails, silently uses
    one butterfly factor; peftlab gives it the same function in plain torch: m factors, no compiling."""
    from peft.tuners.boft import layer

    from peftlab.methods.orthogonal import boft_factors

    prepared, _, _ = _prepared("boft", tiny_vit, M.BoftConfig(block_size=4, butterfly_factor=2))
    shapes = {tuple(p.shape) for n, p in prepared.model.named_parameters() if ".boft_R." in n}
    assert shapes == {(2, 32 // 4, 4, 4)}  # m = 2 factors of 8 blocks of 4x4 on the 32-wide q and v inputs
    assert not any("CUDA extension" in str(w.message) for w in recwarn)
    assert layer.get_fbd_cuda() is M.peftwrap.TorchBlockDiag
    blocks = torch.randn(2, 3, 4, 4, requires_grad=True)
    dense = layer.FastBlockDiag.apply(blocks)
    assert torch.equal(dense, torch.stack([torch.block_diag(*b) for b in blocks]))
    dense.mul(torch.randn_like(dense)).sum().backward()
    assert blocks.grad.shape == blocks.shape
    # fitted to the widths: b divides them, m lowered only where no b allows m factors
    assert boft_factors([32], 4, 2) == (4, 2) and boft_factors([48, 32], 5, 2) == (4, 2)
    assert boft_factors([12], 8, 3) == (6, 2) and boft_factors([9], 4, 2) == (3, 1)


@pytest.mark.parametrize("method", ["ssf", "repadapter"])
def test_a_fold_that_adds_qkv_biases_saves_a_model_that_loads_them(method, tmp_path):
    """SSF's shifts after q, k, v and RepAdapter's offsets become biases: a model built without q/k/v biases
    (qkv_bias False) gets them, and says so in its config, so the saved merged model loads them back."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, image_size=8,
        patch_size=4, qkv_bias=False, num_labels=3,
    )  # fmt: skip
    model = ViTForImageClassification(config)
    prepared = M.get(method).apply(model, describe(model), M.get(method).config_cls(), STEPS)
    prepared.model.eval()  # the adapter's dropout too
    _nonzero_zero_inits(prepared.model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = prepared.model(pixel_values=x).logits
    merged = M.get(method).merged(prepared.model)
    assert merged.config.qkv_bias is True and merged.vit.layers[0].attention.q_proj.bias is not None
    merged.save_pretrained(tmp_path)
    back = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(back(pixel_values=x).logits, want, atol=1e-5)


@pytest.mark.parametrize("name", list(M.REGISTRY))
def test_the_readme_methods_table_shows_the_registered_defaults(name):
    """The README's Methods table names every option of every method with the default the config dataclass has
    (the four tuned learning rates went stale there once)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    row = re.search(r"^\| `" + re.escape(name) + r"` \|.*$", readme, re.M)
    assert row, f"README: no row for {name}"
    for option, value in M.REGISTRY[name].config_cls().options().items():
        flag = f"`--{name}-{option.replace('_', '-')}` ("
        assert flag in row.group(0), f"README row of {name} lacks {flag}"
        shown = row.group(0).split(flag, 1)[1].split(")", 1)[0]
        if not isinstance(value, (list, tuple)):
            assert shown == str(value), f"README: {name}.{option} shown as {shown}, registered {value}"
