"""peftlab pretrain: the bundled model's recipe runs, is reproducible bit for bit, and records what it did."""

import json

import pytest

from peftlab.errors import UserError
from peftlab.runs.pretrain import PretrainConfig, pretrain

SMALL = dict(epochs=1, batch_size=64, hidden_size=16, layers=1, heads=2, mlp_size=32, patch_size=7, train_size=150)


def test_pretrain_is_reproducible_and_recorded(tmp_path):
    a = pretrain(PretrainConfig(out=str(tmp_path / "a"), **SMALL), progress=False, log=lambda s: None)
    b = pretrain(PretrainConfig(out=str(tmp_path / "b"), **SMALL), progress=False, log=lambda s: None)
    assert a["weights_sha256"] == b["weights_sha256"]  # same seed, same bytes
    record = json.loads((tmp_path / "a" / "pretrain.json").read_text())
    assert record["weights_sha256"] == a["weights_sha256"]
    assert "fashion-mnist:0,1,2,5,8" in record["data"] and "validation images" in record["data"]
    assert "linear reconstruction" in record["objective"] and 1 <= record["selected_epoch"] <= 1
    assert record["config"]["train_size"] == 150 and len(record["history"]) == 1
    assert 0.2 < record["final_accuracy"] <= 1.0  # 5 classes: above chance after one epoch on 150 images
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tmp_path / "a")
    assert model.config.num_labels == 5 and model.config.image_size == 28
    assert AutoImageProcessor.from_pretrained(tmp_path / "a").size == {"height": 28, "width": 28}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"heads": 3}, "must divide by --heads"),
        ({"lr": 0.0}, "--lr"),
        ({"reconstruction": -1.0}, "--reconstruction >= 0"),
        ({"crop_scale": 0.0}, "--crop-scale must be in"),
        ({"flip": 1.5}, "--flip in"),
        ({"classes": "0,0,1"}, "--classes '0,0,1': give at least 2 distinct"),
        ({"classes": "3"}, "--classes '3'"),
    ],
)
def test_pretrain_bad_options(bad, message):
    with pytest.raises(UserError, match=message):
        PretrainConfig(**(SMALL | bad))


def test_augment_is_seeded_and_stays_an_image():
    import torch

    from peftlab.runs.pretrain import augment

    x = torch.rand(8, 1, 28, 28)
    cfg = PretrainConfig(**SMALL)
    a = augment(x, cfg, torch.Generator().manual_seed(3))
    b = augment(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, augment(x, cfg, torch.Generator().manual_seed(4)))
    plain = PretrainConfig(**(SMALL | {"crop_scale": 1.0, "flip": 0.0, "jitter": 0.0}))
    assert torch.allclose(augment(x, plain, torch.Generator().manual_seed(3)), x, atol=1e-5)  # no-op settings


def test_default_task_was_never_seen_in_pretraining():
    """The bundled model's record names its pretraining classes; the default task shares none of them, and
    the recipe's defaults are what made the bundled model (so `peftlab pretrain` reproduces it)."""
    from importlib import resources

    from peftlab.config.run import DEFAULT_DATASET
    from peftlab.data import fmnist_classes

    record = json.loads(resources.files("peftlab").joinpath("bundled/pretrain.json").read_text())
    seen = fmnist_classes(f"fashion-mnist:{record['config']['classes']}")
    assert seen and not set(seen) & set(fmnist_classes(DEFAULT_DATASET))
    recipe = {k: v for k, v in vars(PretrainConfig()).items() if k != "out"}
    assert {k: record["config"][k] for k in recipe} == recipe
