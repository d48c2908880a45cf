"""peftlab against the exercise's pipeline (the HF PEFT image-classification notebook: per-sample
transforms on every access, transformers.Trainer, 0 dataloader workers), in one process, on the same
data; wall times end to end for lora, last and head. See bench/README.md.

  python bench/compare_trainer.py                               # CPU: bundled ViT, fashion-mnist:5-9
  python bench/compare_trainer.py --device cuda                 # GPU: ViT-B/16 random init, synthetic JPEGs
  python bench/compare_trainer.py --device cuda --dry-run-cpu   # the GPU code path, tiny, on the CPU

The last line printed is `speedup: lora=<reference s / peftlab s> last=<...> head=<...>`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

METHODS = ("lora", "last", "head")
REFERENCE_LR = 5e-3  # the notebook's learning rate, for every method


# ---------------------------------------------------------------- the reference's per-sample transforms
# The notebook composes torchvision transforms: RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor
# + Normalize for training, Resize(size) + CenterCrop(size) + ToTensor + Normalize for evaluation. torchvision
# may not be installed here (it pulls a CUDA torch), so these are the same operations written with PIL,
# numpy and torch, with torchvision's parameter sampling, one image at a time, as torchvision runs them.
class Transforms:
    def __init__(self, size: int, mean, std, mode: str):
        self.size, self.mode = size, mode  # mode: the notebook's image.convert("RGB"); "L" for grayscale models
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def to_tensor_normalized(self, img: Image.Image) -> torch.Tensor:  # ToTensor() + Normalize(mean, std)
        a = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
        x = (a[:, :, None] if a.ndim == 2 else a).permute(2, 0, 1).contiguous().float().div(255)
        return (x - self.mean) / self.std

    def crop_box(self, w: int, h: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):  # RandomResizedCrop.get_params
        for _ in range(10):
            area = w * h * torch.empty(1).uniform_(*scale).item()
            r = math.exp(torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1])).item())
            cw, ch = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = int(torch.randint(0, h - ch + 1, (1,))), int(torch.randint(0, w - cw + 1, (1,)))
                return left, top, left + cw, top + ch
        cw, ch = (
            (w, int(round(w / ratio[0])))
            if w / h < ratio[0]
            else (int(round(h * ratio[1])), h)
            if w / h > ratio[1]
            else (w, h)
        )  # fallback: central crop
        return (w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch

    def train(self, img: Image.Image) -> torch.Tensor:
        img = img.convert(self.mode)
        img = img.crop(self.crop_box(*img.size)).resize((self.size, self.size), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return self.to_tensor_normalized(img)

    def eval(self, img: Image.Image) -> torch.Tensor:
        img = img.convert(self.mode)
        w, h = img.size
        s = self.size
        if min(w, h) != s:  # Resize(s): the shorter side to s, aspect kept (torchvision's rounding)
            img = img.resize((s, int(s * h / w)) if w <= h else (int(s * w / h), s), Image.BILINEAR)
        w, h = img.size
        top, left = int(round((h - s) / 2)), int(round((w - s) / 2))  # CenterCrop(s)
        return self.to_tensor_normalized(img.crop((left, top, left + s, top + s)))


def with_transform_fn(transform):
    """The notebook's preprocess_train / preprocess_val: add pixel_values to a batch of examples."""

    def fn(batch):
        batch["pixel_values"] = [transform(image) for image in batch["image"]]
        return batch

    return fn


class ImageFiles(torch.utils.data.Dataset):
    """What `datasets.Dataset.with_transform(fn)` does for an image folder, without `datasets` (the GPU
    machine lacks it): each access opens the file and runs fn on a batch of one example."""

    def __init__(self, paths: list[str], labels: list[int], fn):
        self.paths, self.labels, self.fn = paths, labels, fn

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        batch = self.fn({"image": [Image.open(self.paths[i])], "label": [self.labels[i]]})
        return {k: v[0] for k, v in batch.items()}


def collate_fn(examples):
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["label"] for e in examples]),
    }


# ---------------------------------------------------------------- the reference's data and model
def fmnist_task(args):
    """The Fashion-MNIST task peftlab draws for this seed: training sample, validation set, test set."""
    from transformers import AutoConfig

    from peftlab.config import DataOptions
    from peftlab.data import load_task
    from peftlab.models import BUNDLED_DIR, BUNDLED_NAME, image_spec

    options = DataOptions(args.dataset, train_size=args.train_size, val_size=args.eval_size, test_size=args.eval_size)
    spec = image_spec(BUNDLED_NAME, AutoConfig.from_pretrained(BUNDLED_DIR))
    return load_task(options, spec, seed=args.seed, warn=lambda s: None)


def fmnist_datasets(args):
    """peftlab's own training sample and test set of Fashion-MNIST, as datasets.Dataset objects of PIL
    images for the reference: (label names, train, eval). The same images in the same order by construction."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    task = fmnist_task(args)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=task.label_names)})
    out = [task.label_names]
    for split in (task.train, task.test):
        out.append(
            Dataset.from_dict(
                {"image": [Image.fromarray(a[0]) for a in split.images.numpy()], "label": split.labels.tolist()},
                features=features,
            )
        )
    return out


def folder_datasets(root: Path):
    """An image folder (ROOT/train/<class>/*.jpg, ROOT/test/<class>/*.jpg) as (paths, labels) per split."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    out = []
    for split in ("train", "test"):
        paths, labels = [], []
        for i, c in enumerate(classes):
            files = sorted(str(f) for f in (root / split / c).iterdir())
            paths += files
            labels += [i] * len(files)
        out.append((paths, labels))
    return classes, out


def reference_model(model_dir: str, names: list[str], method: str):
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging

    logging.disable_progress_bar()  # peftlab's loader turns the weight-loading bar back on
    model = AutoModelForImageClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = ["query", "value"] if "query" in leaves else ["q_proj", "v_proj"]  # transformers 5 names
        return get_peft_model(
            model,
            LoraConfig(
                r=8,
                lora_alpha=16,
                target_modules=targets,
                lora_dropout=0.1,
                bias="none",
                modules_to_save=["classifier"],
            ),
        )
    blocks = model.vit.encoder.layer if hasattr(model.vit, "encoder") else model.vit.layers
    for p in model.parameters():
        p.requires_grad = method == "full"
    for p in [*model.classifier.parameters(), *(blocks[-1].parameters() if method == "last" else [])]:
        p.requires_grad = True
    return model


def reference_run(args, method: str, model_dir: str, data, out_dir: str) -> tuple[float, float]:
    """The exercise's pipeline, end to end: (seconds, final accuracy)."""
    from transformers import AutoImageProcessor, PrinterCallback, Trainer, TrainingArguments

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    proc = AutoImageProcessor.from_pretrained(model_dir)
    mode = "RGB" if len(proc.image_mean) == 3 else "L"
    tf = Transforms(proc.size["height"], proc.image_mean, proc.image_std, mode)
    if data is None:  # CPU mode: Fashion-MNIST as datasets of PIL images
        names, train_ds, eval_ds = fmnist_datasets(args)
        train_ds = train_ds.with_transform(with_transform_fn(tf.train))
        eval_ds = eval_ds.with_transform(with_transform_fn(tf.eval))
    else:  # an image folder, read with PIL on every access
        names, ((tp, tl), (ep, el)) = folder_datasets(data)
        tp, tl, ep, el = (
            v[: n or None]
            for v, n in ((tp, args.train_size), (tl, args.train_size), (ep, args.eval_size), (el, args.eval_size))
        )  # 0 = all
        train_ds, eval_ds = (
            ImageFiles(tp, tl, with_transform_fn(tf.train)),
            ImageFiles(ep, el, with_transform_fn(tf.eval)),
        )
    model = reference_model(model_dir, names, method)
    gpu = args.device == "cuda" and not args.dry_run_cpu
    targs = TrainingArguments(
        output_dir=out_dir,
        remove_unused_columns=False,
        eval_strategy="epoch",
        save_strategy="no",
        learning_rate=REFERENCE_LR,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        bf16=gpu,
        use_cpu=not gpu,
        dataloader_num_workers=args.ref_workers,
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        label_names=["labels"],
        seed=args.seed,
    )
    accuracies = []

    def compute_metrics(p):  # the notebook's evaluate.load("accuracy"), computed locally
        accuracies.append(float((np.argmax(p.predictions, axis=1) == p.label_ids).mean()))
        return {"accuracy": accuracies[-1]}

    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate_fn,
        compute_metrics=compute_metrics,
    )
    trainer.remove_callback(PrinterCallback)  # logging off: no metric dicts printed
    trainer.evaluate()  # the baseline accuracy the exercise reports (peftlab evaluates it too)
    trainer.train()
    _sync()
    return time.perf_counter() - t0, accuracies[-1]


def peftlab_run(args, method: str, model: str, dataset: str, out_dir: str) -> tuple[float, dict]:
    import peftlab

    torch.set_num_threads(args.threads)
    # each call is its own Worker with its own decode cache: each method pays its own decode, as the
    # reference does (a sweep would decode once)
    t0 = time.perf_counter()
    cfg = peftlab.build_config(
        {
            "model": model,
            "dataset": dataset,
            "methods": method,
            "seeds": args.seed,
            "train_size": args.train_size,
            "val_size": args.eval_size,
            "test_size": args.eval_size,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": "cpu" if args.dry_run_cpu else args.device,
            "min_per_class": 1,
            "baselines": ["none"],  # the reference fits no baselines either
            "out": out_dir,
            "quiet": True,
        }
    )
    [result] = peftlab.execute(cfg, cfg.plan())
    _sync()
    seconds = time.perf_counter() - t0
    if result["status"] != "ok":
        raise SystemExit(f"peftlab {method} run {result['status']}: {result.get('error')}")
    return seconds, result


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------- GPU mode: a random ViT-B/16 and synthetic JPEGs
def make_vit(folder: Path, classes: int, tiny: bool) -> int:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = (
        ViTConfig(num_labels=classes)
        if not tiny
        else ViTConfig(
            num_labels=classes,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=16,
        )
    )
    ViTForImageClassification(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "ViTImageProcessor",
                "do_resize": True,
                "do_rescale": True,
                "do_normalize": True,
                "size": {"height": cfg.image_size, "width": cfg.image_size},
                "resample": 2,
                "rescale_factor": 1 / 255,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            }
        )
    )
    return cfg.image_size


def write_jpegs(root: Path, n_train: int, n_eval: int, classes: int, sides: tuple[int, int]) -> None:
    """Random smooth-plus-noise RGB images of random sizes, class i % classes, written in parallel."""
    # peftlab validates on val/ (as many images as test/); the reference trains on the same train/ and
    # evaluates on the same test/
    jobs = [("train", i) for i in range(n_train)] + [(s, i) for s in ("val", "test") for i in range(n_eval)]
    for split in ("train", "val", "test"):
        for c in range(classes):
            (root / split / f"c{c:03d}").mkdir(parents=True, exist_ok=True)

    def one(job):
        split, i = job
        rng = np.random.default_rng([i, ("train", "test", "val").index(split)])
        w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8))
        img = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.int16) + rng.integers(-16, 17, (h, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
            root / split / f"c{i % classes:03d}" / f"{i:05d}.jpg", quality=90
        )

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, jobs))


def ceiling(model_dir: str, names: list[str], method: str, side: int, batch: int, steps: int, device: str) -> float:
    """Images/s of a bare bf16 training step loop on random tensors already on the device."""
    model = reference_model(model_dir, names, method).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda")
    x = torch.randn(batch, 3, side, side, device=device)
    y = torch.randint(len(names), (batch,), device=device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(pixel_values=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync()
    return batch * steps / (time.perf_counter() - t0)


def head_limit_line(seconds: float, r: dict, model: str, device: str) -> str:
    """head's time against its physical limit here: one forward pass of the frozen model over the train and
    eval images (timed now, in eval mode without gradients, in batches of peftlab's eval batch) plus the
    solver (peftlab's epochs on the cached features: the head's own training)."""
    from peftlab.models import image_spec, load_model
    from peftlab.runs.worker import _model_config

    spec = image_spec(model, _model_config(model))
    net = load_model(model, r["data"]["label_names"], 0).to(device).eval()
    train, evals, batch = r["data"]["train_examples"], r["data"]["test_examples"], r["train"]["eval_batch_size"]
    x = torch.randint(0, 256, (batch, spec.channels, spec.height, spec.width), dtype=torch.uint8, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        net(pixel_values=spec.normalize(x[:8]))  # warm-up
        _sync()
        t0 = time.perf_counter()
        for i in range(0, train + evals, batch):
            net(pixel_values=spec.normalize(x[: min(batch, train + evals - i)]))
        _sync()
    forward = time.perf_counter() - t0
    solver = sum(h["seconds"] for h in r["history"])
    with_val = forward * (train + 2 * evals) / (train + evals) + solver
    return (
        f"head: peftlab {seconds:.1f} s = {seconds / (forward + solver):.2f}x its limit here (one forward over "
        f"{train:,} train + {evals:,} eval images {forward:.2f} s + solver {solver:.2f} s); "
        f"{seconds / with_val:.2f}x counting the {r['data']['val_examples']:,} validation images peftlab also scores"
    )


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dry-run-cpu", action="store_true", help="cuda mode's code path, tiny, on the CPU")
    ap.add_argument("--dataset", default="fashion-mnist:5-9", help="cpu mode: a built-in Fashion-MNIST task")
    ap.add_argument("--train-size", type=int, help="default: 3000 (cpu), 4500 (cuda), 40 (dry run)")
    ap.add_argument("--eval-size", type=int, help="default: 1000 (cpu), 500 (cuda), 10 (dry run)")
    ap.add_argument("--epochs", type=int, help="default: 3 (cpu), 5 (cuda), 1 (dry run)")
    ap.add_argument("--batch-size", type=int, help="default: 64 (cpu), 128 (cuda), 8 (dry run)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, both sides")
    ap.add_argument("--ref-workers", type=int, default=0, help="reference dataloader workers (notebook: 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reference",
        default=",".join(METHODS),
        help="methods that also get the reference run (comma-separated; 'none': peftlab only)",
    )
    ap.add_argument("--json", help="also write the figures and peftlab's result.json of each method to this file")
    args = ap.parse_args()
    synthetic = args.device == "cuda"
    args.reference = [] if args.reference == "none" else args.reference.split(",")
    if set(args.reference) - set(METHODS):
        raise SystemExit(f"--reference takes methods among {', '.join(METHODS)}, or 'none'")
    if synthetic and not args.dry_run_cpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a GPU (or --dry-run-cpu to try the code path on the CPU)")
    size = "dry" if args.dry_run_cpu else args.device
    defaults = {"cpu": (3000, 1000, 3, 64), "cuda": (4500, 500, 5, 128), "dry": (40, 10, 1, 8)}[size]
    for name, d in zip(("train_size", "eval_size", "epochs", "batch_size"), defaults):
        setattr(args, name, d if getattr(args, name) is None else getattr(args, name))
    torch.set_num_threads(args.threads)
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(
            f"warning: load average {os.getloadavg()[0]:.1f}: other processes use the CPUs, timings will be noisy "
            "(with a core taken, --threads 1 is far steadier than all cores)"
        )

    # one-off imports (several seconds of lazy transformers modules, matplotlib for peftlab's report),
    # paid once per process before any clock starts, so no method's time carries them
    import matplotlib.figure  # noqa: F401
    import peft  # noqa: F401
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, Trainer  # noqa: F401

    import peftlab.report  # noqa: F401
    import peftlab.runs  # noqa: F401

    transformers.logging.set_verbosity_error()  # the new head's "newly initialized" warnings
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # Trainer's own deprecation notices

    tmp = tempfile.TemporaryDirectory(prefix="peftlab-bench-")
    work, n_train, n_eval = Path(tmp.name), args.train_size, args.eval_size
    device = "cpu" if args.dry_run_cpu else args.device
    if synthetic:  # untimed set-up: a random ViT saved like a hub checkpoint, and an image folder of JPEGs
        classes = 5 if args.dry_run_cpu else 101
        model_dir, data = work / "vit", work / "images"
        side = make_vit(model_dir, classes, tiny=args.dry_run_cpu)
        t0 = time.perf_counter()
        write_jpegs(data, n_train, n_eval, classes, (32, 64) if args.dry_run_cpu else (224, 512))
        print(f"wrote {n_train + n_eval:,} JPEGs of {classes} classes in {time.perf_counter() - t0:.1f} s (untimed)")
        model, dataset, model_dir = str(model_dir), str(data), str(model_dir)
        args.train_size = args.eval_size = 0  # peftlab takes every image of the folder
    else:
        from peftlab.models import BUNDLED_DIR, BUNDLED_NAME

        model, dataset, model_dir, data = BUNDLED_NAME, args.dataset, str(BUNDLED_DIR), None
        # the reference's data is peftlab's own training sample and test set (fmnist_datasets): the same
        # images, labels and order by construction
    print(
        f"data: {dataset}, {n_train:,} train / {n_eval:,} eval images; {args.epochs} epochs, batch "
        f"{args.batch_size}; device {device}, {args.threads} torch threads; reference dataloader workers "
        f"{args.ref_workers}"
    )

    ceil = {}
    if synthetic:  # the synthetic compute ceiling, measured first (it also warms the GPU up)
        batch, steps = (8, 2) if args.dry_run_cpu else (128, 20)
        for m in ("lora", "last", "head", "full"):
            ceil[m] = ceiling(model_dir, [f"c{c:03d}" for c in range(classes)], m, side, batch, steps, device)
        print(
            f"compute ceiling (bare bf16 train steps on random tensors on the device, batch {batch}): "
            + ", ".join(f"{m} {v:,.0f} img/s" for m, v in ceil.items())
        )

    # process-level one-off costs (first autograd pass, kernel and allocator set-up, matplotlib's font
    # cache, Trainer/accelerate set-up) would fall on whichever side runs first: pay them untimed, once each
    warm = argparse.Namespace(
        **{
            **vars(args),
            "epochs": 1,
            "train_size": min(2 * args.batch_size, n_eval),
            "eval_size": min(2 * args.batch_size, n_eval),
        }
    )
    t0 = time.perf_counter()
    peftlab_run(warm, "lora", model, dataset, str(work / "warm-peftlab"))
    t1 = time.perf_counter()
    reference_run(warm, "lora", model_dir, data, str(work / "warm-trainer"))
    print(
        f"warm-up, lora on {warm.train_size} images, untimed: peftlab {t1 - t0:.1f} s, reference "
        f"{time.perf_counter() - t1:.1f} s"
    )

    rows = {}
    for m in METHODS:  # one method at a time, so load drift hits both alike
        ours_s, r = peftlab_run(args, m, model, dataset, str(work / f"peftlab-{m}"))
        t = r["time"]
        print(
            f"  {m}: peftlab {ours_s:.1f} s (test accuracy {r['metrics']['test']['accuracy']:.3f}; "
            f"train {t['train_s']:.1f} s, "
            f"eval {t['eval_s']:.1f} s, model + save {t['total_s'] - t['train_s'] - t['eval_s']:.1f} s, data "
            f"{t['data_s']:.1f} s, set-up + report {ours_s - t['total_s'] - t['data_s']:.1f} s; path: "
            f"{r['train']['path']})",
            flush=True,
        )
        ref_s = math.nan
        if m in args.reference:
            ref_s, ref_acc = reference_run(args, m, model_dir, data, str(work / f"trainer-{m}"))
            print(f"  {m}: reference {ref_s:.1f} s (accuracy {ref_acc:.3f})", flush=True)
        rows[m] = (ref_s, ours_s, r)
    tmp.cleanup()

    print(f"\n{'method':<8}{'reference s':>12}{'peftlab s':>11}{'ratio':>8}")
    for m, (ref_s, ours_s, _) in rows.items():
        print(
            f"{m:<8}{ref_s:>12.1f}{ours_s:>11.1f}{ref_s / ours_s:>7.2f}x"
            if m in args.reference
            else f"{m:<8}{'-':>12}{ours_s:>11.1f}{'-':>8}"
        )
    if synthetic:
        for m, (_, _, r) in rows.items():
            img_s = r["throughput"]["train_img_s"]  # cached paths: the cache build counts as training time
            print(
                f"peftlab {m}: training throughput {img_s:,.0f} img/s = {100 * img_s / ceil[m]:.0f}% of the "
                f"{m} ceiling; mean epoch {np.mean([h['seconds'] for h in r['history']]):.2f} s"
                + (f" (+ {r['train']['cache_s']:.2f} s prefix cache, once)" if "cache_s" in r["train"] else "")
            )
        epoch = {m: np.mean([h["seconds"] for h in r["history"]]) for m, (_, _, r) in rows.items()}
        print(
            f"epoch time vs lora: last {epoch['lora'] / epoch['last']:.1f}x faster, "
            f"head {epoch['lora'] / epoch['head']:.1f}x faster"
        )
    if "head" in rows:
        print(head_limit_line(rows["head"][1], rows["head"][2], model, device))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "ceiling_img_s": ceil,
                    "methods": {
                        m: {"reference_s": ref_s, "peftlab_s": ours_s, "result": r}
                        for m, (ref_s, ours_s, r) in rows.items()
                    },
                },
                indent=1,
                default=str,
            )
        )
    print("speedup: " + " ".join(f"{m}={rows[m][0] / rows[m][1]:.2f}" for m in METHODS if m in args.reference))


if __name__ == "__main__":
    main()
