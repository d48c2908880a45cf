"""Evaluation: accuracy, top-5, macro-F1, per-class accuracy and the confusion matrix of a split,
each sample counted exactly once across processes."""

from __future__ import annotations

import numpy as np
import torch

from ..data import Split
from .ddp import shard
from .modes import evaluating


@torch.no_grad()
def evaluate(model, logits_of, split: Split, accelerator, batch_size: int, num_classes: int) -> dict:
    """Accuracy, top-5, macro-F1, per-class accuracy and the confusion matrix on one split.
    logits_of(indices) scores a batch of the split. With several processes each scores its shard;
    logits are gathered and every sample counted exactly once."""
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = shard(torch.arange(len(split), device=accelerator.device), rank, world)
    logits = []
    with evaluating(model):
        for i in range(0, len(mine), batch_size):
            with accelerator.autocast():
                logits.append(logits_of(mine[i : i + batch_size]).float())
    logits_t = torch.cat(logits) if logits else torch.empty(0, num_classes, device=accelerator.device)
    if world > 1:  # gather (index, logits) from every process; drop the padding's repeats
        order = accelerator.gather(mine.to(accelerator.device)).cpu()
        logits_t = accelerator.gather(logits_t).cpu()
        first = torch.full((len(split),), -1, dtype=torch.long)
        first[order.flip(0)] = torch.arange(len(order) - 1, -1, -1)  # position of each index's first copy
        logits_t = logits_t[first]
    return metrics_from_logits(logits_t.cpu(), split.labels, num_classes)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    pred = logits.argmax(1)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(conf, (labels.numpy(), pred.numpy()), 1)
    tp = np.diag(conf).astype(float)
    support, predicted = conf.sum(1), conf.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0  # macro-F1 over the classes that occur in this split
    # top-5 says something only with more than 5 classes (with 5 it is always 1)
    top5 = float((logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean()) if num_classes > 5 else None
    return {
        "examples": len(labels),  # how many samples the metrics count (each exactly once)
        "accuracy": float((pred == labels).float().mean()),
        "top5_accuracy": top5,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "per_class_accuracy": [float(r) if s else None for r, s in zip(recall, support)],
        "confusion": conf.tolist(),
        "predicted": pred.numpy(),  # per image (not for result.json: saved compactly beside it)
    }
