"""Each method trains exactly its own parameters; parameter counts on ViT-B/16 match the arithmetic."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from peftlab import methods as M
from peftlab.errors import UserError
from peftlab.measure import count_params
from peftlab.models import describe, load_model

LABELS = ["a", "b", "c"]

# Which parameters must get gradients, written from what each method is (not from its code).
# Names are those of a transformers-5 ViTForImageClassification, PEFT-wrapped for LoRA.
# arch gives only the number of blocks (the last block's index).
_LORA_QV = re.compile(r"^base_model\.model\.vit\.layers\.\d+\.attention\.(q_proj|v_proj)\.lora_[AB]\.default\.weight$")
_LORA_HEAD = re.compile(r"^base_model\.model\.classifier\.modules_to_save\.default\.(weight|bias)$")
EXPECTED = {
    "head": lambda name, arch: name in ("classifier.weight", "classifier.bias"),
    "last": lambda name, arch: name.startswith(f"vit.layers.{arch.num_blocks - 1}.")
    or name in ("classifier.weight", "classifier.bias"),
    "lora": lambda name, arch: bool(_LORA_QV.match(name) or _LORA_HEAD.match(name)),
    "full": lambda name, arch: True,
}


def test_every_registered_method_has_an_expected_gradient_set():
    missing = sorted(set(M.REGISTRY) - set(EXPECTED))
    assert not missing, f"add EXPECTED entries (which parameters train) for: {', '.join(missing)}"


def test_default_methods_are_registered():
    assert set(M.DEFAULT_METHODS) <= set(M.REGISTRY)


def _nonzero_lora_b(model: nn.Module) -> None:
    """LoRA's B starts at zero, so A's gradient is zero after one step; give B values so A's is not."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("method", list(M.REGISTRY))
def test_one_step_gives_gradients_exactly_to_the_methods_parameters(method, tiny_vit):
    if method not in EXPECTED:
        pytest.fail(f"no EXPECTED entry for method '{method}'")
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0)
    arch = describe(model)
    prepared = M.get(method).apply(model, arch, M.get(method).config_cls())
    pm = prepared.model
    _nonzero_lora_b(pm)
    pm.train()
    torch.manual_seed(1)
    out = pm(pixel_values=torch.randn(6, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    out.loss.backward()
    expected = {n for n, _ in pm.named_parameters() if EXPECTED[method](n, arch)}
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
    assert count_params(pm, sum(p.numel() for p in model.parameters()))["trainable"] == \
        sum(p.numel() for n, p in pm.named_parameters() if n in expected)


def test_lora_starts_as_the_base_model(tiny_vit):
    """B = 0 at init: the adapted model computes exactly what the base model does."""
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0).eval()
    x = torch.randn(4, 3, 16, 16)
    before = model(pixel_values=x).logits
    pm = M.get("lora").apply(model, describe(model), M.LoraConfig(targets="all-linear")).model.eval()
    b = [p for n, p in pm.named_parameters() if ".lora_B." in n]
    assert len(b) == 2 * 6 and all(torch.all(p == 0) for p in b)
    assert torch.allclose(pm(pixel_values=x).logits, before, atol=1e-6)
    _nonzero_lora_b(pm)
    assert not torch.allclose(pm(pixel_values=x).logits, before, atol=1e-4)


def test_lora_without_perturbation_gives_b_gradients_and_requires_grad_on_a(tiny_vit):
    """The honest first step: B (zero) gets a gradient, A gets zero gradient but is trainable."""
    torch.manual_seed(0)
    model = load_model(str(tiny_vit), LABELS, seed=0)
    pm = M.get("lora").apply(model, describe(model), M.LoraConfig(dropout=0.0)).model
    pm(pixel_values=torch.randn(6, 3, 16, 16), labels=torch.tensor([0, 1, 2, 0, 1, 2])).loss.backward()
    named = dict(pm.named_parameters())
    a = [p for n, p in named.items() if ".lora_A." in n]
    b = [p for n, p in named.items() if ".lora_B." in n]
    assert len(a) == len(b) == 4  # query and value in 2 blocks
    assert all(p.requires_grad and p.grad is not None and torch.all(p.grad == 0) for p in a)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in b)
    head = {n: p for n, p in named.items() if "classifier" in n and p.requires_grad}
    assert set(head) == {"base_model.model.classifier.modules_to_save.default.weight",
                         "base_model.model.classifier.modules_to_save.default.bias"}
    assert all(p.grad.abs().sum() > 0 for p in head.values())


def test_last_with_more_blocks_and_final_norm(tiny_vit):
    model = load_model(str(tiny_vit), LABELS)
    arch = describe(model)
    M.get("last").apply(model, arch, M.LastConfig(blocks=2, final_norm=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    want = {n for n, _ in model.named_parameters()
            if n.startswith(("vit.layers.0.", "vit.layers.1.", "vit.layernorm.", "classifier."))}
    assert trainable == want and "vit.embeddings.cls_token" not in trainable


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
        M.get("last").apply(model, describe(model), M.LastConfig(blocks=3))


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
    prepared = M.get(method).apply(model, describe(model), M.get(method).config_cls(**opts))
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
