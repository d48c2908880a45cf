"""Experiment trackers (--report-to tensorboard,mlflow,wandb): each training run is one tracker run, named
like its folder, that gets the run's configuration, one record per epoch (train loss, validation metrics,
lr, throughput) and, at the end, the test metrics and parameter counts.

The trackers are Accelerate's (accelerate.tracking), driven through their own start / store_init_configuration
/ log / finish. Not through the Accelerator's init_trackers / end_training: a Worker's one accelerator runs
many runs, Accelerate keeps one set of trackers per accelerator, and end_training also ends the process group
that the next run of a distributed worker needs.

Where they write: TensorBoard under OUT/tensorboard/<run>/; MLflow to $MLFLOW_TRACKING_URI, else a SQLite
store OUT/mlflow.db (MLflow's own recommended local backend), in an experiment named like OUT; W&B in a
project named like OUT ($WANDB_PROJECT wins), its files under OUT/wandb/ ($WANDB_MODE=offline: no network).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from ..config import TRACKERS, RunConfig, RunSpec
from ..errors import UserError
from ..results import Result

PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


def check_installed(names: list[str]) -> None:
    """A tracker whose package is missing is a one-line error before anything runs."""
    for name in names:
        if not any(importlib.util.find_spec(p) for p in PACKAGES[name]):
            raise UserError(
                f"--report-to {name} needs the '{PACKAGES[name][0]}' package: pip install 'peftlab[trackers]' "
                f"(or pip install {PACKAGES[name][0]})"
            )


def mlflow_uri(out: Path) -> str:
    """$MLFLOW_TRACKING_URI when set, else a SQLite store in the results folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(out).absolute() / 'mlflow.db'}"


def _make(name: str, out: Path, project: str, run_name: str):
    from accelerate import tracking

    if name == "tensorboard":
        return tracking.TensorBoardTracker(run_name, out / "tensorboard")
    if name == "mlflow":
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri(out))
        return tracking.MLflowTracker(experiment_name=project, run_name=run_name)
    return tracking.WandBTracker(os.environ.get("WANDB_PROJECT", project), name=run_name, dir=str(out))


def _flat(values: dict) -> dict:
    """Configuration values as trackers take them (TensorBoard's hparams: numbers, strings, booleans)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        out[k] = "none" if v is None else v
    return out


class RunTracker:
    """The trackers of one run. Every call is safe: a tracker that fails is dropped with a warning, and the
    run goes on (its results never depend on a tracker)."""

    def __init__(self, names: list[str], out: Path, run_name: str, config: dict, warn: Callable[[str], None]):
        self.warn, self.trackers, self.images_per_epoch = warn, [], 0
        project = Path(out).absolute().name
        for name in names:
            try:
                tracker = _make(name, Path(out), project, run_name)
                tracker.start()
                tracker.store_init_configuration(_flat(config))
                self.trackers.append(tracker)
            except Exception as e:  # noqa: BLE001 - a tracker's failure (login, server) must not stop the run
                self._failed(name, e)

    def _failed(self, name: str, e: Exception) -> None:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        self.warn(f"the {name} tracker failed ({type(e).__name__}: {first}); the run goes on without it")

    def log(self, values: dict, step: int) -> None:
        for tracker in list(self.trackers):
            try:
                tracker.log(values, step=step)
            except Exception as e:  # noqa: BLE001
                self.trackers.remove(tracker)
                self._failed(tracker.name, e)

    def epoch(self, record: dict) -> None:
        """An epoch callback of training.fit: one record per epoch, at step = epoch."""
        values = {"train/loss": record["train_loss"], "train/lr": record["lr"], "train/epoch_s": record["seconds"]}
        if record["seconds"] > 0 and self.images_per_epoch:
            values["train/img_s"] = self.images_per_epoch / record["seconds"]
        if "val_accuracy" in record:
            values |= {"val/accuracy": record["val_accuracy"], "val/loss": record["val_loss"]}
        self.log(values, step=record["epoch"])

    def final(self, result: Result) -> None:
        """The test metrics (scored once), the parameter counts and the run's times, at the last epoch's step."""
        test, p = result["metrics"]["test"], result["params"]
        names = ("accuracy", "macro_f1", "loss", "top5_accuracy")
        values = {f"test/{k}": test[k] for k in names if test.get(k) is not None}
        values |= {f"params/{k}": p[k] for k in ("trainable", "total", "trainable_pct") if p.get(k) is not None}
        values |= {
            "selection/epoch": result["selection"]["epoch"],
            "time/train_s": result["time"]["train_s"],
            "time/total_s": result["time"]["total_s"],
            "throughput/train_img_s": result["throughput"]["train_img_s"],
        }
        if result["metrics"]["val"]:
            values["val/selected_accuracy"] = result["metrics"]["val"]["accuracy"]
        self.log(values, step=max(len(result["history"]), 1))

    def close(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception as e:  # noqa: BLE001
                self._failed(tracker.name, e)
        self.trackers = []


def run_tracker(cfg: RunConfig, s: RunSpec, images_per_epoch: int, warn: Callable[[str], None]) -> RunTracker | None:
    """The trackers cfg.report_to asks for, started for run s (None when it asks for none)."""
    if not cfg.report_to:
        return None
    assert set(cfg.report_to) <= set(TRACKERS)
    config = cfg.fingerprint() | {"method": s.method, "label": s.label, "seed": s.seed, "lr": s.options.lr}
    config |= {f"{s.method}.{k}": v for k, v in s.options.options().items()}
    tracker = RunTracker(cfg.report_to, Path(cfg.out), s.name, config, warn)
    tracker.images_per_epoch = images_per_epoch
    return tracker
