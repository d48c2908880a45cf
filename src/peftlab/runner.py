"""One comparison: load the data once, then for each method load, prepare, train, measure, save."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import methods as M
from . import theory
from .config import RunConfig
from .data import Task, load_task
from .errors import UserError
from .measure import count_params, environment, peak_memory, reset_peak_memory, save_trained_part
from .models import check_model_path, describe, fit_head, image_spec, load_model
from .report import format_text, summary_markdown
from .results import write_json_atomic
from .train import fit, make_accelerator


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".peftlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder '{out}' ({e.strerror}); pass a writable --out") from e


def _model_config(name: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(check_model_path(name))
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load model '{name}': {first}") from e


def preflight(cfg: RunConfig, config, label_names: list[str]) -> None:
    """Apply every method to a weightless (meta-device) copy of the model before any training, so a
    bad method option (e.g. a LoRA target the model lacks) fails before any result is written."""
    from transformers import AutoModelForImageClassification

    for name in cfg.method_names:
        with torch.device("meta"):
            model = AutoModelForImageClassification.from_config(config)
        fit_head(model, label_names, cfg.seed)
        M.get(name).apply(model, describe(model), cfg.method_options[name])


def run_one(cfg: RunConfig, method: str, task: Task, spec, accelerator, log: Callable[[str], None]) -> dict:
    """Fine-tune one method and write <out>/<method>-seed<seed>/result.json."""
    t_start = time.perf_counter()
    mcfg = cfg.method_options[method]
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model, task.label_names, cfg.seed)
    base_total = sum(p.numel() for p in model.parameters())
    # derived before the method touches the model: from the config, or from module shapes
    derived = (theory.derive(model.config, method, mcfg, task.num_classes) if theory.supported(model.config)
               else theory.structural(model, method, mcfg, task.num_classes))
    prepared = M.get(method).apply(model, describe(model), mcfg)
    params = count_params(prepared.model, base_total)
    params |= theory.check(derived, params)
    if params["mismatches"]:
        log(f"WARNING {method}: measured parameter counts differ from the {derived.kind}: " + "; ".join(
            f"{m['what']} {m[derived.kind]:,} vs measured {m['measured']:,}" for m in params["mismatches"]))
    reset_peak_memory(accelerator.device)
    out = fit(prepared, task, spec, cfg.train_config(), cfg.lr_for(method), cfg.seed, accelerator,
              progress=not cfg.quiet, desc=method)
    memory = peak_memory(accelerator.device)
    run_dir = Path(cfg.out) / f"{method}-seed{cfg.seed}"
    adapter_bytes = save_trained_part(out["model"], run_dir / "adapter")
    base, final = out["baseline"], out["final"]
    eval_counts = np.bincount(task.eval.labels.numpy(), minlength=task.num_classes)
    result = {
        "status": "ok",
        "method": method,
        "method_config": mcfg.options() | {"lr": cfg.lr_for(method)},
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "run_name": run_dir.name,
        "params": params,
        "metrics": {
            "baseline_accuracy": base["accuracy"],
            "baseline_top5_accuracy": base["top5_accuracy"],
            "baseline_macro_f1": base["macro_f1"],
            # the best a model that ignores the image can do: always predict the most frequent class
            "chance_accuracy": float(eval_counts.max() / eval_counts.sum()),
            "accuracy": final["accuracy"],
            "best_accuracy": out["best_accuracy"],
            "best_epoch": out["best_epoch"],
            "top5_accuracy": final["top5_accuracy"],
            "macro_f1": final["macro_f1"],
            "eval_loss": final["loss"],
            "per_class_accuracy": dict(zip(task.label_names, final["per_class_accuracy"])),
            "confusion": final["confusion"],
        },
        "history": out["history"],
        "time": {"train_s": out["train_s"], "eval_s": out["eval_s"], "total_s": time.perf_counter() - t_start},
        "throughput": {"train_img_s": out["images_seen"] / out["train_s"], "steps": out["steps"]},
        "memory": memory,
        "size": {"adapter_bytes": adapter_bytes, "adapter_path": "adapter"},
        "coverage": task.coverage,
        "data": {"label_names": task.label_names, "train_examples": len(task.train),
                 "eval_examples": len(task.eval), "eval_split": task.eval.name, "notes": task.notes,
                 "image_size": [spec.height, spec.width], "channels": spec.channels},
        "train": asdict(cfg.train_config()) | {"precision": accelerator.mixed_precision},
        "env": environment(accelerator.device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(run_dir / "result.json", result)
    log(f"{method}: accuracy {base['accuracy']:.3f} → {final['accuracy']:.3f} in {out['train_s']:.1f} s "
        f"({params['trainable']:,} trainable) → {run_dir / 'result.json'}")
    return result


def run(cfg: RunConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Compare cfg's methods on one model and dataset; write results, summary.md, print the table."""
    t0 = time.perf_counter()
    say = (lambda s: None) if cfg.quiet else log
    out = Path(cfg.out)
    _check_writable(out)
    accelerator = make_accelerator(cfg.device, cfg.precision)
    config = _model_config(cfg.model)
    spec = image_spec(cfg.model, config)
    preflight(cfg, config, ["a", "b"])  # the head size does not change whether a method applies
    task = load_task(cfg.dataset, spec, train_size=cfg.train_size, eval_size=cfg.eval_size, seed=cfg.seed,
                     image_column=cfg.image_column, label_column=cfg.label_column,
                     train_split=cfg.train_split, eval_split=cfg.eval_split,
                     min_per_class=cfg.min_per_class, strict_coverage=cfg.strict_coverage, warn=log)
    say(f"data: {cfg.dataset}, {task.num_classes} classes, {len(task.train):,} train / {len(task.eval):,} eval "
        f"images at {spec.channels}x{spec.height}x{spec.width}, decoded in {time.perf_counter() - t0:.1f} s")
    results = [run_one(cfg, m, task, spec, accelerator, say) for m in cfg.method_names]
    (out / "summary.md").write_text(summary_markdown(results))
    if not cfg.quiet:
        log("")
        log(format_text(results))
        log(f"\nwall time {time.perf_counter() - t0:.1f} s · results in {out}{os.sep} (summary.md)")
    return results
