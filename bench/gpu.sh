#!/usr/bin/env bash
# The exercise's LoRA experiment on an H100/H200 (torch, transformers, peft and accelerate installed; no
# `datasets`, no network): a random-init ViT-B/16 and 4,500 + 500 + 500 synthetic JPEGs written here, 5 epochs.
# Prints the end-to-end time, its decode/train/eval split and training's share of the compute ceiling.
#
#   bench/gpu.sh                 # on the GPU machine
#   bench/gpu.sh --dry-run       # the same code path, tiny, on the CPU, in seconds (also: DRY_RUN=1 bench/gpu.sh)
#   PYTHON=.venv/bin/python bench/gpu.sh --epochs 3
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
# peftlab from this checkout, installed or not
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    set -- --dry-run "$@"
fi
exec "$python" "$here/gpu_exercise.py" "$@"
