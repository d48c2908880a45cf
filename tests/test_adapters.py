"""Saved runs: reload (plain PEFT too), merge, predict and evaluate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from peftlab import cli
from peftlab.data import read_source
from peftlab.models import BUNDLED_DIR
from peftlab.runs import artifacts as adapters

from .conftest import CLASSES, read_json, write_image_folder
from .helpers import make_result, run_args


@pytest.fixture(scope="module")
def runs(tiny_vit, image_folder, tmp_path_factory) -> Path:
    """head, lora, full, ssf and vpt-shallow on the tiny ViT, given as a path relative to the working directory
    (recorded absolute: everything below loads from other directories)."""
    out = tmp_path_factory.mktemp("adapter-runs")
    here = os.getcwd()
    os.chdir(tiny_vit.parent)
    try:
        args = run_args(Path(tiny_vit.name), image_folder, out, "--methods", "head,lora,full,ssf,vpt-shallow", epochs=4)
        assert cli.main([*args, "--lora-lr", "0.02"]) == 0
    finally:
        os.chdir(here)
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
    # the bundled base is recorded by its folder, which resolves from anywhere, never by a name like a hub id
    assert read_json(out / "lora-seed0" / "adapter" / "labels.json")["base_model"] == str(BUNDLED_DIR)
    assert read_json(out / "lora-seed0" / "adapter" / "adapter_config.json")["base_model_name_or_path"] == str(
        BUNDLED_DIR
    )
    assert "the model bundled with peftlab" in (out / "full-seed0" / "adapter" / "README.md").read_text()


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


# ---------------------------------------------------------------- what a run leaves works everywhere else
def _card(run: Path) -> tuple[dict, str]:
    """(YAML metadata, Markdown body) of a run's model card."""
    text = (run / "adapter" / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


@pytest.mark.parametrize("method", ["head", "lora", "full", "ssf", "vpt-shallow"])
def test_every_run_has_a_model_card_the_hub_reads(runs, tiny_vit, method):
    run = runs / f"{method}-seed0"
    meta, body = _card(run)
    result = read_json(run / "result.json")
    test = result["metrics"]["test"]
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["library_name"] == {"lora": "peft"}.get(method, "peftlab")
    assert "base_model" not in meta  # a local base: the hub's base_model takes hub ids only
    [entry] = meta["model-index"][0]["results"]
    assert entry["metrics"][0] == {"type": "accuracy", "value": round(test["accuracy"], 4), "name": "test accuracy"}
    assert entry["dataset"]["split"] == "test" and entry["task"]["type"] == "image-classification"
    assert "[More Information Needed]" not in body  # PEFT's blank template is replaced
    assert f"**{test['accuracy']:.4f}** on {test['examples']} images of split 'test', scored once" in body
    assert "0: dark, 1: light, 2: mid" in body and f"`{tiny_vit}` (a local folder)" in body
    p = result["params"]
    assert (
        f"{p['trainable']:,} ({p['trainable_pct']:.2f}% of the base model's {p['base']:,}); {p['total']:,} in all"
        in body
    )
    labels = read_json(run / "adapter" / "labels.json")
    assert labels["base_model"] == str(tiny_vit) and labels["label2id"] == {c: i for i, c in enumerate(CLASSES)}


def test_the_cards_command_reproduces_the_runs_configuration(runs):
    """The card's `peftlab run ...` line, parsed by peftlab's own command line, is the run's configuration."""
    import shlex

    from peftlab import config

    for method in ("lora", "ssf"):
        result = read_json(runs / f"{method}-seed0" / "result.json")
        _, body = _card(runs / f"{method}-seed0")
        command = body.split("```sh\n", 1)[1].split("\n", 1)[0]
        args = vars(cli.parser().parse_args(shlex.split(command)[1:]))
        values = {k: v for k, v in args.items() if v is not None and "." not in k and k not in ("command", "log_level")}
        values[method] = {
            k.split(".", 1)[1]: v for k, v in args.items() if v is not None and k.startswith(method + ".")
        }
        cfg = config.build(values)
        assert cfg.fingerprint() == {k: v for k, v in result["config"].items() if k in cfg.fingerprint()}
        assert cfg.options_for(method).options() == result["method_config"] and cfg.seeds == [result["seed"]]


def test_hub_models_and_datasets_are_named_in_the_cards_metadata(tmp_path):
    from peftlab.runs.cards import card, hub_dataset_id, hub_model_id

    r = make_result("lora", 0, 0.8) | {"model": "google/vit-base-patch16-224-in21k", "dataset": "food101"}
    meta = yaml.safe_load(card(r, "peft", tmp_path).split("---\n")[1])
    assert meta["base_model"] == "google/vit-base-patch16-224-in21k" and meta["base_model_relation"] == "adapter"
    assert meta["datasets"] == ["food101"]
    assert hub_model_id("peftlab-vit-tiny") is None and hub_model_id(str(tmp_path)) is None
    assert hub_dataset_id("fashion-mnist:5-9") == "zalando-datasets/fashion_mnist"
    assert hub_dataset_id(str(tmp_path)) is None


RECIPES = """
import json, sys
from pathlib import Path

import torch

inputs = torch.load("{inputs}")
out = {{}}
for run in {runs!r}:
    code = (Path(run) / "adapter" / "README.md").read_text().split("```python\\n", 1)[1].split("```", 1)[0]
    space = {{}}
    exec(code, space)  # the card's recipe, as written
    model = space["model"].eval()
    with torch.no_grad():
        predicted = model(pixel_values=inputs["pixel_values"]).logits.argmax(-1)
    out[Path(run).name] = {{
        "accuracy": (predicted == inputs["labels"]).float().mean().item(),
        "id2label": {{str(k): v for k, v in model.config.id2label.items()}},
        "peftlab_imported": "peftlab" in sys.modules,
    }}
print(json.dumps(out))
"""


def test_every_cards_recipe_reproduces_the_runs_accuracy_from_another_directory(runs, image_folder, tmp_path):
    """Each card's loading code, run in a fresh Python in another working directory: plain transformers + PEFT
    (lora), plain transformers + safetensors (head, full), peftlab.load (ssf: merged; vpt-shallow: as trained)
    give the task's labels and exactly the run's test accuracy. The plain recipes never import peftlab."""
    import subprocess
    import sys

    from peftlab.models import image_spec

    from .helpers import load_task

    result = read_json(runs / "lora-seed0" / "result.json")
    spec = adapters.run_spec(result, None)
    assert spec == image_spec(result["model"], __import__("transformers").AutoConfig.from_pretrained(result["model"]))
    task = load_task(image_folder, spec, roles=("test",), min_per_class=1, test_size=0, test_split="test")
    torch.save({"pixel_values": spec.normalize(task.test.images), "labels": task.test.labels}, tmp_path / "in.pt")
    order = ["lora-seed0", "head-seed0", "full-seed0", "ssf-seed0", "vpt-shallow-seed0"]  # peftlab last
    script = RECIPES.format(inputs=tmp_path / "in.pt", runs=[str(runs / name) for name in order])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(adapters.__file__).parents[2]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in order:
        r = read_json(runs / name / "result.json")
        assert got[name]["accuracy"] == pytest.approx(r["metrics"]["test"]["accuracy"], abs=1e-9), name
        assert got[name]["id2label"] == {str(i): c for i, c in enumerate(CLASSES)}, name
    assert not any(got[n]["peftlab_imported"] for n in ("lora-seed0", "head-seed0", "full-seed0"))
    assert got["ssf-seed0"]["peftlab_imported"]


def test_peftlab_load_is_plain_transformers_when_the_method_merges(runs):
    from transformers import ViTForImageClassification

    merged = peftlab_load(runs / "ssf-seed0")
    assert type(merged) is ViTForImageClassification and not any("ssf" in n for n, _ in merged.named_parameters())
    assert list(merged.config.id2label.values()) == CLASSES
    prompts = peftlab_load(runs / "vpt-shallow-seed0")
    assert type(prompts) is ViTForImageClassification and any("prompt" in n for n, _ in prompts.named_parameters())


def peftlab_load(run: Path):
    import peftlab

    return peftlab.load(run)


def _files_in_colour_and_gray(folder: Path, n: int = 50) -> list[Path]:
    """n image files: half colour RGB, half grayscale (L), PNG and JPEG, 12 to 48 pixels a side."""
    from PIL import Image

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        side = int(rng.integers(12, 49))
        base = rng.integers(0, 256, 3)
        arr = np.clip(base + rng.integers(-60, 61, (side, side, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        if i % 2:
            img = img.convert("L")
        path = folder / f"{i:02d}.{'jpg' if i % 4 >= 2 else 'png'}"
        img.save(path)
        paths.append(path)
    return paths


def test_a_merged_run_works_in_the_transformers_pipeline_as_in_predict(runs, tmp_path, capsys):
    """transformers' image-classification pipeline on the merged folder and peftlab predict on the run give the
    same top-1 label and probability on 50 files, colour and grayscale."""
    from PIL import Image
    from transformers import AutoImageProcessor, pipeline

    run = runs / "lora-seed0"
    assert cli.main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    files = _files_in_colour_and_gray(tmp_path / "images")
    assert {Image.open(f).mode for f in files} == {"RGB", "L"}
    capsys.readouterr()
    assert cli.main(["predict", str(run), *map(str, files), "--json", "--top-k", "1"]) == 0
    ours = {Path(r["path"]).name: r["predictions"][0] for r in json.loads(capsys.readouterr().out)}
    classify = pipeline("image-classification", model=str(tmp_path / "merged"), device="cpu")
    theirs = classify([str(f) for f in files], top_k=1)
    assert len(ours) == len(theirs) == 50
    for f, [top] in zip(files, theirs):
        assert top["label"] == ours[f.name]["label"], f.name
        assert top["score"] == pytest.approx(ours[f.name]["probability"], abs=1e-5), f.name
    # the saved processor declares the RGB conversion: called on a grayscale image it does what the pipeline does
    processor = AutoImageProcessor.from_pretrained(tmp_path / "merged")
    gray = Image.open(files[1])
    pixels = lambda img: processor(img, return_tensors="pt")["pixel_values"]  # noqa: E731
    torch.testing.assert_close(pixels(gray), pixels(gray.convert("RGB")))
    meta = yaml.safe_load((tmp_path / "merged" / "README.md").read_text().split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"


def test_a_one_channel_model_takes_grayscale_in_predict_as_its_processor_declares(image_folder, tmp_path, capsys):
    """A 1-channel model: predict converts every image to 8-bit grayscale (luma); its merged folder's processor,
    given that grayscale image, feeds the model the same input (same probabilities); merging says that the
    pipeline, which converts to RGB, cannot feed it."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from .conftest import save_tiny_vit

    gray_vit = save_tiny_vit(tmp_path / "gray-vit", channels=1)
    out = tmp_path / "out"
    assert cli.main(run_args(gray_vit, image_folder, out, "--methods", "head", epochs=1)) == 0
    run = out / "head-seed0"
    rc = cli.main(["merge", str(run), "--out", str(tmp_path / "merged")])
    assert rc == 0 and "cannot feed it" in capsys.readouterr().out
    files = [f for f in _files_in_colour_and_gray(tmp_path / "images", 6)]
    assert cli.main(["predict", str(run), *map(str, files), "--json", "--top-k", "3"]) == 0
    ours = json.loads(capsys.readouterr().out)
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path / "merged")
    for f, row in zip(files, ours):
        x = processor(Image.open(f).convert("L"), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            probs = model(pixel_values=x).logits.softmax(-1)[0]
        for p in row["predictions"]:
            assert probs[CLASSES.index(p["label"])].item() == pytest.approx(p["probability"], abs=1e-5)


def test_export_of_real_runs_matches_their_results(runs, tmp_path, capsys):
    import pyarrow.parquet as pq

    assert cli.main(["export", str(runs), "--format", "parquet", "--out", str(tmp_path / "runs.parquet")]) == 0
    table = pq.read_table(tmp_path / "runs.parquet").to_pylist()
    assert [r["folder"] for r in table] == [f"{m}-seed0" for m in ("full", "head", "lora", "ssf", "vpt-shallow")]
    for row in table:
        r = read_json(runs / row["folder"] / "result.json")
        assert row["test_accuracy"] == r["metrics"]["test"]["accuracy"] and row["opt_lr"] == r["method_config"]["lr"]
        assert row["params_trainable"] == r["params"]["trainable"] and row["time_train_s"] == r["time"]["train_s"]
        assert row["inference_deployed"] == r["inference"]["deployed"] and row["env_torch"] == torch.__version__
        assert row["data_test_examples"] == 12 and row["model"] == r["model"]
