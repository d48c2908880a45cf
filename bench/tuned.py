"""A tuned comparison done by peftlab in one run, against the same work done naively, in one process run.

    python bench/tuned.py                                   # the default task: 3,000/1,000/1,000 images, 3 epochs
    python bench/tuned.py --train-size 600 --val-size 200 --test-size 200 --trials 4   # smaller, same shape
    python bench/tuned.py --naive worker                    # naive runs in this process, a fresh Worker each

tuned: `peftlab run --methods head,last,lora,full --tune lr --tune-trials 6 --seeds 0,1,2` (the default
baselines too) through the Python API: one Worker, so the trials and seeds of a search share the decoded
images and, for head and last, the frozen-prefix features; pruned trials stop early; the references use
features computed once per seed.

naive: the same work as separate peftlab runs. For each method, each trial's lr (the ones the tuned search
drew, in its order) is one `peftlab run --methods <m> --lr <lr> --seeds 0 --baselines none`, trained for
every epoch (a separate run is never pruned); the best validation accuracy chooses the lr; then one
`peftlab run --methods <m> --lr <chosen> --seeds 0,1,2` per method (the default baselines only with the
first method, so the naive side fits the references once, like the tuned one). --naive process (default)
starts a fresh Python process per run, as a user's shell would; --naive worker runs each in this process
with a fresh Worker (decoding and features recomputed, no interpreter start-up).

Prints both wall times and, last, `speedup: tuned=<naive s / tuned s>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def sizes(args) -> list[str]:
    return [
        "--train-size",
        str(args.train_size),
        "--val-size",
        str(args.val_size),
        "--test-size",
        str(args.test_size),
        "--epochs",
        str(args.epochs),
    ]


def tuned(args, out: Path) -> tuple[float, list[dict]]:
    import peftlab

    cfg = peftlab.build_config(
        {
            "methods": args.methods,
            "seeds": args.seeds,
            "tune": ["lr"],
            "tune_trials": args.trials,
            "train_size": args.train_size,
            "val_size": args.val_size,
            "test_size": args.test_size,
            "epochs": args.epochs,
            "out": str(out),
            "quiet": True,
        }
    )
    t0 = time.perf_counter()
    results = peftlab.execute(cfg, cfg.plan(), log=lambda s: None)
    return time.perf_counter() - t0, results


def peftlab_run(argv: list[str], mode: str) -> None:
    if mode == "process":
        env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        subprocess.run([sys.executable, "-m", "peftlab", *argv], check=True, env=env, stdout=subprocess.DEVNULL)
    else:
        from peftlab.cli import main

        if main(argv) != 0:
            raise SystemExit(f"peftlab {' '.join(argv)} failed")


def naive(args, out: Path, searches: dict[str, list[float]]) -> tuple[float, dict[str, float]]:
    """Each trial a separate run; then the chosen lr's seeds. Returns (wall s, {method: chosen lr})."""
    t0, chosen = time.perf_counter(), {}
    for i, method in enumerate(args.methods.split(",")):
        best = None
        for t, lr in enumerate(searches[method]):
            run_out = out / f"{method}-trial{t}"
            argv = ["run", "--methods", method, "--lr", repr(lr), "--seeds", "0", "--baselines", "none"]
            peftlab_run([*argv, *sizes(args), "--out", str(run_out), "--quiet"], args.naive)
            (result,) = [json.loads(p.read_text()) for p in run_out.glob("*/result.json")]
            acc = result["metrics"]["val"]["accuracy"]
            if best is None or acc > best[0]:
                best = (acc, lr)
        chosen[method] = best[1]
        argv = ["run", "--methods", method, "--lr", repr(best[1]), "--seeds", args.seeds]
        argv += [] if i == 0 else ["--baselines", "none"]
        peftlab_run([*argv, *sizes(args), "--out", str(out / f"{method}-final"), "--quiet"], args.naive)
    return time.perf_counter() - t0, chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="head,last,lora,full")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=6, help="--tune-trials")
    ap.add_argument("--train-size", type=int, default=3000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--naive", choices=("process", "worker"), default="process")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--json", default="", help="write the figures to this file")
    args = ap.parse_args(argv)

    import warnings

    import torch

    from peftlab.config import DEFAULT_DATASET

    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the naive side's processes
    root = Path(tempfile.mkdtemp(prefix="peftlab-tuned-"))
    try:
        print(
            f"task: default ({DEFAULT_DATASET}, bundled model), {args.train_size}/{args.val_size}/{args.test_size} "
            f"train/val/test images, {args.epochs} epochs; methods {args.methods}; --tune lr --tune-trials "
            f"{args.trials}; seeds {args.seeds}; naive runs: {args.naive}; {torch.get_num_threads()} torch threads",
            flush=True,
        )
        tuned_s, results = tuned(args, root / "tuned")
        searches, pruned, epochs = {}, 0, 0
        for r in results:
            if r.get("tuning") and r["method"] not in searches:
                trials = sorted(r["tuning"]["trials"], key=lambda t: t["number"])
                searches[r["method"]] = [t["params"]["lr"] for t in trials]
                pruned += sum(t["state"] == "pruned" for t in trials)
                epochs += sum(t["epochs"] for t in trials)
        caches = [r["train"].get("cache_s") for r in results if r.get("kind") == "method"]
        print(
            f"tuned: {tuned_s:.1f} s ({len(results)} results; {pruned} of {args.trials * len(searches)} trials "
            f"pruned, {epochs} trial epochs of {args.trials * len(searches) * args.epochs}; prefix-cache seconds "
            f"of the final runs: {', '.join(f'{c:.2f}' for c in caches if c is not None) or 'none'})",
            flush=True,
        )
        naive_s, chosen = naive(args, root / "naive", searches)
        same = all(
            abs(chosen[m] - next(r for r in results if r["method"] == m)["method_config"]["lr"]) < 1e-12 for m in chosen
        )
        print(
            f"naive: {naive_s:.1f} s ({sum(len(v) for v in searches.values())} trial runs + {len(chosen)} final "
            f"runs; chose the same lr as the tuned search: {'yes' if same else 'no'})",
            flush=True,
        )
        figures = {"tuned_s": tuned_s, "naive_s": naive_s, "speedup": naive_s / tuned_s, "args": vars(args)}
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wall time: tuned {tuned_s:.1f} s, naive {naive_s:.1f} s")
        print(f"speedup: tuned={naive_s / tuned_s:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
