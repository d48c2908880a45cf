"""One comparison: load the data once, then for each method load, prepare, train, measure, save."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from . import methods as M
from . import theory
from .config import RunConfig, RunSpec
from .data import Task, is_mapped, load_task
from .errors import UserError
from .measure import count_params, environment, peak_flops, peak_memory, reset_peak_memory, save_trained_part
from .models import BUNDLED_NAME, check_model_path, describe, fit_head, image_spec, load_model
from .report import context_lines, format_text, noise_lines, summary_markdown, write_report
from .results import write_json_atomic, write_text_atomic
from .train import Diverged, fit, make_accelerator


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".peftlab-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder '{out}' ({e.strerror}); pass a writable --out") from e


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


def preflight(specs: list[RunSpec], config) -> None:
    """Apply every method configuration to a weightless (meta-device) copy of the model before any
    training, so a bad option (e.g. a LoRA target the model lacks) fails before any result is written."""
    from transformers import AutoModelForImageClassification

    seen = set()
    for s in specs:
        if s.label in seen:
            continue
        seen.add(s.label)
        with torch.device("meta"):
            model = AutoModelForImageClassification.from_config(config)
        fit_head(model, ["a", "b"], s.seed)  # the head size does not change whether a method applies
        M.get(s.method).apply(model, describe(model), s.options, 100)


def run_one(cfg: RunConfig, s: RunSpec, task: Task, spec, accelerator, log: Callable[[str], None]) -> dict:
    """Fine-tune one method configuration with one seed; return its result dict."""
    t_start = time.perf_counter()
    torch.manual_seed(s.seed)
    model = load_model(cfg.model, task.label_names, s.seed)
    base_total = sum(p.numel() for p in model.parameters())
    # derived before the method touches the model: from the config, or from module shapes
    derived = (
        theory.derive(model.config, s.method, s.options, task.num_classes)
        if theory.supported(model.config)
        else theory.structural(model, s.method, s.options, task.num_classes)
    )
    total_steps = cfg.epochs * math.ceil(len(task.train) / cfg.batch_size)  # as train.fit plans them
    prepared = M.get(s.method).apply(model, describe(model), s.options, total_steps)
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
        adapter_bytes = save_trained_part(out["model"], adapter_dir)
        # what a plain PeftModel.from_pretrained user needs besides the adapter: the base and the labels
        write_json_atomic(
            adapter_dir / "labels.json",
            {"base_model": cfg.model, "method": s.method, "id2label": dict(enumerate(task.label_names))},
        )
    base, final = out["baseline"], out["final"]
    eval_counts = np.bincount(task.eval.labels.numpy(), minlength=task.num_classes)
    return _header(cfg, s) | {
        "status": "ok",
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
            "evaluated_examples": final["examples"],
            "per_class_accuracy": dict(zip(task.label_names, final["per_class_accuracy"])),
            "confusion": final["confusion"],
        },
        "history": out["history"],
        "time": {"train_s": out["train_s"], "eval_s": out["eval_s"], "total_s": time.perf_counter() - t_start},
        "throughput": throughput(out, accelerator),
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
            "attention": getattr(_config_of(out["model"]), "_attn_implementation", None),
        }
        | out["path"],
        "env": environment(accelerator.device),
    }


def _config_of(model):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def throughput(out: dict, accelerator) -> dict:
    """Images per second over all processes, and what that is in FLOP/s and of the device's peak."""
    img_s = out["images_seen"] / out["train_s"]
    achieved = out["flops_per_image"] * img_s  # FLOP/s of the training steps, all processes
    peak = peak_flops(accelerator.device, accelerator.mixed_precision)
    return {
        "train_img_s": img_s,
        "steps": out["steps"],
        "processes": out["processes"],
        "train_flops_per_image": out["flops_per_image"],
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (peak * out["processes"]) if peak else None,
    }


def _header(cfg: RunConfig, s: RunSpec) -> dict:
    """What identifies a run; a finished run is reused only when its 'config' matches exactly."""
    return {
        "method": s.method,
        "label": s.label,
        "method_config": s.options.options(),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": s.seed,
        "run_name": s.name,
        "config": cfg.fingerprint() | {"method": s.method, "method_config": s.options.options(), "seed": s.seed},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# statuses a rerun keeps; 'failed' and 'oom' runs are tried again (they may be transient)
FINAL = ("ok", "diverged")


def _finished(run_dir: Path, header: dict) -> dict | None:
    path = run_dir / "result.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: redo it
    if old.get("config") != json.loads(json.dumps(header["config"])):
        raise UserError(
            f"'{run_dir}' holds a run with a different configuration; pass another --out "
            "(results are never overwritten)"
        )
    return old if old.get("status") in FINAL else None


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
        self.data_s = 0.0  # seconds the next run's data took to prepare (0 when it reuses the last run's)

    def data(self, seed: int) -> Task:
        if self.task_seed != seed:  # the data sample depends on the seed: drawn and decoded once per seed
            cfg, t0 = self.cfg, time.perf_counter()
            self.task = self.task_seed = None  # the last seed's images go before the next ones are decoded
            self.task = load_task(
                cfg.dataset,
                self.spec,
                train_size=cfg.train_size,
                eval_size=cfg.eval_size,
                seed=seed,
                image_column=cfg.image_column,
                label_column=cfg.label_column,
                train_split=cfg.train_split,
                eval_split=cfg.eval_split,
                min_per_class=cfg.min_per_class,
                max_bad_fraction=cfg.max_bad_fraction,
                strict_coverage=cfg.strict_coverage,
                warn=self.log,
            )
            self.task_seed = seed
            self.data_s = time.perf_counter() - t0
            sp = self.spec
            self.say(
                f"data (seed {seed}): {cfg.dataset}, {self.task.num_classes} classes, {len(self.task.train):,} "
                f"train / {len(self.task.eval):,} eval images at {sp.channels}x{sp.height}x{sp.width}, "
                f"ready in {time.perf_counter() - t0:.1f} s"
            )
        return self.task

    def attempt(self, s: RunSpec) -> dict:
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
                "diverged"
                if isinstance(e, Diverged)
                else "oom"
                if isinstance(e, torch.cuda.OutOfMemoryError)
                else "failed"
            )
            message = (str(e).strip().splitlines() or [type(e).__name__])[0]
            result = _header(self.cfg, s) | {"status": status, "error": f"{type(e).__name__}: {message}"}
            if self.main:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "error.log").write_text(traceback.format_exc())
            self.log(f"{s.label} seed {s.seed}: {status} — {result['error']} (details in {run_dir / 'error.log'})")
        if self.main:
            _write(run_dir / "result.json", result)
        return result


def execute(
    cfg: RunConfig,
    specs: list[RunSpec],
    log: Callable[[str], None] = print,
    ray_address: str | None = None,
    ray_resources: dict | None = None,
) -> list[dict]:
    """Run specs, one folder each. Finished runs are skipped, unfinished ones redone; a run that fails
    (exception, NaN loss, out of memory) is recorded and the rest go on. Ctrl-C or kill leaves only
    complete result.json files (each written atomically). ray_address ('' or 'auto' for a local Ray
    instance) sends each run to Ray as a task instead of running it here."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if ray_address is not None:
        from .distributed import ray_execute

        worker = None
        _check_writable(out)
        preflight(specs, _model_config(cfg.model))
    else:
        worker = Worker(cfg, log)
        log = worker.log
        _check_writable(out)
        preflight(specs, worker.config)
    say = log if not cfg.quiet else (lambda s: None)
    done = {s.name: _finished(out / s.name, _header(cfg, s)) for s in specs}
    todo = [s for s in specs if not done[s.name]]
    if worker is None:
        fresh = ray_execute(cfg, todo, ray_address, say, **(ray_resources or {})) if todo else {}
    else:
        fresh = {s.name: worker.attempt(s) for s in todo}
        worker.accelerator.wait_for_everyone()
        if not worker.main:
            return list(fresh.values())
    results = [done[s.name] or fresh[s.name] for s in specs]
    _write(out / "summary.md", summary_markdown(results))
    write_report(out, results)  # report.md, report-plots/, report.html
    if len(specs) > len(todo):
        say(f"reused {len(specs) - len(todo)} finished run(s) from {out}")
    if not cfg.quiet:
        log("\n" + "\n".join(context_lines(results)) + "\n\n" + format_text(results))
        for line in noise_lines(results):
            log(line)
        log(f"\nwall time {time.perf_counter() - t0:.1f} s · results in {out}{os.sep} (summary.md)")
    return results


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


def run(cfg: RunConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Compare cfg's methods (once per seed) on one model and dataset."""
    return execute(cfg, cfg.plan(), log)
