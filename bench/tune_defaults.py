"""Re-derive the methods' default learning rates on the validation split of the default task.

    .venv/bin/python bench/tune_defaults.py                       # every method, 12 trials each
    .venv/bin/python bench/tune_defaults.py --methods head,lora --trials 8

For each method: peftlab's own search (Optuna TPE, the method's registered lr range, the default task's
training sample and validation split, seed 0, the default epochs) — the test split is never scored. The
chosen lr, rounded to two significant digits, is what the method's config dataclass should say; the
script prints a table of registered default vs chosen and writes it to bench/results/defaults.json.
A default it would change is marked; a method whose search range did not contain the choice well (chosen
within 10% of a range end, on a log scale) is marked too: widen its range and run again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def round2(x: float) -> float:
    return float(f"{x:.2g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="all")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--out", default=str(HERE / "results" / "defaults-search"))
    ap.add_argument("--json", default=str(HERE / "results" / "defaults.json"))
    args = ap.parse_args(argv)

    import peftlab
    from peftlab.config import RunSpec
    from peftlab.methods import get, parse_methods
    from peftlab.runs import Worker
    from peftlab.runs.tuning import tune

    names = parse_methods(args.methods)
    cfg = peftlab.build_config(
        {"methods": names, "seeds": [0], "tune": ["lr"], "tune_trials": args.trials, "out": args.out, "quiet": True}
    )
    worker = Worker(cfg)
    rows, t0 = [], time.perf_counter()
    for name in names:
        m = get(name)
        default = m.config_cls()
        spec = RunSpec(name, default, 0, name)
        tuned, record = tune(cfg, spec, log=lambda s: print(s, file=sys.stderr), worker=worker)
        chosen = tuned.options.lr
        low, high = m.search["lr"].low, m.search["lr"].high
        edge = min(math.log(chosen / low), math.log(high / chosen)) / math.log(high / low) < 0.1
        rows.append(
            {
                "method": name,
                "registered": default.lr,
                "chosen": round2(chosen),
                "chosen_exact": chosen,
                "validation_accuracy": record["best_value"],
                "range": [low, high],
                "at_range_edge": edge,
            }
        )
        print(
            f"{name:14} registered {default.lr:<8g} chosen {round2(chosen):<8g} validation {record['best_value']:.3f}"
            + ("  (changed)" if round2(chosen) != default.lr else "")
            + ("  (near the range's edge: widen it)" if edge else ""),
            flush=True,
        )
    payload = {
        "task": {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "train_size": "default",
            "epochs": cfg.epochs,
            "split": "validation (the test split is never scored)",
            "seed": 0,
        },
        "trials": args.trials,
        "wall_s": time.perf_counter() - t0,
        "peftlab": peftlab.__version__,
        "methods": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json} ({payload['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
