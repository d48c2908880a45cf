"""Model cards: the README.md of a saved adapter folder or merged model, with YAML metadata the Hugging
Face hub understands (library_name, base_model when it is a hub model, pipeline_tag, datasets, a
model-index with the test accuracy and its protocol) and a body that says what was trained on what, how
well, at what cost, how to load it without peftlab and how to reproduce it.

Where the base model is written so that it resolves from anywhere (labels.json, adapter_config.json, the
card): a hub id as given, a local folder as an absolute path, the bundled model as its folder."""

from __future__ import annotations

import re
import shlex
from dataclasses import MISSING, fields
from pathlib import Path

from .. import __version__
from .. import methods as M
from ..config import BUNDLED_NAME, RunConfig, run_fields
from ..models import bundled_path
from ..results import Result

HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
FASHION_MNIST_HUB = "zalando-datasets/fashion_mnist"  # the hub's copy of the built-in Fashion-MNIST tasks' data


def base_location(model: str) -> str:
    """Where the base model loads from with plain transformers, from any working directory."""
    if model in (BUNDLED_NAME, "bundled"):
        return str(bundled_path())
    path = Path(model).expanduser()
    return str(path.absolute()) if path.exists() else model


def hub_model_id(model: str) -> str | None:
    """The base model's hub id, or None for the bundled model and local folders (the hub's base_model
    field takes hub ids only)."""
    if model in (BUNDLED_NAME, "bundled") or model.startswith((".", "/", "~")) or Path(model).exists():
        return None
    return model if HUB_ID.fullmatch(model) else None


def hub_dataset_id(dataset: str) -> str | None:
    if dataset.startswith("fashion-mnist"):
        return FASHION_MNIST_HUB
    if dataset.startswith((".", "/", "~")) or Path(dataset).exists() or not HUB_ID.fullmatch(dataset):
        return None
    return dataset


def labels_record(model: str, method: str, label_names: list[str]) -> dict:
    """adapter/labels.json: what plain transformers + PEFT need besides the adapter."""
    return {
        "base_model": base_location(model),
        "method": method,
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
    }


def loading_kind(method: str) -> str:
    """How the saved part loads without peftlab: 'peft' (an adapter folder), 'tensors' (a method that only
    changes the base's own tensors: load them into the base) or 'peftlab' (a method that adds modules)."""
    m = M.get(method)
    if m.caps.peft_format:
        return "peft"
    return "tensors" if m.caps.mergeable and m.merge is None else "peftlab"


def _defaults() -> dict:
    out = {}
    for f in run_fields():
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def _arg(flag: str, value) -> list[str]:
    if isinstance(value, bool):
        return [f"--{flag}" if value else f"--no-{flag}"]
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return [f"--{flag}", str(value)]


def reproduce_command(result: Result) -> str:
    """The `peftlab run` command that trains this run again (the options that differ from the defaults, and
    the method's options as the run had them, chosen by a search or given)."""
    config, defaults = dict(result.get("config") or {}), _defaults()
    method, seed = result["method"], result["seed"]
    args = ["peftlab", "run", "--methods", method, "--seeds", str(seed)]
    known = {f.name for f in fields(RunConfig)}
    per_class = (result.get("data") or {}).get("train_per_class")
    if config.get("train_sizes") and per_class:  # one run of a --train-sizes sweep: its own size only
        config["train_sizes"] = [str(per_class)]
    for name, value in config.items():
        if name in known and name not in ("methods", "seeds") and value is not None and value != defaults.get(name):
            args += _arg(name.replace("_", "-"), value)
    if config.get("scratch"):
        args += ["--baselines", "scratch"]
    method_defaults = M.get(method).config_cls().options()
    for name, value in (result.get("method_config") or {}).items():
        if value is not None and value != method_defaults.get(name):
            args += _arg(f"{method}-{name.replace('_', '-')}", value)
    return " ".join(shlex.quote(a) for a in args)


def _recipe(kind: str, folder: str) -> str:
    head = ["import json", "", "from transformers import AutoModelForImageClassification"]
    load_base = [
        f'info = json.load(open("{folder}/labels.json"))  # where the base model is, the task\'s labels',
        'id2label = {int(i): name for i, name in info["id2label"].items()}',
        "model = AutoModelForImageClassification.from_pretrained(",
        '    info["base_model"], id2label=id2label, label2id=info["label2id"], ignore_mismatched_sizes=True',
        ")",
    ]
    if kind == "peft":
        peft = f'model = PeftModel.from_pretrained(model, "{folder}")'
        return "\n".join([*head[:2], "from peft import PeftModel", *head[2:], "", *load_base, peft])
    if kind == "tensors":
        return "\n".join(
            [
                *head,
                "from safetensors.torch import load_file",
                "",
                *load_base,
                f'model.load_state_dict(load_file("{folder}/trainable.safetensors"), strict=False)',
            ]
        )
    what = "a plain transformers model, merged" if kind == "peftlab-merges" else "the base with the method's modules"
    return "\n".join(["import peftlab", "", f'model = peftlab.load("{Path(folder).parent}")  # {what}'])


def _yaml(result: Result, kind: str) -> str:
    import yaml

    test, data = result["metrics"]["test"], result.get("data", {})
    base_hub, data_hub = hub_model_id(result["model"]), hub_dataset_id(result["dataset"])
    library = {"merged": "transformers", "peft": "peft"}.get(kind, "peftlab")
    meta: dict = {"library_name": library}
    if base_hub:
        meta["base_model"] = base_hub
        meta["base_model_relation"] = {"merged": "merge", "peft": "adapter"}.get(kind, "finetune")
    meta["pipeline_tag"] = "image-classification"
    meta["tags"] = ["peftlab", "image-classification", result["method"]] + (["peft"] if kind == "peft" else [])
    if data_hub:
        meta["datasets"] = [data_hub]
    meta["metrics"] = ["accuracy", "f1"]
    dataset = {"name": result["dataset"], "type": data_hub or "imagefolder", "split": data.get("test_split", "test")}
    meta["model-index"] = [
        {
            "name": result.get("run_name", result["method"]),
            "results": [
                {
                    "task": {"type": "image-classification", "name": "Image Classification"},
                    "dataset": dataset,
                    "metrics": [
                        {"type": "accuracy", "value": round(test["accuracy"], 4), "name": "test accuracy"},
                        {
                            "type": "f1",
                            "value": round(test["macro_f1"], 4),
                            "name": "test macro-F1",
                            "args": {"average": "macro"},
                        },
                    ],
                }
            ],
        }
    ]
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None)


def card(result: Result, kind: str, folder: str | Path) -> str:
    """The README.md of a run's saved part (kind: 'peft', 'tensors' or 'peftlab', see loading_kind) or of a
    merged model ('merged'), as a Markdown string with YAML front matter."""
    test, val = result["metrics"]["test"], result["metrics"].get("val") or {}
    data, sel, p = result.get("data", {}), result.get("selection", {}), result["params"]
    info = result.get("method_info") or {}
    labels = data.get("label_names", [])
    base = result["model"]
    where = base_location(base)
    if base in (BUNDLED_NAME, "bundled"):
        base_text = f"`{base}`, the model bundled with peftlab (its folder: `{where}`, `peftlab.bundled_path()`)"
    elif hub_model_id(base):
        base_text = f"[`{base}`](https://huggingface.co/{base}) (hub)"
    else:
        base_text = f"`{where}` (a local folder)"
    epochs = f"epoch {sel.get('epoch')} of {sel.get('epochs_trained')}"
    protocol = (
        f"{test['examples']:,} images of split '{data.get('test_split', 'test')}', scored once with the weights "
        f"chosen on validation ({sel.get('checkpoint', '?')}: {epochs}; refit on {sel.get('refit', 'train')})"
    )
    options = ", ".join(f"{k}={v}" for k, v in (result.get("method_config") or {}).items())
    env = result.get("env", {})
    device = f"{env.get('device', '?')} ({env.get('device_name', '?')})"
    versions = env.get("packages", {})
    paper = f" ({info['paper']})" if info.get("paper") else ""
    sizes = (
        f"; {data['train_examples']:,} training, {data['val_examples']:,} validation, {data['test_examples']:,} test "
        "images"
        if all(isinstance(data.get(k), int) for k in ("train_examples", "val_examples", "test_examples"))
        else ""
    )
    chance = test.get("chance_accuracy")
    base_n = f"{p['base']:,}" if isinstance(p.get("base"), int) else "?"
    start = val.get("start_accuracy")
    rows = [
        ("method", f"`{result['method']}`: {info.get('description', '')}{paper}"),
        ("method options", options or "-"),
        ("base model", base_text),
        ("dataset", f"`{result['dataset']}`: {len(labels)} classes{sizes}"),
        ("test accuracy", f"**{test['accuracy']:.4f}** on {protocol}"),
        ("test macro-F1", f"{test['macro_f1']:.4f}"),
        ("chance (most frequent class)", "-" if chance is None else f"{chance:.4f}"),
        (
            "validation accuracy",
            f"{val['accuracy']:.4f}" + ("" if start is None else f" (before training: {start:.4f})") if val else "-",
        ),
        (
            "trainable parameters",
            f"{p['trainable']:,} ({p['trainable_pct']:.2f}% of the base model's {base_n}); {p['total']:,} in all",
        ),
        ("training time", f"{result['time']['train_s']:.3g} s on {device}"),
        ("seed", str(result["seed"])),
        (
            "peftlab",
            f"{__version__} (torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}, "
            f"peft {versions.get('peft', '?')})",
        ),
    ]
    title = f"{result.get('run_name', result['method'])}: `{result['method']}` on {base} for {result['dataset']}"
    what = {
        "peft": "a PEFT adapter folder (the new classification head included, `modules_to_save`)",
        "tensors": "the trained tensors (`trainable.safetensors`: the new head and what the method trained)",
        "peftlab": "the trained tensors of the method's added modules and the new head (`trainable.safetensors`)",
        "merged": "a plain transformers model: the trained part folded into the base weights, with the task's labels",
    }[kind]
    lines = [
        "---",
        _yaml(result, kind).rstrip(),
        "---",
        "",
        f"# {title}",
        "",
        f"Fine-tuned and measured with [peftlab](https://pypi.org/project/peftlab/). This folder holds {what}.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Labels",
        "",
        ", ".join(f"{i}: {n}" for i, n in enumerate(labels)),
        "",
        "## Use it",
        "",
    ]
    if kind == "merged":
        lines += [
            "```python",
            "from transformers import pipeline",
            "",
            f'classify = pipeline("image-classification", model="{Path(folder).absolute()}")',
            'classify("image.png")',
            "```",
        ]
        if data.get("channels") == 1:
            lines += [
                "",
                "This model takes 1-channel (grayscale) images; transformers' pipeline converts every image to RGB "
                'and cannot feed it: use `peftlab predict`, or the image processor on `image.convert("L")`.',
            ]
    else:
        merges = kind == "peftlab" and M.get(result["method"]).caps.mergeable
        recipe = _recipe("peftlab-merges" if merges else kind, str(Path(folder).absolute()))
        lines += ["```python", recipe, "```"]
        lines += [
            "",
            f"`peftlab predict {Path(folder).absolute().parent} IMAGES...` prints top-k labels; "
            f"`peftlab merge {Path(folder).absolute().parent} --out DIR` writes a plain transformers model.",
        ]
    lines += ["", "## Reproduce", "", "```sh", reproduce_command(result), "```", ""]
    return "\n".join(lines)


def write_card(folder: str | Path, result: Result, kind: str | None = None) -> Path:
    from ..results import write_text_atomic

    path = Path(folder) / "README.md"
    write_text_atomic(path, card(result, kind or loading_kind(result["method"]), folder))
    return path
