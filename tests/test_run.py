"""End to end through the command line: runs, result files, reports, errors, determinism."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file

from peftlab import cli, methods
from peftlab.config import DEFAULT_METHODS
from peftlab.models import BUNDLED_DIR, image_spec, load_model
from peftlab.runs.worker import _model_config
from peftlab.training import evaluate, make_accelerator, metrics_from_logits

from .conftest import CLASSES, read_json
from .helpers import load_task, needs_fmnist, run_args

EPOCHS = 2


def tiny_args(model: Path, dataset: Path, out: Path, *extra: str, epochs: int | None = EPOCHS, **kw) -> list[str]:
    return run_args(model, dataset, out, *extra, epochs=epochs, **kw)


# every key the issue requires of a result.json ("a.b": key b inside a)
REQUIRED_KEYS = [
    "method",
    "method_config",
    "model",
    "dataset",
    "seed",
    "params.trainable",
    "params.total",
    "params.trainable_pct",
    "metrics.val.accuracy",
    "metrics.val.start_accuracy",
    "metrics.test.chance_accuracy",
    "metrics.test.accuracy",
    "metrics.test.top5_accuracy",
    "metrics.test.macro_f1",
    "selection.checkpoint",
    "selection.epoch",
    "selection.test_evaluations",
    "data.splits.check",
    "history",
    "time.train_s",
    "time.eval_s",
    "time.total_s",
    "throughput.train_img_s",
    "memory.peak_bytes",
    "size.adapter_bytes",
    "coverage",
    "env",
]


def check_result(r: dict, *, method: str, epochs: int, num_classes: int, model: str, dataset: str) -> None:
    """Every required key is there, and every value is sane."""
    for key in REQUIRED_KEYS:
        obj = r
        for part in key.split("."):
            assert isinstance(obj, dict) and part in obj, f"{method}: result.json lacks '{key}'"
            obj = obj[part]
    assert r["status"] == "ok" and r["method"] == method and r["model"] == model and r["dataset"] == dataset
    assert r["method_config"]["lr"] > 0 and r["seed"] == 0
    p, m, v = r["params"], r["metrics"]["test"], r["metrics"]["val"]
    assert 0 < p["trainable"] <= p["total"] and p["base"] > 0
    assert p["trainable_pct"] == pytest.approx(100 * p["trainable"] / p["base"])
    for k in ("chance_accuracy", "accuracy", "macro_f1"):
        assert 0 <= m[k] <= 1, (k, m[k])
    assert 0 <= v["accuracy"] <= 1 and 0 <= v["start_accuracy"] <= 1
    if num_classes <= 5:
        assert m["top5_accuracy"] is None
    else:
        assert 0 <= m["top5_accuracy"] <= 1 and m["top5_accuracy"] >= m["accuracy"]
    counts = r["coverage"]["test"]["per_class"].values()
    assert m["chance_accuracy"] == pytest.approx(max(counts) / sum(counts))
    h = r["history"]
    assert [e["epoch"] for e in h] == list(range(1, epochs + 1))
    for e in h:
        assert math.isfinite(e["train_loss"]) and e["train_loss"] > 0
        assert 0 <= e["val_accuracy"] <= 1 and e["seconds"] > 0
    # the checkpoint tested is the best validation epoch (ties: the lower validation loss), test scored once
    sel = r["selection"]
    best = max(h, key=lambda e: (e["val_accuracy"], -e["val_loss"]))
    assert sel["checkpoint"] == "best validation accuracy" and sel["epoch"] == best["epoch"]
    assert v["accuracy"] == best["val_accuracy"] and sel["test_evaluations"] == 1
    t = r["time"]
    assert t["train_s"] > 0 and t["eval_s"] > 0 and t["total_s"] >= t["train_s"] + t["eval_s"]
    # training time = the epochs + building the frozen-prefix cache when that path ran
    assert t["train_s"] == pytest.approx(sum(e["seconds"] for e in h) + r["train"].get("cache_s", 0.0))
    assert r["throughput"]["train_img_s"] == pytest.approx(r["data"]["train_examples"] * epochs / t["train_s"])
    assert r["memory"]["peak_bytes"] > 0 and r["size"]["adapter_bytes"] > 0
    assert set(r["coverage"]) == {"train", "val", "test"}
    assert r["coverage"]["train"]["examples"] == r["data"]["train_examples"]
    assert r["env"]["packages"]["torch"] == importlib.metadata.version("torch")
    assert r["env"]["python"] and r["env"]["device"] == "cpu"


@pytest.fixture(scope="module")
def folder_run(tiny_vit, image_folder, tmp_path_factory):
    """Every registered method, 2 epochs, on the tiny image folder through `peftlab run`."""
    out = tmp_path_factory.mktemp("run-folder")
    rc = cli.main(tiny_args(tiny_vit, image_folder, out, "--methods", "all"))
    return rc, out


def test_run_on_image_folder_writes_a_result_per_method(folder_run, tiny_vit, image_folder):
    rc, out = folder_run
    assert rc == 0
    assert sorted(p.parent.name for p in out.rglob("result.json")) == sorted(f"{m}-seed0" for m in methods.REGISTRY)
    for method in methods.REGISTRY:
        r = read_json(out / f"{method}-seed0" / "result.json")
        check_result(r, method=method, epochs=EPOCHS, num_classes=3, model=str(tiny_vit), dataset=str(image_folder))
        assert r["data"]["label_names"] == CLASSES
        d = r["data"]
        assert (d["train_examples"], d["val_examples"], d["test_examples"], d["test_split"]) == (19, 5, 12, "test")
        assert r["data"]["image_size"] == [16, 16] and r["data"]["channels"] == 3
        assert r["coverage"]["test"]["per_class"] == {c: 4 for c in CLASSES}
        assert r["metrics"]["test"]["chance_accuracy"] == pytest.approx(1 / 3)
        assert r["train"]["epochs"] == EPOCHS and r["train"]["batch_size"] == 8
        assert r["method_config"]["lr"] == methods.REGISTRY[method].config_cls().lr
        files = [f for f in (out / f"{method}-seed0" / "adapter").rglob("*.safetensors")]
        assert r["size"]["adapter_bytes"] == sum(f.stat().st_size for f in files) > 0
    # the data is decoded once for the seed: the first run to use it carries the time, the others 0
    data_s = {m: read_json(out / f"{m}-seed0" / "result.json")["time"]["data_s"] for m in methods.REGISTRY}
    assert sum(v > 0 for v in data_s.values()) == 1 and all(v >= 0 for v in data_s.values())
    head = read_json(out / "head-seed0" / "result.json")["params"]
    assert head["trainable"] == 32 * 3 + 3 and head["added"] == 0
    full = read_json(out / "full-seed0" / "result.json")["params"]
    assert full["trainable"] == full["total"] == full["base"] == head["base"]
    lora = read_json(out / "lora-seed0" / "result.json")["params"]
    assert lora["added"] == 2 * 2 * 8 * (32 + 32)  # r=8 on query and value of 2 blocks
    assert lora["trainable"] == lora["added"] + head["trainable"]


def _reloaded_accuracy(method: str, run_dir: Path, tiny_vit: Path, image_folder: Path) -> float:
    """Rebuild the trained model from the saved adapter alone and evaluate it on the same split."""
    model = load_model(str(tiny_vit), CLASSES, seed=1234)  # a different head: the saved one must replace it
    adapter = run_dir / "adapter"
    if method == "lora":
        model = peft.PeftModel.from_pretrained(model, str(adapter))
    else:
        tensors = load_file(str(adapter / "trainable.safetensors"))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        assert not unexpected and set(tensors) | set(missing) == set(model.state_dict())
    spec = image_spec(str(tiny_vit), _model_config(str(tiny_vit)))
    task = load_task(str(image_folder), spec, min_per_class=1, warn=lambda s: None)
    logits_of = lambda idx: model(pixel_values=spec.normalize(task.test.images[idx])).logits  # noqa: E731
    return evaluate(model, logits_of, task.test, make_accelerator("cpu", "fp32"), 256, task.num_classes)["accuracy"]


@pytest.mark.parametrize("method", ["head", "last", "lora", "full"])
def test_saved_adapter_reproduces_the_reported_accuracy(method, folder_run, tiny_vit, image_folder):
    _, out = folder_run
    r = read_json(out / f"{method}-seed0" / "result.json")
    reloaded = _reloaded_accuracy(method, out / f"{method}-seed0", tiny_vit, image_folder)
    assert reloaded == r["metrics"]["test"]["accuracy"]  # the weights saved are the weights tested


def test_saved_part_is_what_the_method_trains(folder_run):
    _, out = folder_run
    head = load_file(str(out / "head-seed0" / "adapter" / "trainable.safetensors"))
    assert set(head) == {"classifier.weight", "classifier.bias"}
    assert torch.any(head["classifier.bias"] != 0)  # trained: the fresh head's bias is zero
    last = load_file(str(out / "last-seed0" / "adapter" / "trainable.safetensors"))
    assert {k.split(".")[0] for k in last} == {"vit", "classifier"}
    assert all(k.startswith(("vit.layers.1.", "classifier.")) for k in last)
    assert (out / "lora-seed0" / "adapter" / "adapter_config.json").is_file()
    cfg = json.loads((out / "lora-seed0" / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["modules_to_save"] == ["classifier"]


def test_summary_lists_every_method_and_report_rebuilds_it(folder_run, capsys):
    _, out = folder_run
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# peftlab comparison")
    for method in methods.REGISTRY:
        assert f"| {method} |" in summary
    (out / "summary.md").unlink()
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "val acc" in printed and "test acc" in printed and "3 classes" in printed
    lines = printed.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("-----")) + 1
    rows = [line.split()[0] for line in lines[first : first + len(methods.REGISTRY)]]
    assert rows == list(methods.REGISTRY)  # one row per result, in registry order (not path order)
    for method in methods.REGISTRY:
        r = read_json(out / f"{method}-seed0" / "result.json")
        row = next(line for line in printed.splitlines() if line.startswith(method + " "))
        assert f"{r['metrics']['test']['accuracy']:.3f}" in row and f"{r['params']['trainable']:,}" in row
    # a pure function of the result files: the same summary as the run wrote, row for row
    assert (out / "summary.md").read_text() == summary


def test_same_seed_same_results(folder_run, tiny_vit, image_folder, tmp_path):
    """Determinism on CPU: the same config and seed give identical metrics, losses and saved weights."""
    _, first = folder_run
    assert cli.main(tiny_args(tiny_vit, image_folder, tmp_path, "--methods", "all")) == 0
    for method in methods.REGISTRY:
        a = read_json(first / f"{method}-seed0" / "result.json")
        b = read_json(tmp_path / f"{method}-seed0" / "result.json")
        assert a["metrics"] == b["metrics"] and a["params"] == b["params"]
        assert [(e["train_loss"], e["val_accuracy"], e["val_loss"]) for e in a["history"]] == [
            (e["train_loss"], e["val_accuracy"], e["val_loss"]) for e in b["history"]
        ]
        for f in (first / f"{method}-seed0" / "adapter").rglob("*.safetensors"):
            other = tmp_path / f.relative_to(first)
            assert f.read_bytes() == other.read_bytes(), f"{method}: {f.name} differs"


def test_another_seed_gives_another_run(folder_run, tiny_vit, image_folder, tmp_path):
    _, first = folder_run
    assert cli.main(tiny_args(tiny_vit, image_folder, tmp_path, "--methods", "head", "--seeds", "1")) == 0
    a = read_json(first / "head-seed0" / "result.json")
    b = read_json(tmp_path / "head-seed1" / "result.json")
    assert b["seed"] == 1 and a["metrics"]["test"]["loss"] != b["metrics"]["test"]["loss"]
    assert a["history"][0]["train_loss"] != b["history"][0]["train_loss"]


def test_full_fine_tuning_learns_a_separable_task(tiny_vit, image_folder, tmp_path):
    """The loop really trains: brightness classes are learnt to near-perfect accuracy."""
    assert (
        cli.main(tiny_args(tiny_vit, image_folder, tmp_path, "--methods", "full", "--full-lr", "3e-3", epochs=12)) == 0
    )
    r = read_json(tmp_path / "full-seed0" / "result.json")
    assert len(r["history"]) == 12
    m = r["metrics"]
    assert m["test"]["accuracy"] >= 0.9 and m["val"]["accuracy"] > m["val"]["start_accuracy"]
    assert r["history"][-1]["train_loss"] < 0.5 * r["history"][0]["train_loss"]


def test_run_on_save_to_disk_dataset(tiny_vit, hf_dataset_dir, tmp_path):
    assert cli.main(tiny_args(tiny_vit, hf_dataset_dir, tmp_path, "--methods", "head,lora")) == 0
    for method in ("head", "lora"):
        r = read_json(tmp_path / f"{method}-seed0" / "result.json")
        check_result(r, method=method, epochs=EPOCHS, num_classes=3, model=str(tiny_vit), dataset=str(hf_dataset_dir))
        assert r["data"]["label_names"] == CLASSES
        d = r["data"]
        assert (d["train_examples"], d["val_examples"], d["test_examples"], d["test_split"]) == (14, 4, 9, "test")
    assert sorted(p.parent.name for p in tmp_path.rglob("result.json")) == ["head-seed0", "lora-seed0"]
    assert (tmp_path / "summary.md").is_file()


def test_config_file_then_command_line(tiny_vit, image_folder, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("methods: lora\nepochs: 1\nbatch-size: 4\nlora:\n  r: 4\n  targets: query,key\n")
    assert (
        cli.main(
            tiny_args(
                tiny_vit,
                image_folder,
                tmp_path / "out",
                "--config",
                str(cfg),
                "--lora-r",
                "2",
                epochs=None,
                batch_size=None,
            )
        )
        == 0
    )
    r = read_json(tmp_path / "out" / "lora-seed0" / "result.json")
    assert r["method_config"]["r"] == 2 and r["method_config"]["targets"] == "query,key"  # CLI beats file
    assert len(r["history"]) == 1 and r["train"]["batch_size"] == 4  # from the file
    assert r["params"]["added"] == 2 * 2 * 2 * (32 + 32)
    assert r["throughput"]["steps"] == math.ceil(19 / 4)  # 24 training images, 5 of them validate


def test_methods_command_lists_the_registry(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    lines = out.split("options (defaults) and papers:", 1)[1].splitlines()  # below the capability matrix
    for name, m in methods.REGISTRY.items():
        i = next(k for k, line in enumerate(lines) if line.split()[:1] == [name])
        assert lines[i].split(None, 1)[1] == m.description
        for f in dataclasses.fields(m.config_cls):  # every option with its default, on the next line
            assert f"{f.name}={f.default}" in lines[i + 1]
        if m.paper:
            assert lines[i + 2].strip() == f"paper: {m.paper}"


def test_methods_command_shows_the_capability_matrix(capsys):
    """One row per method, first: trainable on ViT-B/16 with 101 classes (from the theory), merges, extra
    inference cost, identity at start, PEFT-format save, paper."""
    assert cli.main(["methods"]) == 0
    matrix = capsys.readouterr().out.split("\n\n", 1)[0].splitlines()
    assert matrix[0].split()[:2] == ["method", "trainable"] and set(matrix[1]) == {"-", " "}
    rows = {line.split()[0]: line for line in matrix[2:]}
    assert list(rows) == list(methods.REGISTRY) and len(rows) >= 25
    norm = lambda line: " ".join(line.split())  # noqa: E731
    assert norm(rows["lora"]) == "lora 372,581 yes none (merges) yes yes Hu et al. 2021"
    assert norm(rows["head"]) == "head 77,669 yes none (merges) yes no -"
    assert norm(rows["vpt-deep"]) == "vpt-deep 123,749 no +P prompt tokens in every block no no Jia et al. 2022"
    assert norm(rows["ssf"]) == "ssf 283,493 yes none (merges) no no Lian et al. 2022"  # official init: near, not at
    assert norm(rows["adapter"]).startswith("adapter 429,605 no +2 bottleneck adapters per block yes no")
    assert norm(rows["fact-tt"]) == "fact-tt 99,173 yes none (merges) yes no Jie & Deng 2023"
    assert norm(rows["full"]) == "full 85,876,325 yes none (merges) yes no -"


# ---------------------------------------------------------------- bad input: one line, exit code 2
BAD_INPUT = {
    "unknown method": (["--methods", "head,nope"], "unknown method 'nope'; available: "),
    "lora r=0": (["--methods", "lora", "--lora-r", "0"], "lora.r must be >= 1 (got 0)"),
    "epochs 0": (["--epochs", "0"], "--epochs must be > 0 (got 0)"),
    "missing model folder": (["--model", "{tmp}/no-model"], "model folder '{tmp}/no-model' does not exist"),
    "missing dataset folder": (["--dataset", "{tmp}/no-data"], "dataset '{tmp}/no-data' does not exist"),
    "train size too large": (["--train-size", "20"], "asked for 20 training images in 'train' but there are only 19"),
    "test size too large": (["--test-size", "13"], "asked for 13 test images in 'test' but there are only 12"),
    "val size too large": (["--val-size", "24"], "--val-size 24 leaves no training images in 'train'"),
    "tune an option no method has": (["--tune", "rank"], "--tune rank: head has no such option; head searches: lr"),
    "tune trials 0": (["--tune", "lr", "--tune-trials", "0"], "--tune-trials must be >= 1"),
    "unknown protocol": (["--protocol", "vtab-2k"], "unknown --protocol 'vtab-2k'; use vtab-1k or few-shot:K"),
    "unknown lora role": (
        ["--methods", "lora", "--lora-targets", "query,bogus"],
        "unknown target role 'bogus'; this model has: query, key, value, output, fc1, fc2",
    ),
    "config unknown key": (["--config", "{tmp}/bad.yaml"], "unknown option(s): bogus_key; see 'peftlab run --help'"),
    "config unknown method option": (["--config", "{tmp}/bad.json"], "unknown lora option(s): rank; lora takes: "),
    "config section not a mapping": (
        ["--config", "{tmp}/flat.yaml", "--lora-r", "2"],
        "'lora' must be a mapping of lora options",
    ),
    "missing config": (["--config", "{tmp}/none.yaml"], "config file '{tmp}/none.yaml' does not exist"),
    "bad device": (["--device", "tpu"], "--device must be auto, cpu or cuda (got 'tpu')"),
    "strict coverage": (
        ["--strict-coverage", "--min-per-class", "5"],
        "class coverage: val split has fewer than 5 examples for 3 classes (dark, light, mid)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_code_2(case, tiny_vit, image_folder, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("epochs: 1\nbogus_key: 1\n")
    (tmp_path / "bad.json").write_text(json.dumps({"lora": {"rank": 4}}))
    (tmp_path / "flat.yaml").write_text("lora: 4\n")
    extra, message = BAD_INPUT[case]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    capsys.readouterr()
    rc = cli.main(tiny_args(tiny_vit, image_folder, tmp_path / "out", *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("peftlab: error: ") and "\n" not in err, err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert not list(tmp_path.rglob("result.json"))


def test_coverage_warning_is_printed_and_recorded(tiny_vit, image_folder, tmp_path, capsys):
    assert (
        cli.main(tiny_args(tiny_vit, image_folder, tmp_path, "--methods", "head", "--min-per-class", "5", epochs=1))
        == 0
    )
    problem = "test split has fewer than 5 examples for 3 classes (dark, light, mid)"
    assert f"WARNING class coverage: {problem}" in capsys.readouterr().out  # shown even with --quiet
    r = read_json(tmp_path / "head-seed0" / "result.json")
    assert problem in r["data"]["notes"] and r["coverage"]["test"]["below_min"] == CLASSES
    assert f"note: {problem}" in (tmp_path / "summary.md").read_text()


def test_report_errors(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("peftlab: error: ")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert f"no result.json files under '{tmp_path}'" in capsys.readouterr().err


# ---------------------------------------------------------------- metrics
def test_metrics_from_logits_by_hand():
    labels = torch.tensor([0, 1, 2, 2, 6, 5])
    logits = torch.full((6, 7), 0.0)
    for i, p in enumerate([0, 1, 1, 2, 0, 5]):  # predictions: 4 of 6 right
        logits[i, p] = 10.0
    logits[2, 2] = 5.0  # wrong, but the true class is second: inside top-5
    logits[4, torch.tensor([1, 2, 3, 4])] = torch.tensor([9.0, 8.0, 7.0, 6.0])  # label 6 is 6th: outside top-5
    m = metrics_from_logits(logits, labels, num_classes=7)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top5_accuracy"] == pytest.approx(5 / 6)
    # per-class F1 over present classes 0,1,2,5,6: 0: p=1/2 r=1 -> 2/3; 1: p=1/2 r=1 -> 2/3; 2: p=1 r=1/2 -> 2/3;
    # 5: 1; 6: 0
    assert m["macro_f1"] == pytest.approx((2 / 3 * 3 + 1 + 0) / 5)
    assert m["per_class_accuracy"] == [1.0, 1.0, 0.5, None, None, 1.0, 0.0]
    assert m["confusion"][2] == [0, 1, 1, 0, 0, 0, 0] and sum(map(sum, m["confusion"])) == 6
    assert metrics_from_logits(logits[:, :5], labels.clamp(max=4), num_classes=5)["top5_accuracy"] is None


# ---------------------------------------------------------------- the default job on the bundled model
BUNDLED_WEIGHTS = BUNDLED_DIR / "model.safetensors"
needs_bundled = pytest.mark.skipif(
    not BUNDLED_WEIGHTS.exists(),
    reason=f"bundled model not built yet ({BUNDLED_WEIGHTS} missing; 'peftlab pretrain' makes it)",
)
DEFAULT_LABELS = ["Dress", "Coat", "Shirt", "Sneaker", "Ankle boot"]  # fashion-mnist:3,4,6,7,9


@needs_bundled
@needs_fmnist
def test_default_job_on_fashion_mnist(tmp_path, capsys):
    rc = cli.main(
        [
            "run",
            "--train-size",
            "500",
            "--val-size",
            "100",
            "--test-size",
            "300",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    names = [p.parent.name for p in sorted(tmp_path.rglob("result.json"))]
    refs = [f"ref-{b}-seed0" for b in ("majority", "pixels", "probe", "knn")]  # the default reference baselines
    assert sorted(names) == sorted([f"{m}-seed0" for m in DEFAULT_METHODS] + refs)
    results = {}
    for method in DEFAULT_METHODS:
        r = read_json(tmp_path / f"{method}-seed0" / "result.json")
        check_result(
            r, method=method, epochs=2, num_classes=5, model="peftlab-vit-tiny", dataset="fashion-mnist:3,4,6,7,9"
        )
        assert r["data"]["label_names"] == DEFAULT_LABELS and r["data"]["channels"] == 1
        assert (r["data"]["train_examples"], r["data"]["val_examples"], r["data"]["test_examples"]) == (500, 100, 300)
        assert r["coverage"]["train"]["per_class"] == dict.fromkeys(DEFAULT_LABELS, 100)
        assert r["coverage"]["val"]["per_class"] == dict.fromkeys(DEFAULT_LABELS, 20)
        assert r["coverage"]["test"]["per_class"] == dict.fromkeys(DEFAULT_LABELS, 60)
        assert r["metrics"]["test"]["chance_accuracy"] == pytest.approx(0.2)
        results[method] = r
    # every method starts from the same model and head: the same validation accuracy before training
    assert len({r["metrics"]["val"]["start_accuracy"] for r in results.values()}) == 1
    assert results["head"]["metrics"]["val"]["accuracy"] > results["head"]["metrics"]["val"]["start_accuracy"]
    assert results["full"]["params"]["trainable"] == results["full"]["params"]["total"]
    summary = (tmp_path / "summary.md").read_text()
    for method in DEFAULT_METHODS:
        assert f"| {method} |" in summary
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "fashion-mnist:3,4,6,7,9 (5 classes)" in printed
    for method in DEFAULT_METHODS:
        assert any(line.startswith(method + " ") for line in printed.splitlines())


@needs_bundled
@needs_fmnist
def test_linear_probe_on_bundled_model_beats_its_baseline_widely(tmp_path):
    """Pretrained features transfer (classes 0,1,2,5,8 -> 3,4,6,7,9): a head alone lifts accuracy far above the fresh
    head's. 10 epochs (80 steps): 2 epochs of 500 images are only 16 AdamW steps, too few for a probe."""
    assert (
        cli.main(
            [
                "run",
                "--methods",
                "head",
                "--train-size",
                "500",
                "--test-size",
                "300",
                "--epochs",
                "10",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    m = read_json(tmp_path / "head-seed0" / "result.json")["metrics"]
    assert m["test"]["accuracy"] >= m["val"]["start_accuracy"] + 0.3, m


@needs_bundled
@needs_fmnist
def test_the_probe_on_pretrained_features_beats_the_probe_on_a_random_copys(tmp_path):
    """Issue 16's first check, in peftlab itself: the same converged probe (C chosen on validation) on the bundled
    model's features and on a randomly initialised copy's (the 'probe-random' reference), same 250 training images.
    Measured: 0.876 against 0.720 (seed 0); the pretraining must buy at least 0.08 of it."""
    args = ["run", "--methods", "head", "--epochs", "1", "--train-size", "250", "--test-size", "500"]
    assert cli.main(args + ["--baselines", "probe,probe-random", "--out", str(tmp_path), "--quiet"]) == 0
    probe, rand = (read_json(tmp_path / f"ref-{n}-seed0" / "result.json") for n in ("probe", "probe-random"))
    assert rand["label"] == "linear probe on random features" and rand["train"]["input"] == "random-features"
    assert rand["metrics"]["test"]["digest"] == probe["metrics"]["test"]["digest"]  # the same test images
    assert probe["metrics"]["test"]["accuracy"] >= rand["metrics"]["test"]["accuracy"] + 0.08
    assert rand["metrics"]["test"]["accuracy"] >= 0.4  # random features still carry the image: far above chance
    assert rand["time"]["features_s"] > 0 and "C" in rand["method_config"]
    md = (tmp_path / "report.md").read_text()
    assert "Pretraining, frozen: the linear probe (converged) scores " in md
    assert "(linear probe on random features) — above it beyond noise." in md


# per-epoch training losses, validation accuracies and the test accuracy of the bundled model on Fashion-MNIST
# 3,4,6,7,9 (100 train / 100 validation / 50 test images, seed 0, 2 epochs of batches of 25). Recorded when issue 14
# brought the validation split; re-recorded with the bundled model remade for issue 16 (recipe and default
# task changed): a change in numerics shows here, not only a change between two runs of the same code
GOLDEN = {
    "head": ([1.0557644653320313, 0.5406967926025391], [0.78, 0.81], 0.82),
    "lora": ([1.202391128540039, 0.7283750152587891], [0.70, 0.77], 0.84),
    "full": ([1.2447587585449218, 0.8354866027832031], [0.67, 0.71], 0.74),
}


@needs_bundled
@needs_fmnist
def test_golden_losses_of_the_bundled_model(tmp_path, capsys):
    args = ["run", "--methods", "head,lora,full", "--train-size", "100", "--val-size", "100", "--test-size", "50"]
    args += ["--epochs", "2", "--batch-size", "25", "--out", str(tmp_path), "--quiet"]
    # the learning rates the golden values were recorded with (the loop's numbers, not the defaults, are pinned)
    args += ["--head-lr", "0.01", "--lora-lr", "0.005", "--full-lr", "0.0005"]
    assert cli.main(args) == 0, capsys.readouterr().err
    for method, (losses, val, test) in GOLDEN.items():
        r = read_json(tmp_path / f"{method}-seed0" / "result.json")
        assert [h["train_loss"] for h in r["history"]] == pytest.approx(losses, rel=1e-4), method
        assert [h["val_accuracy"] for h in r["history"]] == pytest.approx(val, abs=1e-6), method
        assert r["metrics"]["test"]["accuracy"] == pytest.approx(test, abs=1e-6), method
