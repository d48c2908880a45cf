"""Loading a saved model through the real --model path, fitting its head, and finding its parts by role."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from peftlab import models
from peftlab.errors import Unsupported, UserError
from peftlab.models import describe, image_spec, load_model
from peftlab.runs.worker import _model_config

from .conftest import save_tiny_vit

# ---------------------------------------------------------------- a model with the older naming
# transformers < 5 named ViT's parts vit.encoder.layer.N.{attention.attention.query, attention.output.dense,
# intermediate.dense, output.dense}. Built by hand here, with the same tree and a forward pass.
OLD_ROLES = {
    "query": "attention.attention.query",
    "key": "attention.attention.key",
    "value": "attention.attention.value",
    "output": "attention.output.dense",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
}
NEW_ROLES = {
    "query": "attention.q_proj",
    "key": "attention.k_proj",
    "value": "attention.v_proj",
    "output": "attention.o_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}


class _Holder(nn.Module):
    def __init__(self, **children):
        super().__init__()
        for k, v in children.items():
            setattr(self, k, v)


class OldLayer(nn.Module):
    def __init__(self, d: int, with_key: bool = True):
        super().__init__()
        self_attn = _Holder(
            query=nn.Linear(d, d), value=nn.Linear(d, d), **({"key": nn.Linear(d, d)} if with_key else {})
        )
        self.attention = _Holder(attention=self_attn, output=_Holder(dense=nn.Linear(d, d)))
        self.intermediate = _Holder(dense=nn.Linear(d, 2 * d))
        self.output = _Holder(dense=nn.Linear(2 * d, d))
        self.layernorm_before = nn.LayerNorm(d)
        self.layernorm_after = nn.LayerNorm(d)

    def forward(self, x):
        a = self.attention.attention
        h = self.layernorm_before(x)
        k = a.key(h) if hasattr(a, "key") else h
        x = x + self.attention.output.dense(a.value(h) * torch.sigmoid(a.query(h) * k))
        return x + self.output.dense(torch.relu(self.intermediate.dense(self.layernorm_after(x))))


class OldViT(nn.Module):
    """vit.embeddings / vit.encoder.layer[N] / vit.layernorm / classifier, as in transformers 4."""

    def __init__(self, d: int = 8, blocks: int = 3, classes: int = 3, with_key: bool = True):
        super().__init__()
        # a shorter ModuleList elsewhere: the blocks are the longest one
        embeddings = _Holder(parts=nn.ModuleList([nn.Linear(4, d)]))
        encoder = _Holder(layer=nn.ModuleList([OldLayer(d, with_key) for _ in range(blocks)]))
        self.vit = _Holder(embeddings=embeddings, encoder=encoder, layernorm=nn.LayerNorm(d))
        self.classifier = nn.Linear(d, classes)

    def forward(self, x):
        x = self.vit.embeddings.parts[0](x)
        for layer in self.vit.encoder.layer:
            x = layer(x)
        return self.classifier(self.vit.layernorm(x))


def tiny_new_vit(layers: int = 2):
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(
        ViTConfig(
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=16,
            patch_size=8,
            num_labels=3,
        )
    )


def lora_wrapped(model: nn.Module, target_regex: str) -> set[str]:
    """Names (relative to the base model) of the modules PEFT wraps with LoRA for this regex."""
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=target_regex, modules_to_save=["classifier"]))
    prefix = "base_model.model."
    return {n[len(prefix) :] for n, m in pm.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}


# ---------------------------------------------------------------- loading through --model
def test_load_model_fits_head_and_labels(tiny_vit):
    labels = ["ant", "bee", "cat", "dog", "eel"]
    model = load_model(str(tiny_vit), labels, seed=3)
    assert isinstance(model.classifier, nn.Linear)
    assert (model.classifier.in_features, model.classifier.out_features) == (32, 5)
    assert model.config.num_labels == 5 and model.num_labels == 5
    assert model.config.id2label == dict(enumerate(labels))
    assert model.config.label2id == {n: i for i, n in enumerate(labels)}
    # the backbone is the saved one, untouched (transformers 5 renames on save, so compare loaded models;
    # the file holds one tensor per backbone parameter, under whichever naming)
    from transformers import ViTForImageClassification

    saved = ViTForImageClassification.from_pretrained(tiny_vit).state_dict()
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("vit.")]
    assert len(backbone) == len([k for k in load_file(str(tiny_vit / "model.safetensors")) if k.startswith("vit.")])
    assert all(torch.equal(state[k], saved[k]) for k in backbone)
    # the head is new: seeded, small, zero bias
    assert torch.all(model.classifier.bias == 0)
    assert 0 < model.classifier.weight.abs().max() <= 2 * model.config.initializer_range + 1e-9
    again = load_model(str(tiny_vit), labels, seed=3)
    other = load_model(str(tiny_vit), labels, seed=4)
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    assert not torch.equal(other.classifier.weight, model.classifier.weight)
    logits = model(pixel_values=torch.zeros(2, 3, 16, 16)).logits
    assert logits.shape == (2, 5)


def test_load_model_keeps_label_count_of_two(tiny_vit):
    model = load_model(str(tiny_vit), ["no", "yes"])
    assert model.classifier.out_features == 2 and model.config.id2label == {0: "no", 1: "yes"}


def test_image_spec_reads_the_processor(tiny_vit):
    spec = image_spec(str(tiny_vit), _model_config(str(tiny_vit)))
    assert (spec.height, spec.width, spec.channels) == (16, 16, 3)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)
    assert spec.rescale == pytest.approx(1 / 255)
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = spec.normalize(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0], torch.full((3, 2, 2), -2.0)) and torch.allclose(out[1], torch.full((3, 2, 2), 2.0))
    f = x.float()
    assert torch.equal(spec.normalize(f), out) and torch.equal(f, x.float())  # float input: the caller's is kept


def test_image_spec_one_channel_model(tmp_path):
    folder = save_tiny_vit(tmp_path / "gray", channels=1, image=24)
    spec = image_spec(str(folder), _model_config(str(folder)))
    assert (spec.height, spec.width, spec.channels) == (24, 24, 1)
    assert spec.mean == (0.5,) and spec.std == (0.25,)


def test_image_spec_without_processor_warns_and_is_recorded(tiny_vit, image_folder, tmp_path, capsys):
    import shutil

    from peftlab import cli

    folder = tmp_path / "no-processor"
    shutil.copytree(tiny_vit, folder)
    (folder / "preprocessor_config.json").unlink()
    spec = image_spec(str(folder), _model_config(str(folder)))
    assert spec.mean == (0.5,) * 3 and spec.std == (0.5,) * 3 and (spec.height, spec.width) == (16, 16)
    assert "no image processor could be read" in spec.fallback
    assert spec == models.ImageSpec(16, 16, 3, (0.5,) * 3, (0.5,) * 3)  # the warning is not part of its identity
    assert (
        cli.main(
            [
                "run",
                "--model",
                str(folder),
                "--dataset",
                str(image_folder),
                "--out",
                str(tmp_path / "o"),
                "--methods",
                "head",
                "--epochs",
                "1",
                "--train-size",
                "0",
                "--test-size",
                "0",
                "--min-per-class",
                "1",
            ]
        )
        == 0
    )
    assert "WARNING no image processor could be read" in capsys.readouterr().out
    norm = json.loads((tmp_path / "o" / "head-seed0" / "result.json").read_text())["data"]["normalization"]
    assert norm["mean"] == [0.5] * 3 and norm["from"].startswith("defaults: no image processor")


def test_bundled_name_resolves_to_package_folder():
    assert models.resolve_model_path(models.BUNDLED_NAME) == str(models.BUNDLED_DIR)
    assert models.resolve_model_path("bundled") == str(models.BUNDLED_DIR)
    assert models.resolve_model_path("org/some-model") == "org/some-model"


def test_load_model_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"), ["a", "b"])


def test_load_model_folder_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot load model"):
        load_model(str(tmp_path / "empty"), ["a", "b"])


# ---------------------------------------------------------------- describe: both namings
def rel_roles(arch) -> dict[str, str]:
    """role -> its module's path relative to its block (the first block's)."""
    return {r: ps[0].path.removeprefix(arch.blocks[ps[0].block] + ".") for r, ps in arch.roles.items()}


def test_describe_transformers5_vit():
    arch = describe(tiny_new_vit(layers=2))
    assert arch.family == "vit" and arch.flat == "vit.layers" and arch.num_blocks == 2
    assert arch.heads == ("classifier",) and arch.final_norm == "vit.layernorm"
    assert rel_roles(arch) == NEW_ROLES and all(len(ps) == 2 for ps in arch.roles.values())
    assert arch.block_names() == ["vit.layers.0", "vit.layers.1"]


def test_describe_older_naming():
    model = OldViT(blocks=3)
    arch = describe(model)
    assert arch.family == "generic" and "OldLayer" in arch.note and "vit.encoder.layer" in arch.note
    assert arch.flat == "vit.encoder.layer" and arch.num_blocks == 3
    assert arch.heads == ("classifier",) and arch.final_norm == "vit.layernorm"
    assert rel_roles(arch) == OLD_ROLES
    for role, rel in OLD_ROLES.items():  # each path names a real Linear in every block
        for block in arch.block_names():
            assert isinstance(model.get_submodule(f"{block}.{rel}"), nn.Linear), role


ROLE_SPECS = [
    ["query"],
    ["key"],
    ["value"],
    ["output"],
    ["fc1"],
    ["fc2"],
    ["query", "value"],
    ["output", "fc2"],
    ["all-linear"],
    ["attention"],
    ["mlp"],
]


@pytest.mark.parametrize("spec", ROLE_SPECS, ids=",".join)
@pytest.mark.parametrize("naming", ["old", "new"])
def test_target_regex_wraps_exactly_the_role_modules(naming, spec):
    model, names, blocks = (
        (OldViT(blocks=3), OLD_ROLES, "vit.encoder.layer")
        if naming == "old"
        else (tiny_new_vit(layers=3), NEW_ROLES, "vit.layers")
    )
    arch = describe(model)
    roles = arch.resolve_roles(spec)
    groups = {"all-linear": list(names), "attention": ["query", "key", "value", "output"], "mlp": ["fc1", "fc2"]}
    want_roles = [r for s in spec for r in groups.get(s, [s])]
    assert roles == want_roles
    expected = {f"{blocks}.{i}.{names[r]}" for i in range(3) for r in want_roles}
    assert lora_wrapped(model, arch.target_regex(roles)) == expected


def test_fc2_does_not_catch_attention_output_dense():
    arch = describe(OldViT(blocks=2))
    wrapped = lora_wrapped(OldViT(blocks=2), arch.target_regex(["fc2"]))
    assert wrapped == {"vit.encoder.layer.0.output.dense", "vit.encoder.layer.1.output.dense"}
    assert not any("attention" in n for n in wrapped)


def test_lora_method_on_older_naming_trains_adapters_and_head():
    from peftlab.methods import REGISTRY, LoraConfig

    torch.manual_seed(0)
    model = OldViT(blocks=2)
    prepared = REGISTRY["lora"].apply(model, describe(model), LoraConfig(targets="output,fc1", dropout=0.0), 10)
    trainable = {n for n, p in prepared.model.named_parameters() if p.requires_grad}
    want = {
        f"base_model.model.vit.encoder.layer.{i}.{rel}.lora_{ab}.default.weight"
        for i in range(2)
        for rel in ("attention.output.dense", "intermediate.dense")
        for ab in "AB"
    }
    want |= {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }
    assert trainable == want
    assert prepared.model(torch.randn(5, 4)).shape == (5, 3)


def test_role_aliases_and_groups():
    arch = describe(tiny_new_vit())
    assert arch.resolve_roles("q, v") == ["query", "value"]
    assert arch.resolve_roles("Query,query,q") == ["query"]
    assert arch.resolve_roles(["mlp_in", "mlp_out"]) == ["fc1", "fc2"]
    assert arch.resolve_roles("attention,fc1") == ["query", "key", "value", "output", "fc1"]


def test_unknown_role_names_the_roles_the_model_has():
    arch = describe(OldViT(blocks=2, with_key=False))
    assert set(arch.roles) == set(OLD_ROLES) - {"key"}
    with pytest.raises(UserError) as e:
        arch.resolve_roles("query,bogus")
    msg = str(e.value)
    assert "'bogus'" in msg
    for role in arch.roles:
        assert role in msg
    assert "key" not in msg.split(";", 1)[1].replace("bogus", "")  # it only offers roles the model has


def test_missing_role_names_the_roles_the_model_has():
    arch = describe(OldViT(blocks=2, with_key=False))
    with pytest.raises(UserError, match="no 'key' module") as e:
        arch.resolve_roles("query,key")
    assert "it has: query, value, output, fc1, fc2" in str(e.value)
    assert isinstance(e.value, Unsupported)  # a model that lacks a role: the method cannot apply to it


def test_empty_role_spec():
    with pytest.raises(UserError, match="no target roles"):
        describe(tiny_new_vit()).resolve_roles(" , ")


def test_describe_rejects_models_without_blocks_or_head():
    with pytest.raises(UserError, match="no stack of blocks"):
        describe(nn.Sequential(nn.Linear(2, 2)))
    no_head = OldViT(blocks=2)
    no_head.classifier = nn.Identity()
    with pytest.raises(UserError, match="no Linear classification head"):
        describe(no_head)
