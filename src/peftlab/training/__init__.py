"""Training: the loop (loop), how batches reach the model (batches), the exact fast paths (fastpaths),
metrics (metrics), processes and devices (ddp), train/eval modes with BatchNorm honoured (modes), and what a
run measures (measure)."""

from .batches import DataPath, augment_batch, data_path
from .ddp import make_accelerator, pad_count, shard
from .loop import Diverged, FitResult, fit
from .metrics import evaluate, metrics_from_logits
from .modes import evaluating, train_mode, trained_norm_buffers

__all__ = [
    "DataPath",
    "Diverged",
    "FitResult",
    "augment_batch",
    "data_path",
    "evaluate",
    "evaluating",
    "fit",
    "make_accelerator",
    "metrics_from_logits",
    "pad_count",
    "shard",
    "train_mode",
    "trained_norm_buffers",
]
