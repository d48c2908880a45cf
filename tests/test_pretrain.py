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
    assert "fashion-mnist:0-4" in record["data"] and "validation images" in record["data"]
    assert record["config"]["train_size"] == 150 and len(record["history"]) == 1
    assert 0.2 < record["final_accuracy"] <= 1.0  # 5 classes: above chance after one epoch on 150 images
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tmp_path / "a")
    assert model.config.num_labels == 5 and model.config.image_size == 28
    assert AutoImageProcessor.from_pretrained(tmp_path / "a").size == {"height": 28, "width": 28}


@pytest.mark.parametrize(
    "bad, message",
    [({"epochs": 0}, "--epochs must be >= 1"), ({"heads": 3}, "must divide by --heads"), ({"lr": 0.0}, "--lr")],
)
def test_pretrain_bad_options(bad, message):
    with pytest.raises(UserError, match=message):
        PretrainConfig(**(SMALL | bad))
