"""bench/gpu.sh's dry run: the GPU benchmark's code path, tiny, on the CPU, printing every figure it reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("end_to_end_s", "decode_s", "train_s", "eval_s", "other_s", "ceiling_img_s", "ceiling_share")


def test_gpu_benchmark_dry_run_prints_its_figures():
    env = dict(os.environ, PYTHON=sys.executable, DRY_RUN="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = {}
    for name in FIELDS:
        m = re.search(rf"^{name}: ([0-9][0-9,]*\.?[0-9]*)", done.stdout, re.M)
        assert m, f"{name} missing from:\n{done.stdout}"
        figures[name] = float(m.group(1).replace(",", ""))
    assert "cpu (dry run)" in done.stdout and "24 train + 8 validation + 8 test JPEGs" in done.stdout
    parts = figures["decode_s"] + figures["train_s"] + figures["eval_s"] + figures["other_s"]
    assert abs(parts - figures["end_to_end_s"]) < 0.02  # the split adds up to the whole
    assert figures["train_s"] > 0 and figures["ceiling_img_s"] > 0 and figures["ceiling_share"] > 0
    assert re.search(r"^targets: end to end <= 10 s (met|not met); share", done.stdout, re.M)
