"""Measurements of a run: parameter counts, peak memory, FLOPs, the environment."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
from pathlib import Path

import torch
from torch import nn

# PEFT keeps a trainable copy of each modules_to_save module beside the frozen original; its own
# "all params" counts both. The copy's parameters live under this name part.
PEFT_COPY = ".modules_to_save."


def count_params(model: nn.Module, base_total: int) -> dict:
    """Trainable and total counts. total = base model + added adapter parameters, each module once;
    peft_all_params is PEFT's own figure (modules_to_save counted twice), kept for comparison."""
    named = dict(model.named_parameters())  # unique tensors
    trainable = sum(p.numel() for p in named.values() if p.requires_grad)
    total = sum(p.numel() for n, p in named.items() if PEFT_COPY not in n)
    peft_all = sum(p.numel() for p in named.values())
    return {
        "trainable": trainable,
        "total": total,
        "base": base_total,
        "added": total - base_total,
        "trainable_pct": 100.0 * trainable / base_total,
        "peft_all_params": peft_all,
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) so each run gets its own peak
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "kind": "process_peak_rss"}


# the profiler's memory categories, by their column in MemoryProfileTimeline's timeline
_CATEGORIES = (
    "parameters",
    "optimizer_state",
    "inputs",
    "temporary",
    "activations",
    "gradients",
    "autograd",
    "unknown",
)


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side writes a line to the process's stderr when it starts and stops: not for users."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def attributed_memory(step, trainable_bytes: int, cache_bytes: int = 0) -> dict:
    """Peak memory one training step attributes to the method, whatever ran before in the process: torch's
    profiler follows every tensor of one forward and backward pass (step()) and sorts it into parameters,
    inputs, activations, gradients, temporaries; the optimizer's state, allocated at the first real step, is
    added as AdamW keeps it (two tensors per trainable one); a prefix cache's stored features too. The
    process's peak resident memory, which depends on run order, is recorded beside it for reference."""
    from torch.profiler import ProfilerActivity, profile

    rss = peak_memory(torch.device("cpu"))["peak_bytes"]
    try:
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with (
            quiet_stderr(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p,
        ):
            step()
        _, sizes = MemoryProfileTimeline(p._memory_profile())._coalesce_timeline("cpu")
    except Exception as e:  # noqa: BLE001 - a private profiler API: any failure falls back to what is certain
        return {"peak_bytes": rss, "kind": "process_peak_rss", "why": f"profiler unavailable: {type(e).__name__}"}
    totals = [sum(row[1:]) for row in sizes]
    at = max(range(len(totals)), key=totals.__getitem__) if totals else None
    breakdown = dict(zip(_CATEGORIES, sizes[at][1:], strict=False)) if at is not None else {}
    breakdown["optimizer_state"] = breakdown.get("optimizer_state", 0) + 2 * trainable_bytes
    breakdown["cached_features"] = cache_bytes
    return {
        "peak_bytes": int(sum(breakdown.values())),
        "kind": "attributed (torch profiler: one training step)",
        "breakdown": {k: int(v) for k, v in breakdown.items()},
        "process_peak_rss": rss,
    }


def environment(device: torch.device | None = None) -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "peftlab"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    dev = device or torch.device("cpu")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


# dense bf16/fp16 tensor-core peaks in FLOP/s, by device-name substring (vendor datasheets)
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "V100": 125e12,
    "T4": 65e12,
}


def step_flops(loss_of, idx, y) -> int:
    """FLOPs of one training step's forward and backward (counted once, by torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_of(idx, y).backward()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's peak for the precision in use; None where unknown (CPUs, fp32, unlisted GPUs)."""
    if device.type != "cuda" or precision not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)
