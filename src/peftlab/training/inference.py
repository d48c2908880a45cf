"""What a trained model costs at inference, as it would be deployed: folded into the base weights when its
method merges (Method.merged: nothing extra is left), unmerged otherwise (VPT's prompt tokens, adapter
layers); beside the base model (the pretrained model with the run's new head, unadapted), measured the
same way right before it. For each: parameters, FLOPs per image (torch's flop counter on one forward in
eval mode: matrix products, convolutions and attention, as for the training FLOPs) and throughput
(images/s: one batch of eval images under the run's autocast, no gradients; warm-up forwards, then the
median of timed forwards taken in turn with the base model's)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from .ddp import _sync
from .measure import PEFT_COPY
from .modes import evaluating

FLOP_IMAGES = 4  # images in the counted forward: FLOPs per image do not depend on the batch
CPU_BATCH = 32  # the timed batch on a CPU (on a GPU: the eval batch size), at most the eval split
MIN_S, MAX_S, MIN_REPS = 0.2, 3.0, 3  # timed rounds: at least MIN_REPS and MIN_S, at most MAX_S


def inference_params(model: nn.Module) -> int:
    """Parameters of the model as deployed, each module once (PEFT's trainable head copy replaces the
    original at inference: the original is not counted, as in count_params' total)."""
    return sum(p.numel() for n, p in model.named_parameters() if PEFT_COPY not in n)


@torch.no_grad()
def flops_per_image(model: nn.Module, images: torch.Tensor, autocast) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    few = images[:FLOP_IMAGES]
    with FlopCounterMode(display=False) as counter, autocast():
        model(pixel_values=few)
    return counter.get_total_flops() / len(few)


@torch.no_grad()
def images_per_second(models: list[nn.Module], images: torch.Tensor, autocast) -> list[float]:
    """Each model's throughput on the batch: a warm-up forward each, then rounds of one timed forward per
    model, in turn (so that a machine's changing load falls on all of them alike); images over the median
    time of a forward."""
    times: list[list[float]] = [[] for _ in models]
    for m in models:
        with autocast():
            m(pixel_values=images)  # warm-up: kernels chosen, memory allocated
    t0 = time.perf_counter()
    while True:
        for m, ts in zip(models, times):
            _sync(images.device)
            t = time.perf_counter()
            with autocast():
                m(pixel_values=images)
            _sync(images.device)
            ts.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
        if (len(times[0]) >= MIN_REPS and elapsed >= MIN_S) or elapsed >= MAX_S:
            break
    return [len(images) / statistics.median(ts) for ts in times]


def inference_cost(method, trained: nn.Module, base: Callable[[], nn.Module], images: torch.Tensor, autocast) -> dict:
    """The deployed model's cost and the base model's, for result.json's 'inference'. trained is merged in
    place when the method merges (call this after its trained part is saved); base() builds the base
    model (loaded only for this, then dropped); images: one normalised batch of eval images on the device."""
    deployed, how = (method.merged(trained), "merged") if method.caps.mergeable else (trained, "unmerged")
    reference = base().to(images.device)
    models = [deployed, reference]
    with evaluating(deployed), evaluating(reference):
        flops = [flops_per_image(m, images, autocast) for m in models]
        speed = images_per_second(models, images, autocast)
    cost = [
        {"params": inference_params(m), "flops_per_image": float(f), "img_s": v}
        for m, f, v in zip(models, flops, speed)
    ]
    return {"deployed": how, "batch": len(images), **cost[0], "base": cost[1]}


def timed_batch(split_images: torch.Tensor, normalize, device: torch.device, eval_batch_size: int) -> torch.Tensor:
    """The batch the throughput is timed on: the first images of the eval split, normalised, on the device."""
    n = min(len(split_images), eval_batch_size if device.type == "cuda" else CPU_BATCH)
    return normalize(split_images[:n].to(device))
