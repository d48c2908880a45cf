"""How a run's cost grows with the data: time and peak memory of one peftlab run (LoRA, 1 epoch, the bundled
model) against the training-set size, the number of classes and the image size, with fitted slopes.

    python bench/scaling.py             # sizes 1k, 3k, 10k, 30k, 60k; classes 5, 10; sides 28, 56, 112
    python bench/scaling.py --quick     # sizes 1k, 3k, 10k; sides at 200 training images

Each point runs in a fresh Python process (peak resident memory only grows within a process), which times
`peftlab.execute` from the config to the written report and reports:
- time: the run's wall time, and its training seconds (train_s) and data seconds (data_s);
- memory: the process's peak RSS (getrusage ru_maxrss) minus its RSS once everything is imported (what the
  run added: decoded images, model, activations, optimizer state), and the torch profiler's attributed peak
  of one training step (result.json's memory.peak_bytes: parameters, activations, gradients, optimizer
  state).
The training-set sizes use Fashion-MNIST's ten classes (60,000 training images), validation and test 500
images each (constant); the class points use 3,000 training images of fashion-mnist:5-9 and :all; the image
sides use a random-init model of the bundled model's shape (its patch size: 7 gives 16, 64, 256 patches) on
fashion-mnist:5-9 upsampled to that side. Slopes: numpy.polyfit of time on size (seconds per 1,000 images)
and of log time on log size (the exponent: 1 = linear).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def point(spec: dict) -> dict:
    """In the child process: one run; its figures."""
    import resource
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import peftlab
    import peftlab.report  # noqa: F401 - imported before the baseline RSS is read
    import peftlab.runs  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="peftlab-scaling-") as out:
        cfg = peftlab.build_config(
            {
                "model": spec["model"],
                "dataset": spec["dataset"],
                "methods": "lora",
                "train_size": spec["train"],
                "val_size": 500,
                "test_size": 500,
                "epochs": 1,
                "baselines": ["none"],
                "out": out,
                "quiet": True,
            }
        )
        base = rss_bytes()
        t0 = time.perf_counter()
        [r] = peftlab.execute(cfg, cfg.plan(), log=lambda s: None)
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if r["status"] != "ok":
        raise SystemExit(f"run {r['status']}: {r.get('error')}")
    return {
        **spec,
        "wall_s": wall,
        "train_s": r["time"]["train_s"],
        "data_s": r["time"]["data_s"],
        "rss_added_mb": (peak - base) / 2**20,
        "step_peak_mb": r["memory"]["peak_bytes"] / 2**20,
        "train_images": r["data"]["train_examples"],
    }


def random_model(folder: Path, side: int) -> str:
    """The bundled model's shape at another input side, random init (nothing downloaded)."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.utils import logging

    from peftlab.models import BUNDLED_DIR

    logging.disable_progress_bar()  # save_pretrained's shard bar

    base = json.loads((BUNDLED_DIR / "config.json").read_text())
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size")
    cfg = ViTConfig(**{k: base[k] for k in keep}, num_channels=1, image_size=side, num_labels=5)
    ViTForImageClassification(cfg).save_pretrained(folder)
    proc = json.loads((BUNDLED_DIR / "preprocessor_config.json").read_text())
    proc["size"] = {"height": side, "width": side}
    (folder / "preprocessor_config.json").write_text(json.dumps(proc))
    return str(folder)


def run_point(spec: dict, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(
        [sys.executable, __file__, "--point", json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"point {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(xs, ys) -> tuple[float, float]:
    """(slope of y on x, exponent: slope of log y on log x)."""
    import numpy as np

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    return float(np.polyfit(x, y, 1)[0]), float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes 1k, 3k, 10k; image sides at 200 training images")
    ap.add_argument("--sizes", default="", help="training-set sizes, e.g. 1000,3000 (overrides --quick's)")
    ap.add_argument("--sides", default="28,56,112")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1: steadier)")
    ap.add_argument("--point", help=argparse.SUPPRESS)  # internal: run one point in this process
    ap.add_argument("--json", default="", help="write every point to this file")
    args = ap.parse_args(argv)
    if args.point:
        print(json.dumps(point(json.loads(args.point))))
        return 0
    from peftlab.models import BUNDLED_DIR, BUNDLED_NAME

    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([1000, 3000, 10000] if args.quick else [1000, 3000, 10000, 30000, 60000])
    )
    side_train = 200 if args.quick else 1000
    rows = []
    print(f"lora, 1 epoch, validation and test 500 images each, {args.threads} torch thread(s) per run", flush=True)
    print(f"{'what':<28}{'train imgs':>11}{'wall s':>9}{'train s':>9}{'data s':>8}{'RSS added MB':>14}{'step MB':>9}")

    def show(label: str, r: dict) -> None:
        rows.append(r | {"label": label})
        print(
            f"{label:<28}{r['train_images']:>11,}{r['wall_s']:>9.1f}{r['train_s']:>9.1f}{r['data_s']:>8.2f}"
            f"{r['rss_added_mb']:>14.0f}{r['step_peak_mb']:>9.1f}",
            flush=True,
        )

    by_size = []
    for n in sizes:
        r = run_point({"model": BUNDLED_NAME, "dataset": "fashion-mnist:all", "train": n}, args.threads)
        show(f"size {n:,} (10 classes)", r)
        by_size.append(r)
    by_classes = []
    for ds, k in (("fashion-mnist:5-9", 5), ("fashion-mnist:all", 10)):
        r = run_point({"model": BUNDLED_NAME, "dataset": ds, "train": 3000}, args.threads)
        show(f"{k} classes (3,000 images)", r)
        by_classes.append(r)
    by_side = []
    patch = json.loads((BUNDLED_DIR / "config.json").read_text())["patch_size"]
    with tempfile.TemporaryDirectory(prefix="peftlab-scaling-models-") as tmp:
        for side in (int(s) for s in args.sides.split(",")):
            model = random_model(Path(tmp) / f"vit-{side}", side)
            r = run_point({"model": model, "dataset": "fashion-mnist:5-9", "train": side_train}, args.threads)
            show(f"side {side} ({(side // patch) ** 2 + 1} tokens)", r)
            by_side.append(r | {"side": side})

    print()
    if len(by_size) > 1:
        n = [r["train_images"] for r in by_size]
        per_k, exp = fit(n, [r["train_s"] for r in by_size])
        print(f"training time vs training-set size: {1000 * per_k:.2f} s per 1,000 images, exponent {exp:.2f}")
        per_k, exp = fit(n, [r["wall_s"] for r in by_size])
        print(f"run wall time vs training-set size: {1000 * per_k:.2f} s per 1,000 images, exponent {exp:.2f}")
        per_k, _ = fit(n, [r["rss_added_mb"] for r in by_size])
        print(f"RSS added vs training-set size: {1000 * per_k:.2f} MB per 1,000 images")
        per_k, _ = fit(n, [r["step_peak_mb"] for r in by_size])
        print(f"one step's attributed peak vs training-set size: {1000 * per_k:.3f} MB per 1,000 images")
    a, b = by_classes
    print(
        f"10 vs 5 classes (3,000 images): training time x{b['train_s'] / a['train_s']:.2f}, "
        f"RSS added x{b['rss_added_mb'] / max(a['rss_added_mb'], 1e-9):.2f}"
    )
    if len(by_side) > 1:
        pixels = [r["side"] ** 2 for r in by_side]
        _, exp = fit(pixels, [r["train_s"] for r in by_side])
        _, mem = fit(pixels, [r["step_peak_mb"] for r in by_side])
        print(f"training time vs pixels per image: exponent {exp:.2f}; one step's peak memory: exponent {mem:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
