"""JPEG decoding speed at a model's input size: peftlab's decoder (Pillow's draft mode: the JPEG decoded at the
smallest DCT scale, 1/2 to 1/8, still at least the input size) against the same decoder without draft mode, with
1 and N threads, on synthetic JPEGs written here (sides drawn in a range, as bench/compare_trainer.py's GPU
mode writes them).

    python bench/decode.py                          # 600 JPEGs, sides 224-512 px, input 224x224, 1 and 2 threads
    python bench/decode.py --sides 384,1024 --images 300 --threads 1,2,4

Prints img/s for each decoder and thread count (best of --repeat interleaved passes, each over every image,
the OS file cache warm), and the thread scaling (N threads / 1 thread).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--sides", default="224,512", help="smallest,largest image side in px")
    ap.add_argument("--size", type=int, default=224, help="the model's input side")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from compare_trainer import write_jpegs
    from peftlab.data import decoding
    from peftlab.data.sources import RawSplit
    from peftlab.models import ImageSpec

    spec = ImageSpec(args.size, args.size, 3, (0.5,) * 3, (0.5,) * 3)
    lo, hi = (int(v) for v in args.sides.split(","))
    with_draft = decoding._pil_to_array

    def without_draft(img, spec):
        img.draft = lambda *a, **k: None  # the instance's draft() does nothing: full-size decode
        return with_draft(img, spec)

    with tempfile.TemporaryDirectory(prefix="peftlab-decode-") as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images, 0, 1, (lo, hi))
        paths = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
        raw = RawSplit("train", np.zeros(len(paths), dtype=np.int64), paths, Image.open)
        idx = np.arange(len(paths))
        print(f"{len(paths)} JPEGs, sides {lo}-{hi} px, decoded to {args.size}x{args.size} RGB")
        rates: dict = {}
        variants = (("no draft", without_draft), ("draft (peftlab)", with_draft))
        counts = [int(t) for t in args.threads.split(",")]
        for _ in range(args.repeat):  # interleaved, best of the passes: the machine's drift hits all alike
            for name, fn in variants:
                for n in counts:
                    decoding._pil_to_array = fn
                    try:
                        t0 = time.perf_counter()
                        _, errors = decoding._decode_indices(raw, idx, spec, None, workers=n)
                        rate = len(paths) / (time.perf_counter() - t0)
                    finally:
                        decoding._pil_to_array = with_draft
                    assert not errors, errors
                    rates[name, n] = max(rates.get((name, n), 0.0), rate)
        for name, _ in variants:
            for n in counts:
                print(f"  {name:16} {n} thread(s): {rates[name, n]:7.0f} img/s", flush=True)
        threads = sorted({n for _, n in rates})
        for n in threads[1:]:
            for name in ("no draft", "draft (peftlab)"):
                print(f"scaling {name}: {n} threads / 1 thread = {rates[name, n] / rates[name, threads[0]]:.2f}")
        for n in threads:
            print(f"draft / no draft at {n} thread(s): {rates['draft (peftlab)', n] / rates['no draft', n]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
