"""Training: the loop (loop), how batches reach the model (batches), the exact fast paths (fastpaths),
metrics (metrics), processes and devices (ddp), and what a run measures (measure)."""

from .batches import DataPath, augment_batch, data_path
from .ddp import make_accelerator, pad_count, shard
from .loop import Diverged, FitResult, fit
from .metrics import evaluate, metrics_from_logits

__all__ = [
    "DataPath",
    "Diverged",
    "FitResult",
    "augment_batch",
    "data_path",
    "evaluate",
    "fit",
    "make_accelerator",
    "metrics_from_logits",
    "pad_count",
    "shard",
]
