"""Saved runs: reload (plain PEFT too), merge, predict and evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from peftlab import cli
from peftlab.data import read_source
from peftlab.models import BUNDLED_DIR
from peftlab.runs import artifacts as adapters

from .conftest import CLASSES, read_json, write_image_folder
from .helpers import run_args


@pytest.fixture(scope="module")
def runs(tiny_vit, image_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter-runs")
    assert (
        cli.main(
            run_args(
                tiny_vit,
                image_folder,
                out,
                "--methods",
                "head,lora,full,ssf,vpt-shallow",
                "--lora-lr",
                "0.02",
                epochs=4,
            )
        )
        == 0
    )
    return out


def batch() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 3, 16, 16)


def test_plain_peft_reloads_the_adapter_with_its_head(runs, tiny_vit):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    run = runs / "lora-seed0"
    ours, _, _ = adapters.load_run(run)
    labels = json.loads((run / "adapter" / "labels.json").read_text())
    assert labels["base_model"] == str(tiny_vit) and list(labels["id2label"].values()) == CLASSES
    base = AutoModelForImageClassification.from_pretrained(  # what a user does with plain transformers + PEFT
        labels["base_model"], num_labels=len(labels["id2label"]), ignore_mismatched_sizes=True
    )
    plain = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    x = batch()
    with torch.no_grad():
        assert torch.equal(ours(pixel_values=x).logits, plain(pixel_values=x).logits)
    # the trained head came back, not the freshly initialised one
    trained = plain.base_model.model.classifier.modules_to_save["default"].weight
    fresh = AutoModelForImageClassification.from_pretrained(
        labels["base_model"], num_labels=3, ignore_mismatched_sizes=True
    ).classifier.weight
    assert not torch.allclose(trained, fresh)


@pytest.mark.parametrize("method", ["head", "full"])
def test_non_peft_runs_reload_their_trained_tensors(runs, method):
    from safetensors.torch import load_file

    run = runs / f"{method}-seed0"
    model, _, _ = adapters.load_run(run)
    saved = load_file(str(run / "adapter" / "trainable.safetensors"))
    state = model.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())
    assert "classifier.weight" in saved  # the head survives save -> load


@pytest.mark.parametrize("method", ["lora", "head", "ssf"])  # PEFT's merge, nothing to merge, a method's own
def test_merged_model_is_plain_transformers_with_the_same_logits(runs, tmp_path, method, capsys):
    from transformers import AutoModelForImageClassification

    run = runs / f"{method}-seed0"
    assert cli.main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert "merged model written to" in capsys.readouterr().out
    merged = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in n or "ssf" in n for n, _ in merged.named_parameters())
    assert list(merged.config.id2label.values()) == CLASSES
    assert (tmp_path / "merged" / "preprocessor_config.json").exists()
    ours, _, _ = adapters.load_run(run)
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=x).logits, ours(pixel_values=x).logits, atol=1e-5, rtol=1e-4)


def test_a_method_that_does_not_merge_is_a_one_line_error(runs, tmp_path, capsys):
    assert cli.main(["merge", str(runs / "vpt-shallow-seed0"), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'vpt-shallow' does not merge into the base weights" in err
    assert "+P prompt tokens in every block" in err and "peftlab predict" in err
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("method", ["ssf", "vpt-shallow"])
def test_a_hand_written_method_reloads_as_it_trained(runs, image_folder, method):
    """load_run applies the method to a fresh base and loads its trained tensors: the run's own accuracy."""
    run = runs / f"{method}-seed0"
    r = adapters.evaluate_run(run, str(image_folder))
    result = read_json(run / "result.json")
    assert r["examples"] == result["data"]["test_examples"] and r["split"] == "test" and r["excluded"] == 0
    assert r["accuracy"] == pytest.approx(result["metrics"]["test"]["accuracy"])
    assert r["macro_f1"] == pytest.approx(result["metrics"]["test"]["macro_f1"])


def test_predict_on_image_files_agrees_with_the_evaluation(runs, image_folder, capsys):
    """Predicting the test images one file at a time gives the run's own confusion matrix."""
    run = runs / "full-seed0"
    (image_folder.parent / "notes.txt").write_text("not an image")
    assert (
        cli.main(["predict", str(run), str(image_folder / "test"), "--json", "--top-k", "2", "--batch-size", "5"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    result = read_json(run / "result.json")
    conf = np.zeros((3, 3), dtype=int)
    for r in rows:
        preds = r["predictions"]
        assert len(preds) == 2 and preds[0]["probability"] >= preds[1]["probability"]
        assert 0 < sum(p["probability"] for p in preds) <= 1 + 1e-6
        true = CLASSES.index(Path(r["path"]).parent.name)
        conf[true, CLASSES.index(preds[0]["label"])] += 1
    assert conf.tolist() == result["metrics"]["test"]["confusion"]


def test_predict_reports_unreadable_files_and_text_output(runs, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    from PIL import Image

    Image.new("RGB", (40, 30), (250, 250, 250)).save(tmp_path / "light.jpg")
    assert (
        cli.main(
            [
                "predict",
                str(runs / "full-seed0"),
                str(tmp_path / "broken.png"),
                str(tmp_path / "light.jpg"),
                "--top-k",
                "1",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'broken.png'}: cannot read image")
    assert lines[1].startswith(f"{tmp_path / 'light.jpg'}: ") and len(lines[1].split()) == 3


def test_eval_reproduces_the_runs_accuracy(runs, image_folder, capsys, monkeypatch):
    from peftlab.data import task

    run = runs / "lora-seed0"
    decoded = []  # which splits eval decodes: the test split only, however large train is
    real = task.decode_sample
    monkeypatch.setattr(task, "decode_sample", lambda *a, **k: decoded.append(k["split_key"]) or real(*a, **k))
    assert cli.main(["eval", str(run), "--dataset", str(image_folder), "--json"]) == 0
    assert decoded == ["test"]
    r = json.loads(capsys.readouterr().out)
    result = read_json(run / "result.json")
    assert r["examples"] == result["data"]["test_examples"] and r["split"] == "test" and r["excluded"] == 0
    assert r["accuracy"] == pytest.approx(result["metrics"]["test"]["accuracy"])
    assert r["macro_f1"] == pytest.approx(result["metrics"]["test"]["macro_f1"])


def test_eval_never_scores_images_a_seed_2_run_trained_or_selected_on(tiny_vit, tmp_path, capsys):
    """A one-split folder: the run of seed 2 held out its own test images. Evaluating it on the same folder
    draws the test slice with the run's seed; on a folder that also holds its training and validation
    pictures, those are left out (by content) and counted; when nothing else is left, it is an error."""
    root = write_image_folder(tmp_path / "data", {"all": {c: 10 for c in CLASSES}}, seed=5)
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_vit, root / "all", out, "--methods", "head", "--seeds", "2", epochs=1)) == 0
    run, result = out / "head-seed2", read_json(out / "head-seed2" / "result.json")
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--dataset", str(root / "all"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["seed"] == 2 and r["excluded"] == 0 and r["examples"] == result["data"]["test_examples"] == 6
    assert r["accuracy"] == pytest.approx(result["metrics"]["test"]["accuracy"])
    # every picture of the run's folder as another dataset's test split: the 24 it trained or validated on
    # are left out, its own 6 test images are scored
    mixed = tmp_path / "mixed"
    shutil.copytree(root / "all", mixed / "test")
    write_image_folder(mixed, {"train": {c: 2 for c in CLASSES}}, seed=9)
    assert cli.main(["eval", str(run), "--dataset", str(mixed), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["excluded"], r["examples"]) == (24, 6)
    # without those 6: nothing held out is left
    pool = read_source(str(root / "all"))[1]["train"]
    for row in np.load(run / "identities.npz")["test_row"]:
        Path(mixed / "test" / Path(pool.items[row]).relative_to(root / "all")).unlink()
    rc = cli.main(["eval", str(run), "--dataset", str(mixed), "--json"])
    assert rc == 2 and "nothing held out is left to evaluate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "/nonexistent-run", "x.png"], "is not a run folder (no result.json)"),
        (["merge", "/nonexistent-run", "--out", "/tmp/x"], "is not a run folder (no result.json)"),
    ],
)
def test_bad_run_folders_are_one_line_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftlab: error: ") and message in err and err.count("\n") == 1


def test_a_failed_run_cannot_be_loaded(runs, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text(
        json.dumps({"status": "diverged", "method": "lora", "seed": 0, "error": "Diverged: loss nan"})
    )
    assert cli.main(["predict", str(bad), str(tmp_path)]) == 2
    assert "did not finish (diverged: Diverged: loss nan)" in capsys.readouterr().err


@pytest.mark.skipif(not (BUNDLED_DIR / "model.safetensors").exists(), reason="bundled model not built")
def test_default_lora_adapter_is_a_tenth_of_the_model(tmp_path):
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "run",
                "--methods",
                "lora,full",
                "--train-size",
                "100",
                "--test-size",
                "100",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    lora, full = read_json(out / "lora-seed0" / "result.json"), read_json(out / "full-seed0" / "result.json")
    assert lora["size"]["adapter_bytes"] * 10 <= full["size"]["adapter_bytes"]
    assert full["size"]["adapter_bytes"] >= (BUNDLED_DIR / "model.safetensors").stat().st_size * 0.99


def test_a_run_is_read_with_the_normalization_it_trained_with(runs, tiny_vit):
    from transformers import AutoConfig

    from peftlab.models import image_spec

    result = read_json(runs / "lora-seed0" / "result.json")
    config = AutoConfig.from_pretrained(tiny_vit)
    spec = adapters.run_spec(result, config)
    assert spec == image_spec(str(tiny_vit), config) and spec.std == (0.25,) * 3
    result["data"]["normalization"]["mean"] = [0.1] * 3  # what the result records wins over the processor
    assert adapters.run_spec(result, config).mean == (0.1,) * 3
    del result["data"]["normalization"]  # a run from before it was recorded: the processor again
    assert adapters.run_spec(result, config) == spec
