"""Measurements of a run: parameter counts, peak memory, FLOPs, the environment."""

from __future__ import annotations

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
