"""The exercise's LoRA experiment with peftlab on a GPU, end to end, split into decode / train / eval / the rest,
and training's share of the compute ceiling. Run through bench/gpu.sh (see there); --dry-run: the same code path,
tiny, on the CPU, in seconds.

Set-up, untimed: a random-init ViT-B/16 (`ViTConfig()` defaults, 101 labels: nothing is downloaded) saved like a
hub checkpoint, and 4,500 train + 500 validation + 500 test synthetic JPEGs (sides 224-512 px) in an image
folder; then the ceiling (bare bf16 LoRA train steps on random tensors already on the device, batch 128) and an
untimed warm-up run on 256 images (kernel and allocator set-up). Timed: one `peftlab run --methods lora --epochs
5` on the folder, from building the config to the written report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_S, TARGET_SHARE = 10.0, 0.90  # the targets on an H100/H200


def peftlab_lora(model: str, data: str, out: str, epochs: int, batch: int, device: str, train_size: int = 0) -> dict:
    import peftlab

    cfg = peftlab.build_config(
        {
            "model": model,
            "dataset": data,
            "methods": "lora",
            "train_size": train_size,  # 0: every image of the folder
            "val_size": 0,
            "test_size": 0,
            "epochs": epochs,
            "batch_size": batch,
            "device": device,
            "min_per_class": 1,
            "baselines": ["none"],
            "out": out,
            "quiet": True,
        }
    )
    [result] = peftlab.execute(cfg, cfg.plan(), log=lambda s: None)
    if result["status"] != "ok":
        raise SystemExit(f"peftlab lora run {result['status']}: {result.get('error')}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny, on the CPU: checks the code path in seconds")
    ap.add_argument("--epochs", type=int, help="default 5 (dry run 1)")
    ap.add_argument("--train", type=int, help="training JPEGs, default 4500 (dry run 24)")
    ap.add_argument("--eval", type=int, help="validation and test JPEGs each, default 500 (dry run 8)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    epochs = args.epochs or (1 if dry else 5)
    n_train, n_eval = args.train or (24 if dry else 4500), args.eval or (8 if dry else 500)
    classes, batch = (4, 8) if dry else (101, 128)

    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    from compare_trainer import _sync, ceiling, make_vit, write_jpegs

    if not dry and not torch.cuda.is_available():
        raise SystemExit("no GPU here: run on the GPU machine, or pass --dry-run to check the code path on the CPU")
    device = "cpu" if dry else "cuda"
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # save_pretrained's shard bar
    with tempfile.TemporaryDirectory(prefix="peftlab-gpu-") as tmp:
        work = Path(tmp)
        model_dir, data = work / "vit", work / "images"
        side = make_vit(model_dir, classes, tiny=dry)
        t0 = time.perf_counter()
        write_jpegs(data, n_train, n_eval, classes, (32, 64) if dry else (224, 512))
        print(f"set-up (untimed): {n_train + 2 * n_eval:,} JPEGs written in {time.perf_counter() - t0:.1f} s")
        names = [f"c{c:03d}" for c in range(classes)]
        ceil = ceiling(str(model_dir), names, "lora", side, batch, 2 if dry else 20, device)
        if not dry:  # kernels, allocator, cuBLAS handles: paid once per process, not by the timed run
            peftlab_lora(str(model_dir), str(data), str(work / "warm"), 1, batch, device, train_size=2 * batch)
        t0 = time.perf_counter()
        r = peftlab_lora(str(model_dir), str(data), str(work / "run"), epochs, batch, device)
        _sync()
        total = time.perf_counter() - t0
    t = r["time"]
    images = r["data"]["train_examples"] + r["data"]["val_examples"] + r["data"]["test_examples"]
    other = total - t["data_s"] - t["train_s"] - t["eval_s"]
    img_s = r["throughput"]["train_img_s"]
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (dry run)'}")
    print(
        f"task: lora, ViT-B/16-shaped ({'tiny' if dry else 'ViTConfig() defaults'}, random init, {side}x{side}), "
        f"{n_train} train + {n_eval} validation + {n_eval} test JPEGs, {classes} classes, {epochs} epochs, "
        f"batch {batch}"
    )
    print(f"end_to_end_s: {total:.2f}")
    print(f"decode_s: {t['data_s']:.2f} ({images / max(t['data_s'], 1e-9):,.0f} img/s over {images:,} images)")
    print(f"train_s: {t['train_s']:.2f}")
    print(f"eval_s: {t['eval_s']:.2f}")
    print(f"other_s: {other:.2f} (model loading, saving, inference cost, report)")
    print(f"ceiling_img_s: {ceil:,.0f} (bare bf16 LoRA train steps on random tensors on the device, batch {batch})")
    print(f"ceiling_share: {img_s / ceil:.2f} (training {img_s:,.0f} img/s)")
    met = lambda ok: "met" if ok else "not met"  # noqa: E731
    print(
        f"targets: end to end <= {TARGET_S:g} s {met(total <= TARGET_S)}; share of the ceiling >= "
        f"{TARGET_SHARE:.0%} {met(img_s / ceil >= TARGET_SHARE)}" + (" (dry run: not meaningful)" if dry else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
