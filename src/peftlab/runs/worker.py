"""One run, and a Worker that runs many in one process: load the model, apply the method, derive its
counts, train, measure, save what it trained, and return the run's result record."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import methods as M
from .. import theory
from ..baselines import REFERENCES, frozen_features
from ..config import BUNDLED_NAME, RunConfig, RunSpec
from ..data import DecodeCache, Split, Task, load_task, per_class_subsample
from ..data.sources import ROLES
from ..errors import Unsupported, UserError, disk_full, disk_full_error
from ..logs import warning
from ..models import check_model_path, describe, image_spec, load_model
from ..models.loading import config_errors, load_kwargs, remote_code_error, why
from ..results import FINAL, SCHEMA_VERSION, Result, Status, write_json_atomic, write_text_atomic
from ..training import Diverged, fit, make_accelerator
from ..training.inference import inference_cost, timed_batch
from ..training.loop import EarlyStopping
from ..training.measure import count_params, environment, peak_memory, reset_peak_memory
from .artifacts import save_run_files, save_trained_part
from .cards import write_card
from .lock import Lock, done, finished, start
from .records import IDENTITIES, _config_of, data_record, save_identities, test_record, throughput
from .references import reference_results, reference_run_name
from .trackers import check_installed, run_tracker


def _model_config(name: str, trust_remote_code: bool = False):
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoConfig

    hub_log = hub_logging.get_logger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel("ERROR")  # no "Retrying in Ns" lines: one error line is the message
    path = check_model_path(name)
    try:
        return AutoConfig.from_pretrained(path, **load_kwargs(path, trust_remote_code))
    except config_errors() as e:
        if err := remote_code_error(name, e):
            raise err from e
        todo = (
            "fix its config.json or pass another model folder"
            if Path(path).exists()
            else f"check the name and the network, or pass a local model folder or '{BUNDLED_NAME}'"
        )
        raise UserError(f"cannot load model '{name}': {why(e)}; {todo}") from e
    finally:
        hub_log.setLevel(level)


def prepare(
    cfg: RunConfig, method_name: str, options, task: Task, seed: int, log: Callable[[str], None], scratch: bool = False
):
    """Load the model with a fresh head (scratch: every weight drawn afresh, seeded), derive its counts, apply
    the method, count and check: (prepared model, params record)."""
    torch.manual_seed(seed)
    method = M.get(method_name)
    model = load_model(cfg.model, task.label_names, seed, scratch=scratch, trust_remote_code=cfg.trust_remote_code)
    base_total = sum(p.numel() for p in model.parameters())
    # derived before the method touches the model: from the config, or from module shapes
    derived = theory.counts(model, method, options, task.num_classes)
    total_steps = cfg.train_config(task).epochs * math.ceil(len(task.train) / cfg.batch_size)  # as fit plans them
    prepared = method.apply(model, describe(model), options, total_steps)
    params = count_params(prepared.model, base_total)
    params |= theory.check(derived, params)
    for option, v in (prepared.adjusted or {}).items():  # what the library changed, recorded as it really is
        params.setdefault("adjusted", {})[option] = v
        warning(f"{method_name}.{option} {v['asked']} does not fit this model: trained with {v['used']} (recorded)")
    if params["mismatches"]:
        warning(
            f"{method_name}: measured parameter counts differ from the {derived.kind}: "
            + "; ".join(f"{m['what']} {m[derived.kind]:,} vs measured {m['measured']:,}" for m in params["mismatches"])
        )
    return prepared, params


def with_val_trained(task: Task) -> Task:
    """--refit train+val: the validation images join the training images; nothing is left to select on."""
    tr, va = task.train, task.val
    train = Split(
        f"{tr.name} + {va.name}",
        torch.cat([tr.images, va.images]),
        torch.cat([tr.labels, va.labels]),
        np.concatenate([tr.origin, va.origin]),
        tr.source,
    )
    empty = Split(va.name, va.images[:0], va.labels[:0], va.origin[:0], va.source)
    return dataclasses.replace(task, train=train, val=empty)


def run_one(
    cfg: RunConfig,
    s: RunSpec,
    task: Task,
    spec,
    accelerator,
    log: Callable[[str], None],
    tuning: dict | None = None,
    on_epoch: Sequence[Callable[[dict], None]] = (),
) -> Result:
    """Fine-tune one method configuration with one seed: train (validation chooses the checkpoint), score the
    test split once, save what was trained; return the run's result record. tuning: the search that chose
    s.options, recorded as is; on_epoch: called with each epoch's record (trackers, log lines)."""
    t_start = time.perf_counter()
    fit_task = with_val_trained(task) if cfg.refit == "train+val" else task
    prepared, params = prepare(cfg, s.method, s.options, fit_task, s.seed, log, scratch=s.scratch)
    reset_peak_memory(accelerator.device)
    tcfg = cfg.train_config(fit_task)
    out = fit(
        prepared,
        fit_task,
        spec,
        tcfg,
        s.options.lr,
        s.seed,
        accelerator,
        progress=not cfg.quiet,
        desc=s.label,
        callbacks=[*on_epoch, *([EarlyStopping(tcfg.early_stop)] if tcfg.early_stop and len(fit_task.val) else [])],
    )
    memory = out.memory or peak_memory(accelerator.device)
    run_dir = Path(cfg.out) / s.name
    adapter_bytes = 0
    if accelerator.is_main_process:  # one process writes; the others trained the same weights
        adapter_bytes = save_trained_part(out.model, run_dir / "adapter")
        # what a plain transformers + PEFT user needs besides the weights: the base, the labels, the processor
        save_run_files(run_dir / "adapter", cfg.model, s.method, task.label_names, spec.channels)
        save_identities(run_dir / IDENTITIES, task, out.test)
    # after the test is scored and the trained part saved: a mergeable method is merged in place
    inference = (
        _inference(cfg, s, task, spec, M.get(s.method), out.model, accelerator) if accelerator.is_main_process else None
    )
    val = {}
    if out.val is not None:
        val = {k: out.val[k] for k in ("accuracy", "top5_accuracy", "macro_f1", "loss", "examples")}
        val["start_accuracy"] = out.start["accuracy"]  # the new, untrained head: before any training
    test = out.test
    return _header(cfg, s) | {
        "status": Status.OK.value,  # records hold JSON values: as read back from disk
        "params": params,
        "metrics": {
            "val": val,
            "test": test_record(test, task),
        },
        "selection": {
            "options": "chosen by a search on the validation split" if tuning else "as given (defaults or options)",
            "checkpoint": out.selection,
            "epoch": out.selected_epoch,
            "epochs_trained": len(out.history),
            "stopped_early_after": out.stopped_early,
            "refit": cfg.refit,
            "test_evaluations": out.test_evaluations,
        },
        "tuning": tuning,
        "history": out.history,
        "time": {"train_s": out.train_s, "eval_s": out.eval_s, "total_s": time.perf_counter() - t_start},
        "throughput": throughput(out, accelerator),
        "inference": inference,
        "memory": memory,
        "size": {"adapter_bytes": adapter_bytes, "adapter_path": "adapter"},
        "coverage": task.coverage,
        "data": data_record(task, spec, len(fit_task.train)),
        "train": asdict(tcfg)
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
    images = timed_batch(task.test.images, spec.normalize, accelerator.device, cfg.train_config().eval_batch_size)
    base = lambda: load_model(cfg.model, task.label_names, s.seed, trust_remote_code=cfg.trust_remote_code)  # noqa: E731
    return inference_cost(method, model, base, images, accelerator.autocast)


SCRATCH_INFO = {
    "description": "the same architecture trained from random initialisation with full fine-tuning's budget: "
    "what pretraining buys",
    "paper": "",
    "order": -1,
    "kind": "reference",
}


def _header(cfg: RunConfig, s: RunSpec) -> Result:
    """What identifies a run; a finished run is reused only when its 'config' matches exactly."""
    info = M.get(s.method).info() | (
        {**SCRATCH_INFO, "options": M.get(s.method).info()["options"]} if s.scratch else {"kind": "method"}
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": info["kind"],
        "method": s.method,
        "label": s.label,
        "method_config": s.options.options(),
        "method_info": info,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": s.seed,
        "run_name": s.name,
        "config": cfg.fingerprint()
        | {"method": s.method, "method_config": s.options.options(), "seed": s.seed}
        | ({"scratch": True} if s.scratch else {})
        | ({"per_class": s.per_class} if s.per_class is not None else {}),
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
        self.config = _model_config(cfg.model, cfg.trust_remote_code)
        self.spec = image_spec(cfg.model, self.config, cfg.trust_remote_code)
        if self.spec.fallback and self.main:
            warning(self.spec.fallback)
        if self.main:
            check_installed(cfg.report_to)
        self.task, self.task_seed = None, None
        self.subsamples: dict[int, tuple[Task, np.ndarray]] = {}  # per_class -> (task, positions in the sample)
        self.features: dict[str, dict] = {}  # input kind -> the seed's frozen features of its whole sample
        self.cache = DecodeCache()  # decoded images shared by this worker's runs (seeds, grid points)
        self.data_s = 0.0  # seconds the next run's data took to prepare (0 when it reuses the last run's)
        self.reused: list[str] = []  # runs found finished on disk, not run again

    def data(self, seed: int, per_class: int | None = None) -> Task:
        """The seed's task; with per_class (--train-sizes), its nested subsample of that many training images
        per class (the decoded images are shared)."""
        if per_class is not None:
            return self.subsample(seed, per_class)[0]
        if self.task_seed != seed:  # the data sample depends on the seed: drawn and decoded once per seed
            cfg, t0 = self.cfg, time.perf_counter()
            self.task = self.task_seed = None  # the last seed's images go before the next ones are decoded
            self.subsamples, self.features = {}, {}
            warn = warning if self.main else (lambda s: None)
            self.task = load_task(cfg.data_options(), self.spec, seed=seed, cache=self.cache, warn=warn)
            self.task_seed = seed
            self.data_s = time.perf_counter() - t0
            sp = self.spec
            self.say(
                f"data (seed {seed}): {cfg.dataset}, {self.task.num_classes} classes, {len(self.task.train):,} "
                f"train / {len(self.task.val):,} validation / {len(self.task.test):,} test images at "
                f"{sp.channels}x{sp.height}x{sp.width}, ready in {time.perf_counter() - t0:.1f} s"
            )
        return self.task

    def subsample(self, seed: int, k: int) -> tuple[Task, np.ndarray]:
        task = self.data(seed)
        if k not in self.subsamples:
            self.subsamples[k] = per_class_subsample(task, k)
        return self.subsamples[k]

    def frozen(self, seed: int, per_class: int | None, kind: str = "features") -> dict:
        """Frozen features of the seed's train/val/test images — kind 'features': the pretrained model's,
        'random-features': a randomly initialised copy's (seeded) — computed once per seed on the whole sample;
        a smaller training size takes its rows."""
        task = self.data(seed)
        if kind not in self.features:
            t0, scratch = time.perf_counter(), kind == "random-features"
            model = load_model(self.cfg.model, task.label_names, seed, scratch, self.cfg.trust_remote_code)
            f = {r: frozen_features(model, getattr(task, r).images, self.spec) for r in ROLES}
            self.features[kind] = f | {"seconds": time.perf_counter() - t0, "images": sum(len(f[r]) for r in ROLES)}
        f = self.features[kind]
        if per_class is None:
            return f
        return f | {"train": f["train"][torch.from_numpy(self.subsample(seed, per_class)[1])]}

    def references(self, seed: int, names: list[str], per_class: int | None = None) -> list[Result]:
        """The reference baselines of this seed (names among REFERENCES), written like runs."""
        if not names:
            return []
        if self.main:  # the caller holds their locks
            for n in names:
                name = reference_run_name(n, seed, per_class)
                start(Path(self.cfg.out) / name, name)
        task = self.data(seed, per_class)
        kinds = {REFERENCES[n].input for n in names} & {"features", "random-features"}
        features = {kind: self.frozen(seed, per_class, kind) for kind in sorted(kinds)}
        out = []
        for r in reference_results(self.cfg, names, task, self.spec, features, seed, per_class):
            run_dir = Path(self.cfg.out) / r["run_name"]
            if self.main:
                save_identities(run_dir / IDENTITIES, task, None)
                _write(run_dir / "result.json", r)
                done(run_dir)
            self.say(
                f"{r['label']} seed {seed}: validation {r['metrics']['val']['accuracy']:.3f}, test "
                f"{r['metrics']['test']['accuracy']:.3f} ({r['selection']['options']})"
            )
            out.append(r)
        return out

    def attempt(self, s: RunSpec, tuning: dict | None = None, wait: bool = True) -> Result | None:
        """Run s, holding its folder's lock, unless its result is finished on disk (read again here, just before
        it would start: then that result, its name added to self.reused). When another live process holds the
        run: None if not wait, else wait for it and read again what it left. A failed run is recorded, not
        raised; only peftlab's own leftovers of an unfinished run are removed."""
        run_dir = Path(self.cfg.out) / s.name
        lock = Lock(self.cfg.out, s.name)
        decision = None
        if self.main:
            try:
                if not lock.acquire(wait=False):
                    if not wait:
                        decision = ("held", lock.holder())
                    else:
                        self.say(f"{s.label} seed {s.seed}: waiting for {lock.holder()}, which is running it")
                        lock.acquire(wait=True)
                if decision is None:
                    old = finished(run_dir, _header(self.cfg, s))
                    if old is None:
                        start(run_dir, s.name)
                    decision = ("reuse", old) if old is not None else ("run", None)
            except UserError as e:
                lock.release()
                decision = ("error", str(e))
        kind, value = self._agree(decision)  # with DDP every process follows the main one
        if kind == "error":
            raise UserError(value)
        if kind in ("held", "reuse"):
            lock.release()
            if kind == "reuse":
                self.reused.append(s.name)
            return value if kind == "reuse" else None
        try:
            return self._run(s, tuning, run_dir)
        finally:
            lock.release()

    def _agree(self, decision):
        """The main process's decision, on every process of a DDP group."""
        if self.accelerator.num_processes == 1:
            return decision
        from accelerate.utils import broadcast_object_list

        box = [decision]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def _run(self, s: RunSpec, tuning: dict | None, run_dir: Path) -> Result:
        task = self.data(s.seed, s.per_class)
        images = len(task.train) + (len(task.val) if self.cfg.refit == "train+val" else 0)  # per epoch
        tracker = run_tracker(self.cfg, s, images, warning) if self.main else None
        on_epoch = [tracker.epoch] if tracker else []
        if not self.cfg.quiet and not sys.stderr.isatty():  # no progress bar: one line per epoch instead
            epochs = self.cfg.train_config(task).epochs
            on_epoch.append(lambda r: self.say(epoch_line(s, r, epochs, images)))
        try:
            result = run_one(self.cfg, s, task, self.spec, self.accelerator, self.say, tuning, on_epoch)
            result["time"]["data_s"], self.data_s = self.data_s, 0.0
            if self.main:
                try:
                    write_card(run_dir / result["size"]["adapter_path"], result)
                except Exception as e:  # noqa: BLE001 - a card that cannot be written must not lose the run
                    warning(f"{s.label} seed {s.seed}: no model card written ({type(e).__name__}: {e})")
                if tracker:
                    tracker.final(result)
            m = result["metrics"]
            val = f"validation {m['val']['accuracy']:.3f}, " if m["val"] else ""
            self.say(
                f"{s.label} seed {s.seed}: {val}test {m['test']['accuracy']:.3f} "
                f"(epoch {result['selection']['epoch']}) in {result['time']['train_s']:.1f} s"
            )
        except Unsupported as e:  # found when applied (preflight finds most before any training)
            self.data_s = 0.0
            result = unsupported(self.cfg, s, str(e))
            self.log(f"{s.label} seed {s.seed}: unsupported — {e}")
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
            if disk_full(e):  # not the run's fault, and the next ones would fail the same way
                raise disk_full_error(run_dir) from e
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
                _write(run_dir / "error.log", traceback.format_exc())
            self.log(f"{s.label} seed {s.seed}: {status} — {result['error']} (details in {run_dir / 'error.log'})")
        finally:
            if tracker:
                tracker.close()
        if self.main:
            _write(run_dir / "result.json", result)
            if result["status"] in FINAL:
                done(run_dir)
        return result


def unsupported(cfg: RunConfig, s: RunSpec, why: str) -> Result:
    """The record of a run whose method cannot apply to this model: status unsupported, the reason."""
    return _header(cfg, s) | {"status": Status.UNSUPPORTED.value, "error": why}


def epoch_line(s: RunSpec, r: dict, epochs: int, images: int) -> str:
    """One epoch as one log line (what replaces the progress bar when the output is not a terminal)."""
    val = f", validation accuracy {r['val_accuracy']:.3f} (loss {r['val_loss']:.3f})" if "val_accuracy" in r else ""
    speed = f", {images / r['seconds']:.0f} img/s" if r["seconds"] > 0 else ""
    return (
        f"{s.label} seed {s.seed} epoch {r['epoch']}/{epochs}: train loss {r['train_loss']:.4f}{val}, "
        f"lr {r['lr']:.3g}{speed}, {r['seconds']:.1f} s"
    )


def _write(path: Path, obj) -> None:
    """Atomic write; a full disk or a write error becomes one clear line, finished results stay intact."""
    try:
        if isinstance(obj, str):
            write_text_atomic(path, obj)
        else:
            write_json_atomic(path, obj)
    except OSError as e:
        if disk_full(e):
            raise disk_full_error(path) from e
        why = e.strerror or str(e)
        raise UserError(
            f"cannot write {path}: {why}; free space or pass another --out, then rerun the "
            "same command: finished runs are kept and skipped"
        ) from e
