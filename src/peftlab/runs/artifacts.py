"""Use what a run trained: reload it, merge it into a plain transformers model, predict, evaluate.

A run folder holds result.json and adapter/: a PEFT adapter folder (adapter_config.json +
adapter_model.safetensors, the new head included via modules_to_save) for PEFT methods, or
trainable.safetensors (the trained tensors) for head/last/full and the other hand-written methods.
What else training changed (the running statistics of the BatchNorms that trained) is saved too: in
trainable.safetensors, or beside a PEFT adapter in norm_statistics.safetensors.
labels.json beside them carries the base model and the label names.

Beside them: labels.json (where the base model loads from, from any directory, and the task's labels), the
base's image processor (preprocessor_config.json) and a model card (README.md, see cards.py).

Colour: a 3-channel model gets every image converted to RGB (grayscale replicated), exactly what
transformers' image-classification pipeline does before the image processor (its processor is saved with
do_convert_rgb, so that calling it on a grayscale image does the same). A 1-channel model gets every image
converted to 8-bit grayscale (PIL's "L", ITU-R 601 luma); its processor declares 1-channel mean and std, and
transformers' pipeline, which converts to RGB, cannot feed it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import methods as M
from ..config import DataOptions, method_config
from ..data import IMAGE_SUFFIXES, Split, load_task
from ..data.decoding import _pil_to_array
from ..errors import UserError
from ..logs import warning
from ..methods.peftwrap import conv_attributes, use_peft
from ..models import ImageSpec, describe, image_spec, load_model, resolve_model_path
from ..models.loading import load_kwargs
from ..results import Result, Status, load_result, write_json_atomic
from ..results.io import umask
from ..training import metrics_from_logits, trained_norm_buffers
from .cards import labels_record, write_card

NORM_STATS = "norm_statistics.safetensors"  # beside a PEFT adapter: the trained BatchNorms' running statistics


def save_trained_part(model: nn.Module, folder: Path) -> int:
    """Save what the run trained and return its size in bytes: a PEFT adapter folder (with the new
    head) for PEFT models, else the trainable tensors as safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    stats = trained_norm_buffers(model)  # BatchNorm running statistics that training changed
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder)
        if stats:
            save_file(stats, str(folder / NORM_STATS))
    else:
        tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors | stats, str(folder / "trainable.safetensors"))
    mode = 0o666 & ~umask()  # PEFT and safetensors may write 0600 files: the user's umask decides
    for f in folder.rglob("*"):
        if f.is_file():
            f.chmod(mode)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.suffix == ".safetensors")


def save_run_files(folder: Path, model_name: str, method: str, label_names: list[str], channels: int) -> None:
    """Beside the trained part: labels.json (the base model as it loads from anywhere, the task's labels)
    and the base's image processor (what a plain transformers user preprocesses images with)."""
    write_json_atomic(folder / "labels.json", labels_record(model_name, method, label_names))
    save_processor(model_name, folder, channels)


def save_processor(model_name: str, folder: Path, channels: int) -> bool:
    """The base model's image processor, saved into folder; a 3-channel model's converts images to RGB
    (as the pipeline does) so that it takes grayscale files too. False when the base has none."""
    from transformers import AutoImageProcessor

    try:
        path = resolve_model_path(model_name)
        processor = AutoImageProcessor.from_pretrained(path, **load_kwargs(path))
    except (OSError, ValueError):
        return False  # the base had no image processor: peftlab read size and channels from the config
    if channels == 3 and hasattr(processor, "do_convert_rgb"):
        processor.do_convert_rgb = True
    processor.save_pretrained(folder)
    return True


def finished_result(run: str | Path) -> Result:
    """The result of a run folder that finished ('ok'); anything else is a one-line error."""
    path = Path(run) / "result.json"
    if not path.is_file():
        raise UserError(f"'{run}' is not a run folder (no result.json); pass a folder written by 'peftlab run'")
    result = load_result(path)
    if result.get("status") != Status.OK:
        raise UserError(f"run '{run}' did not finish ({result.get('status')}: {result.get('error', '')})")
    return result


def load_run(run: str | Path, trust_remote_code: bool = False) -> tuple[nn.Module, ImageSpec, Result]:
    """The fine-tuned model of a run (in eval mode), its image spec and its result. A PEFT-format method's
    adapter folder is loaded by PEFT (from the folder only, never the hub); any other method is applied again
    to a fresh base (its rebuild: the same modules, frozen or added) and its trained tensors are loaded into
    it. Missing, damaged or ill-fitting weights are a one-line error."""
    result = finished_result(run)
    labels = result["data"]["label_names"]
    adapter = Path(run) / result["size"]["adapter_path"]
    method = M.get(result["method"])
    weights = adapter / ("adapter_model.safetensors" if method.caps.peft_format else "trainable.safetensors")
    if not weights.is_file():
        raise UserError(f"run '{run}' has no saved weights ({weights} is missing); rerun it to train them again")
    model = load_model(result["model"], labels, result["seed"], trust_remote_code=trust_remote_code)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if method.caps.peft_format:  # BOFT as it trained (peftwrap); a local folder, never a hub repo
            model = use_peft().PeftModel.from_pretrained(model, str(adapter), local_files_only=True)
            conv_attributes(model)
            if (adapter / NORM_STATS).exists():  # the BatchNorm statistics that training changed
                model.load_state_dict(load_file(str(adapter / NORM_STATS)), strict=False)
        else:
            model = method.apply(model, describe(model), method_config(method.name, result["method_config"]), 1).model
            unexpected = model.load_state_dict(load_file(str(weights)), strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"{len(unexpected)} unknown tensors, e.g. {unexpected[0]}")
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        first = next((line for line in lines if "size mismatch" in line), lines[0])[:300]
        raise UserError(
            f"saved weights of run '{run}' cannot be loaded into model '{result['model']}' with its "
            f"{len(labels)} labels ({type(e).__name__}: {first}); the run folder is damaged or was edited: rerun it"
        ) from e
    return model.eval(), run_spec(result, _config(model), trust_remote_code), result


def run_spec(result: Result, config, trust_remote_code: bool = False) -> ImageSpec:
    """The input spec the run trained with: as recorded in its result (data.image_size, channels and
    normalization), else read again from the base model's image processor (runs from before it was
    recorded)."""
    d = result.get("data", {})
    norm = d.get("normalization")
    if not norm or "image_size" not in d or "channels" not in d:
        return image_spec(result["model"], config, trust_remote_code)
    (h, w), c = d["image_size"], d["channels"]
    geo = d.get("geometry") or {}  # runs from before it was recorded: resized to the size (bilinear)
    steps = tuple(tuple(step) for step in geo.get("steps", ()))
    return ImageSpec(
        h,
        w,
        c,
        tuple(norm["mean"]),
        tuple(norm["std"]),
        norm["rescale"],
        "",
        steps,
        geo.get("resample", 2),
        bool(geo.get("bgr", False)),
    )


def _config(model: nn.Module):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def load(run: str | Path, trust_remote_code: bool = False) -> nn.Module:
    """The fine-tuned model of a run as a transformers model (eval mode, the task's id2label): folded into the
    base architecture when its method merges (a plain transformers model), else the base with the method's
    trained modules (VPT, adapters)."""
    model, _, result = load_run(run, trust_remote_code)
    method = M.get(result["method"])
    return method.merged(model).eval() if method.caps.mergeable else model


def merge(run: str | Path, out: str | Path, trust_remote_code: bool = False) -> Path:
    """Fold the run's trained part into the base model; write a plain transformers model folder
    (config with the run's labels, safetensors weights, the base's image processor, a model card) that
    transformers' image-classification pipeline loads. Every method whose capabilities say it merges: PEFT's
    merge_and_unload, a hand-written method's own fold (SSF, RepAdapter, FacT), nothing for those that add
    nothing; the others (VPT, adapters) are a one-line error."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a folder that is not empty" if out.is_dir() else "a file"
        raise UserError(f"--out '{out}' is {what}; peftlab does not overwrite it: pass a new or empty folder")
    result = finished_result(run)
    method = M.get(result["method"])
    if not method.caps.mergeable:
        method.merged(None)  # the method's one-line error: what it keeps at inference, what to use instead
    model, spec, result = load_run(run, trust_remote_code)
    model = method.merged(model)
    out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model.save_pretrained(out)
    save_processor(result["model"], out, spec.channels)
    write_card(out, result, "merged")
    if spec.channels == 1:
        warning(
            f"{out} takes 1-channel (grayscale) images: transformers' image-classification pipeline converts every "
            "image to RGB and cannot feed it; use 'peftlab predict', or its image processor on image.convert('L')"
        )
    return out


def _image_paths(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise UserError(f"'{item}' does not exist; pass image files or folders of images")
    if not paths:
        raise UserError("no images found in " + ", ".join(inputs))
    return paths


@torch.no_grad()
def predict(
    run: str | Path, inputs: list[str], top_k: int = 5, batch_size: int = 64, trust_remote_code: bool = False
) -> list[dict]:
    """Top-k labels with probabilities for each image file (folders are searched recursively); an image that
    cannot be read (damaged, or a decompression bomb: PIL's pixel limit) gets an error entry, the others
    their predictions."""
    from PIL import Image, UnidentifiedImageError

    model, spec, result = load_run(run, trust_remote_code)
    labels = result["data"]["label_names"]
    k = max(1, min(top_k, len(labels)))
    out: list[dict] = []
    paths = _image_paths(inputs)
    for i in range(0, len(paths), batch_size):
        batch, ok = [], []
        for p in paths[i : i + batch_size]:
            try:
                with Image.open(p) as img:
                    img.load()  # decoded whole, as the pipeline does (no reduced-scale JPEG decoding)
                    batch.append(torch.from_numpy(_pil_to_array(img, spec)))
                ok.append(p)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
                out.append({"path": str(p), "error": f"cannot read image: {e}"})
        if not batch:
            continue
        probs = model(pixel_values=spec.normalize(torch.stack(batch))).logits.float().softmax(-1)
        top = probs.topk(k, dim=-1)
        for p, vals, idx in zip(ok, top.values.tolist(), top.indices.tolist()):
            out.append(
                {"path": str(p), "predictions": [{"label": labels[j], "probability": v} for v, j in zip(vals, idx)]}
            )
    return out


def seen_hashes(run: str | Path, result: Result) -> np.ndarray | None:
    """The content hashes of every image the run trained or selected on (its identities file), or None
    for a run written before they were recorded."""
    path = Path(run) / (result.get("data", {}).get("identities") or "identities.npz")
    if not path.is_file():
        return None
    with np.load(path) as ids:
        return np.concatenate([ids["train_hash"], ids["val_hash"]])


def evaluate_run(
    run: str | Path,
    dataset: str,
    *,
    test_size: int = 0,
    test_split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Accuracy etc. of a saved run on a dataset's test split (labels matched by name), drawn with the
    run's own seed, without any image the run trained or selected on: those are excluded by content hash
    (and counted), and when nothing is left it is an error."""
    model, spec, result = load_run(run, trust_remote_code)
    labels = result["data"]["label_names"]
    options = DataOptions(
        dataset,
        test_size=test_size,
        test_split=test_split,
        image_column=image_column,
        label_column=label_column,
        min_per_class=1,
    )
    task = load_task(options, spec, seed=result["seed"], roles=("test",), warn=lambda s: None)
    unknown = [n for n in task.label_names if n not in labels]
    if unknown:
        raise UserError(f"dataset '{dataset}' has labels the run was not trained on: {', '.join(unknown[:5])}")
    seen = seen_hashes(run, result)
    keep = np.ones(len(task.test), dtype=bool) if seen is None else ~np.isin(task.test.hashes(), seen)
    excluded = int((~keep).sum())
    if not keep.any():
        raise UserError(
            f"every one of the {len(task.test)} images of {dataset}'s '{task.test.name}' split is an image run "
            f"'{run}' trained or selected on: nothing held out is left to evaluate; pass another dataset or split"
        )
    remap = torch.tensor([labels.index(n) for n in task.label_names])
    idx = torch.from_numpy(np.flatnonzero(keep))
    split = Split(task.test.name, task.test.images[idx], remap[task.test.labels[idx]])
    with torch.no_grad():
        logits = torch.cat(
            [
                model(pixel_values=spec.normalize(split.images[i : i + 256])).logits.float()
                for i in range(0, len(split), 256)
            ]
        )
    metrics = metrics_from_logits(logits, split.labels, len(labels))
    present = np.bincount(split.labels.numpy(), minlength=len(labels))
    return {
        "run": str(run),
        "dataset": dataset,
        "split": split.name,
        "seed": result["seed"],
        "examples": len(split),
        "excluded": excluded,  # images the run trained or selected on
        "exclusion": "by content hash" if seen is not None else "not possible: the run records no identities",
        "classes_present": int((present > 0).sum()),
        **{k: metrics[k] for k in ("accuracy", "top5_accuracy", "macro_f1", "loss")},
    }
