"""One run, and a Worker that runs many in one process: load the model, apply the method, derive its
counts, train, measure, save what it trained, and return the run's result record."""

from __future__ import annotations

import errno
import math
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import methods as M
from .. import theory
from ..config import BUNDLED_NAME, RunConfig, RunSpec
from ..data import DecodeCache, Task, is_mapped, load_task
from ..errors import UserError
from ..models import check_model_path, describe, image_spec, load_model
from ..results import SCHEMA_VERSION, Result, Status, write_json_atomic, write_text_atomic
from ..training import Diverged, FitResult, fit, make_accelerator
from ..training.inference import inference_cost, timed_batch
from ..training.measure import count_params, environment, peak_flops, peak_memory, reset_peak_memory
from .artifacts import save_trained_part


def _model_config(name: str):
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoConfig

    hub_log = hub_logging.get_logger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel("ERROR")  # no "Retrying in Ns" lines: one error line is the message
    try:
        return AutoConfig.from_pretrained(check_model_path(name))
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"cannot load model '{name}': {first}; check the name and the network, or pass a local "
            f"model folder or '{BUNDLED_NAME}'"
        ) from e
    finally:
        hub_log.setLevel(level)


def run_one(cfg: RunConfig, s: RunSpec, task: Task, spec, accelerator, log: Callable[[str], None]) -> Result:
    """Fine-tune one method configuration with one seed; return its result record."""
    t_start = time.perf_counter()
    torch.manual_seed(s.seed)
    method = M.get(s.method)
    model = load_model(cfg.model, task.label_names, s.seed)
    base_total = sum(p.numel() for p in model.parameters())
    # derived before the method touches the model: from the config, or from module shapes
    derived = (
        theory.derive(model.config, method, s.options, task.num_classes)
        if theory.supported(model.config)
        else theory.structural(model, method, s.options, task.num_classes)
    )
    total_steps = cfg.epochs * math.ceil(len(task.train) / cfg.batch_size)  # as training.fit plans them
    prepared = method.apply(model, describe(model), s.options, total_steps)
    params = count_params(prepared.model, base_total)
    params |= theory.check(derived, params)
    if params["mismatches"]:
        log(
            f"WARNING {s.label}: measured parameter counts differ from the {derived.kind}: "
            + "; ".join(f"{m['what']} {m[derived.kind]:,} vs measured {m['measured']:,}" for m in params["mismatches"])
        )
    reset_peak_memory(accelerator.device)
    out = fit(
        prepared,
        task,
        spec,
        cfg.train_config(),
        s.options.lr,
        s.seed,
        accelerator,
        progress=not cfg.quiet,
        desc=s.label,
    )
    memory = peak_memory(accelerator.device)
    adapter_dir = Path(cfg.out) / s.name / "adapter"
    adapter_bytes = 0
    if accelerator.is_main_process:  # one process writes; the others trained the same weights
        adapter_bytes = save_trained_part(out.model, adapter_dir)
        # what a plain PeftModel.from_pretrained user needs besides the adapter: the base and the labels
        write_json_atomic(
            adapter_dir / "labels.json",
            {"base_model": cfg.model, "method": s.method, "id2label": dict(enumerate(task.label_names))},
        )
    inference = _inference(cfg, s, task, spec, method, out.model, accelerator) if accelerator.is_main_process else None
    base, final = out.baseline, out.final
    eval_counts = np.bincount(task.eval.labels.numpy(), minlength=task.num_classes)
    return _header(cfg, s) | {
        "status": Status.OK.value,  # records hold JSON values: as read back from disk
        "params": params,
        "metrics": {
            "baseline_accuracy": base["accuracy"],
            "baseline_top5_accuracy": base["top5_accuracy"],
            "baseline_macro_f1": base["macro_f1"],
            # the best a model that ignores the image can do: always predict the most frequent class
            "chance_accuracy": float(eval_counts.max() / eval_counts.sum()),
            "accuracy": final["accuracy"],
            "best_accuracy": out.best_accuracy,
            "best_epoch": out.best_epoch,
            "top5_accuracy": final["top5_accuracy"],
            "macro_f1": final["macro_f1"],
            "eval_loss": final["loss"],
            "evaluated_examples": final["examples"],
            "per_class_accuracy": dict(zip(task.label_names, final["per_class_accuracy"])),
            "confusion": final["confusion"],
        },
        "history": out.history,
        "time": {"train_s": out.train_s, "eval_s": out.eval_s, "total_s": time.perf_counter() - t_start},
        "throughput": throughput(out, accelerator),
        "inference": inference,
        "memory": memory,
        "size": {"adapter_bytes": adapter_bytes, "adapter_path": "adapter"},
        "coverage": task.coverage,
        "data": {
            "label_names": task.label_names,
            "train_examples": len(task.train),
            "eval_examples": len(task.eval),
            "eval_split": task.eval.name,
            "notes": task.notes,
            "skipped": task.skipped,
            "storage": "memory-mapped file" if is_mapped(task.train.images) else "memory",
            "image_size": [spec.height, spec.width],
            "channels": spec.channels,
            "normalization": {
                "mean": list(spec.mean),
                "std": list(spec.std),
                "rescale": spec.rescale,
                "from": "defaults: " + spec.fallback if spec.fallback else "image processor",
            },
        },
        "train": asdict(cfg.train_config())
        | {
            "precision": accelerator.mixed_precision,
            "attention": getattr(_config_of(out.model), "_attn_implementation", None),
        }
        | out.path,
        "env": environment(accelerator.device),
    }


def _inference(cfg: RunConfig, s: RunSpec, task: Task, spec, method, model, accelerator) -> dict:
    """What the trained model costs at inference as it would be deployed (merged when its method merges:
    in place, its trained part being saved), beside the base model with the same new head."""
    images = timed_batch(task.eval.images, spec.normalize, accelerator.device, cfg.train_config().eval_batch_size)
    base = lambda: load_model(cfg.model, task.label_names, s.seed)  # noqa: E731
    return inference_cost(method, model, base, images, accelerator.autocast)


def _config_of(model):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def throughput(out: FitResult, accelerator) -> dict:
    """Images per second over all processes, and what that is in FLOP/s and of the device's peak."""
    img_s = out.images_seen / out.train_s
    achieved = out.flops_per_image * img_s  # FLOP/s of the training steps, all processes
    peak = peak_flops(accelerator.device, accelerator.mixed_precision)
    return {
        "train_img_s": img_s,
        "steps": out.steps,
        "processes": out.processes,
        "train_flops_per_image": out.flops_per_image,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (peak * out.processes) if peak else None,
    }


def _header(cfg: RunConfig, s: RunSpec) -> Result:
    """What identifies a run; a finished run is reused only when its 'config' matches exactly."""
    return {
        "schema_version": SCHEMA_VERSION,
        "method": s.method,
        "label": s.label,
        "method_config": s.options.options(),
        "method_info": M.get(s.method).info(),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": s.seed,
        "run_name": s.name,
        "config": cfg.fingerprint() | {"method": s.method, "method_config": s.options.options(), "seed": s.seed},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class Worker:
    """Runs specs in one process (or one DDP group): keeps the accelerator and the current seed's
    decoded data, records a failed run instead of raising, and writes each result.json atomically."""

    def __init__(self, cfg: RunConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.accelerator = make_accelerator(cfg.device, cfg.precision)
        self.main = self.accelerator.is_main_process  # with DDP only the main process writes and talks
        self.log = log if self.main else (lambda s: None)
        self.say = self.log if not cfg.quiet else (lambda s: None)
        self.config = _model_config(cfg.model)
        self.spec = image_spec(cfg.model, self.config)
        if self.spec.fallback:
            self.log(f"WARNING {self.spec.fallback}")
        self.task, self.task_seed = None, None
        self.cache = DecodeCache()  # decoded images shared by this worker's runs (seeds, grid points)
        self.data_s = 0.0  # seconds the next run's data took to prepare (0 when it reuses the last run's)

    def data(self, seed: int) -> Task:
        if self.task_seed != seed:  # the data sample depends on the seed: drawn and decoded once per seed
            cfg, t0 = self.cfg, time.perf_counter()
            self.task = self.task_seed = None  # the last seed's images go before the next ones are decoded
            self.task = load_task(cfg.data_options(), self.spec, seed=seed, cache=self.cache, warn=self.log)
            self.task_seed = seed
            self.data_s = time.perf_counter() - t0
            sp = self.spec
            self.say(
                f"data (seed {seed}): {cfg.dataset}, {self.task.num_classes} classes, {len(self.task.train):,} "
                f"train / {len(self.task.eval):,} eval images at {sp.channels}x{sp.height}x{sp.width}, "
                f"ready in {time.perf_counter() - t0:.1f} s"
            )
        return self.task

    def attempt(self, s: RunSpec) -> Result:
        run_dir = Path(self.cfg.out) / s.name
        if run_dir.exists() and self.main:
            shutil.rmtree(run_dir)  # leftovers of an unfinished or failed run
        self.accelerator.wait_for_everyone()
        task = self.data(s.seed)
        try:
            result = run_one(self.cfg, s, task, self.spec, self.accelerator, self.say)
            result["time"]["data_s"], self.data_s = self.data_s, 0.0
            self.say(
                f"{s.label} seed {s.seed}: accuracy {result['metrics']['baseline_accuracy']:.3f} → "
                f"{result['metrics']['accuracy']:.3f} in {result['time']['train_s']:.1f} s"
            )
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
            self.data_s = 0.0  # the data stays for the next run of this seed, its time with this one
            status = (
                Status.DIVERGED
                if isinstance(e, Diverged)
                else Status.OOM
                if isinstance(e, torch.cuda.OutOfMemoryError)
                else Status.FAILED
            )
            message = (str(e).strip().splitlines() or [type(e).__name__])[0]
            result = _header(self.cfg, s) | {"status": status.value, "error": f"{type(e).__name__}: {message}"}
            if self.main:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "error.log").write_text(traceback.format_exc())
            self.log(f"{s.label} seed {s.seed}: {status} — {result['error']} (details in {run_dir / 'error.log'})")
        if self.main:
            _write(run_dir / "result.json", result)
        return result


def _write(path: Path, obj) -> None:
    """Atomic write; a full disk or a write error becomes one clear line, finished results stay intact."""
    try:
        if isinstance(obj, str):
            write_text_atomic(path, obj)
        else:
            write_json_atomic(path, obj)
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(
            f"cannot write {path}: {why}; free space or pass another --out, then rerun the "
            "same command: finished runs are kept and skipped"
        ) from e
