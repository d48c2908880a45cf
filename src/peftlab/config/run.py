"""The options of a run: checked dataclasses (RunConfig for `peftlab run`, TrainConfig for the loop,
DataOptions for the data, RunSpec for one run). No torch, no registry at import time (the report layer
reads the fields' help texts); the registry is imported where a method name or option is checked."""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from .tune import check_tune
from .values import _positive

MAX_SEED = 2**32 - 1  # numpy's and most samplers' seed range
CLI_ONLY = ("trust_remote_code",)  # never read from a config file nor written to one: no file turns on running code
BUNDLED_NAME = "peftlab-vit-tiny"  # the model peftlab ships (src/peftlab/bundled), the default --model
DEFAULT_DATASET = "fashion-mnist:3,4,6,7,9"  # classes the bundled model never saw
DEFAULT_METHODS = ["head", "last", "lora", "full"]
DEFAULT_BASELINES = ["majority", "pixels", "probe", "knn"]  # cheap: in every run; 'scratch' trains, so on request
BASELINES = (*DEFAULT_BASELINES, "probe-random", "scratch")  # on request: a second forward pass / training runs
SCRATCH_LABEL = "from scratch"
TRACKERS = ("tensorboard", "mlflow", "wandb")  # --report-to: Accelerate's trackers that peftlab feeds
SIZED_EPOCHS_CAP = 10  # a nested training size trains at most 10x --epochs (each epoch scores the validation split)


@dataclass
class TrainConfig:
    """The training loop's settings (training.loop.fit)."""

    epochs: int = 3
    batch_size: int = 64
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # fraction of all steps spent warming the lr up linearly from 0
    max_grad_norm: float = 1.0  # gradient clipping on the global L2 norm; 0 turns it off
    augment: str = "none"  # none | flip | crop-flip (random resized crop + flip), batched on the device
    prefix_cache: bool = True  # train a frozen prefix's outputs once computed (exact; off with augmentation)
    early_stop: int = 0  # stop after this many epochs without a better validation accuracy; 0 = off
    checkpoint: str = "best"  # the weights tested: best (validation) or last


# default sample sizes: used whole when a dataset has fewer (and the run says so); 0 means all
DEFAULT_TRAIN_SIZE, DEFAULT_VAL_SIZE, DEFAULT_TEST_SIZE = 8000, 1000, 5000


@dataclass
class DataOptions:
    """What data a run reads and how it samples and checks it (data.task.load_task). Sizes: None is the
    default (DEFAULT_*_SIZE, or all when fewer), 0 all, N a stratified sample of N; *_per_class: exactly
    that many per class instead."""

    dataset: str = DEFAULT_DATASET
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    train_per_class: int | None = None
    val_per_class: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    test_split: str | None = None
    holdout: float = 0.2  # share of the training split held out as the test split when there is none
    val_fraction: float = 0.2  # the default validation slice's share of the training split (at most DEFAULT_VAL_SIZE)
    min_per_class: int = 5
    strict_coverage: bool = False
    max_bad_fraction: float = 0.1

    def split_names(self) -> dict[str, str | None]:
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}


@dataclass
class RunConfig:
    model: str = field(
        default=BUNDLED_NAME, metadata={"help": f"hub id, local model folder, or '{BUNDLED_NAME}' (bundled, offline)"}
    )
    dataset: str = field(
        default=DEFAULT_DATASET, metadata={"help": "fashion-mnist:<labels 0-9>|all, a hub id or a folder"}
    )
    methods: list[str] = field(
        default_factory=lambda: list(DEFAULT_METHODS),
        metadata={"help": "comma-separated methods, or 'all' (see 'peftlab methods')"},
    )
    seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata={"help": "comma-separated seeds (sampling, head init, data order); each method runs once per seed"},
    )
    out: str = field(default="", metadata={"help": "results folder (default: runs/<date-time>)"})
    train_size: int | None = field(
        default=None,
        metadata={
            "help": f"stratified, seeded sample of the training split (default {DEFAULT_TRAIN_SIZE}, or all when "
            "fewer); 0 = all"
        },
    )
    val_size: int | None = field(
        default=None,
        metadata={
            "help": f"validation images: a sample of the dataset's validation split, else a stratified slice of "
            f"the training split (default {DEFAULT_VAL_SIZE}, at most a fifth of it); 0 = all"
        },
    )
    test_size: int | None = field(
        default=None,
        metadata={
            "help": f"stratified, seeded sample of the test split (default {DEFAULT_TEST_SIZE}, or all when "
            "fewer); 0 = all"
        },
    )
    train_per_class: int | None = field(
        default=None, metadata={"help": "exactly this many training images per class (instead of --train-size)"}
    )
    val_per_class: int | None = field(
        default=None, metadata={"help": "exactly this many validation images per class (instead of --val-size)"}
    )
    train_sizes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "training images per class, e.g. 5,20,100,all: every method and baseline at each size on the "
            "same seeds (nested samples of the seed's training sample; 'all' = that whole sample, see "
            "--train-size); validation and test are the same at every size"
        },
    )
    epochs: int = field(default=3, metadata={"help": "passes over the training sample"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float | None = field(
        default=None,
        metadata={"help": "learning rate for every method (default: each method's own, see --<method>-lr)"},
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "fraction of steps of linear warmup before cosine decay"}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 = off"})
    augment: str = field(
        default="none",
        metadata={"help": "none, flip or crop-flip (random resized crop + flip), done batched on the device"},
    )
    early_stop: int = field(
        default=0,
        metadata={"help": "stop when validation accuracy has not improved for this many epochs; 0 = train every epoch"},
    )
    checkpoint: str = field(
        default="best",
        metadata={"help": "the weights that are tested: best (the epoch of highest validation accuracy) or last"},
    )
    tune: list[str] = field(
        default_factory=list,
        metadata={
            "help": "options searched per method on the validation split before the final runs, e.g. lr or "
            "lr,r (method.option for one method: lora.r); each method's range comes from its registration"
        },
    )
    tune_trials: int = field(
        default=8, metadata={"help": "trials of the search per method: the same budget for every method"}
    )
    refit: str = field(
        default="train",
        metadata={
            "help": "what the final runs train on: train (the checkpoint chosen on validation) or train+val "
            "(the validation images too, VTAB-style; then the last epoch is tested)"
        },
    )
    baselines: list[str] = field(
        default_factory=lambda: list(DEFAULT_BASELINES),
        metadata={
            "help": "reference baselines on the same samples: majority, pixels (logistic regression on the raw input), "
            "probe (converged linear probe on the frozen features), knn, probe-random (the probe on a random copy's "
            "features), scratch (the architecture trained from random init); '+scratch' adds to the defaults; none"
        },
    )
    protocol: str = field(
        default="",
        metadata={
            "help": "a preset of the options above: vtab-1k (800 train / 200 val, refit on the 1,000, the "
            "whole test split) or few-shot:K (K images per class to train and to validate, seeds 0,1,2)"
        },
    )
    prefix_cache: bool = field(
        default=True,
        metadata={
            "help": "when only a suffix of the network trains (head, last, ...) and nothing is random before it, "
            "run the frozen prefix once per image (exact); --no-prefix-cache runs the full forward"
        },
    )
    image_column: str | None = field(default=None, metadata={"help": "image column (default: detected)"})
    label_column: str | None = field(default=None, metadata={"help": "label column (default: detected)"})
    train_split: str | None = field(default=None, metadata={"help": "training split name (default: train)"})
    val_split: str | None = field(
        default=None,
        metadata={
            "help": "validation split name (default: validation/valid/val when a test split exists too; "
            "else a slice of the training split)"
        },
    )
    test_split: str | None = field(
        default=None,
        metadata={
            "help": "test split name (default: test, else validation/valid/val; else a held-out fifth of "
            "the training split)"
        },
    )
    max_bad_fraction: float = field(
        default=0.1,
        metadata={
            "help": "error when more than this fraction of the images tried in a split are unreadable (fewer are "
            "skipped, replaced by same-class images where possible, and reported)"
        },
    )
    min_per_class: int = field(default=5, metadata={"help": "warn when a class has fewer examples in a split"})
    strict_coverage: bool = field(default=False, metadata={"help": "make class-coverage warnings errors"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 on GPUs that have it), fp32, bf16, fp16"})
    quiet: bool = field(default=False, metadata={"help": "no progress output"})
    report_to: list[str] = field(
        default_factory=list,
        metadata={
            "help": "experiment trackers that follow each run (Accelerate's): tensorboard, mlflow, wandb, "
            "comma-separated; needs pip install 'peftlab[trackers]'"
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "DANGEROUS: let transformers run the Python code a model folder or hub repo ships (its "
            "auto_map) with your permissions; only for a model whose code you have read. Command line only"
        },
    )
    method_options: dict[str, Any] = field(default_factory=dict)  # method name -> its MethodConfig

    def __post_init__(self):
        from ..methods import REGISTRY, parse_methods

        self.methods = parse_methods(self.methods)
        twice = sorted({m for m in self.methods if self.methods.count(m) > 1})
        if twice:
            raise UserError(f"--methods names {', '.join(twice)} more than once; name each method once")
        if self.model not in (BUNDLED_NAME, "bundled") and Path(self.model).expanduser().exists():
            # a local folder is recorded absolute: results, cards and adapters resolve from any directory
            self.model = os.path.abspath(Path(self.model).expanduser())
        self.report_to = [t.strip() for t in self.report_to if t.strip() and t.strip() != "none"]
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise UserError(f"--report-to: unknown tracker '{unknown[0]}'; choose from {', '.join(TRACKERS)} or none")
        seeds = [self.seeds] if isinstance(self.seeds, (int, str)) else list(self.seeds)
        try:
            seeds = [
                int(x) for s in seeds for x in (str(s).split(",") if isinstance(s, str) else [s]) if str(x).strip()
            ]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got '{self.seeds}')") from None
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > MAX_SEED:
            shown = ",".join(map(str, seeds))
            raise UserError(f"--seeds must be distinct integers from 0 to {MAX_SEED}, e.g. 0,1,2 (got '{shown}')")
        self.seeds = seeds
        _positive("--", epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        for name in ("train_size", "val_size", "test_size"):
            if (getattr(self, name) or 0) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0 (0 = all; got {getattr(self, name)})")
        for name in ("train_per_class", "val_per_class"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.train_per_class and self.train_size is not None:
            raise UserError("--train-per-class and --train-size both say how many training images; give one")
        if self.val_per_class and self.val_size is not None:
            raise UserError("--val-per-class and --val-size both say how many validation images; give one")
        self.train_sizes = parse_sizes(self.train_sizes)
        if self.train_sizes and self.train_per_class:
            raise UserError("--train-sizes and --train-per-class both say how many training images; give one")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1 or self.max_grad_norm < 0:
            raise UserError("--weight-decay and --max-grad-norm must be >= 0, --warmup-ratio in [0, 1)")
        if not 0 <= self.max_bad_fraction <= 1:
            raise UserError(f"--max-bad-fraction must be between 0 and 1 (got {self.max_bad_fraction:g})")
        if self.early_stop < 0:
            raise UserError(f"--early-stop must be >= 0 epochs of patience (got {self.early_stop})")
        if self.checkpoint not in ("best", "last"):
            raise UserError(f"--checkpoint must be best or last (got '{self.checkpoint}')")
        if self.refit not in ("train", "train+val"):
            raise UserError(f"--refit must be train or train+val (got '{self.refit}')")
        if self.tune_trials < 1:
            raise UserError(f"--tune-trials must be >= 1: each method gets that many trials (got {self.tune_trials})")
        check_tune(self.tune, self.methods)
        self.baselines = parse_baselines(self.baselines)
        if self.augment not in ("none", "flip", "crop-flip"):
            raise UserError(f"--augment must be none, flip or crop-flip (got '{self.augment}')")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda (got '{self.device}')")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"--precision must be auto, fp32, bf16 or fp16 (got '{self.precision}')")
        for name in self.methods:
            self.method_options.setdefault(name, REGISTRY[name].config_cls())
        if not self.out:
            self.out = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))

    def train_config(self, task=None) -> TrainConfig:
        """The loop's settings for a task. A training sample nested in a larger one (--train-sizes) trains as
        many optimizer steps as the whole sample would (epochs raised, at most SIZED_EPOCHS_CAP times
        --epochs): equal epochs would give 5 images per class a handful of steps and make every curve an
        artefact of the step count."""
        epochs = self.epochs
        whole = (task.splits.get("train") or {}).get("nested_from", 0) if task is not None else 0
        if whole and whole > len(task.train) > 0:
            steps = lambda n: math.ceil(n / self.batch_size)  # noqa: E731 - optimizer steps per epoch
            epochs = min(self.epochs * SIZED_EPOCHS_CAP, math.ceil(self.epochs * steps(whole) / steps(len(task.train))))
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio,
            max_grad_norm=self.max_grad_norm,
            augment=self.augment,
            prefix_cache=self.prefix_cache,
            early_stop=self.early_stop,
            checkpoint=self.checkpoint,
        )

    def data_options(self) -> DataOptions:
        return DataOptions(**{f.name: getattr(self, f.name) for f in fields(DataOptions) if hasattr(self, f.name)})

    def options_for(self, method: str):
        """The method's options, with the run-wide --lr applied when given."""
        opts = self.method_options[method]
        return opts if self.lr is None else replace(opts, lr=self.lr)

    def plan(self) -> list[RunSpec]:
        """One run per seed and method, seed-major (a seed's data sample is drawn once); with the scratch
        reference, full fine-tuning of a randomly initialised copy too."""
        out = []
        for seed in self.seeds:
            for k in self.per_class_sizes():
                if "scratch" in self.baselines:
                    out.append(
                        RunSpec("full", self.options_for_scratch(), seed, SCRATCH_LABEL, scratch=True, per_class=k)
                    )
                out += [RunSpec(m, self.options_for(m), seed, m, per_class=k) for m in self.methods]
        return out

    def per_class_sizes(self) -> list[int | None]:
        """--train-sizes as training images per class, None for the whole sample; [None] without it."""
        return [None if v == "all" else int(v) for v in self.train_sizes] or [None]

    def options_for_scratch(self):
        """Full fine-tuning's options (its budget), for the from-scratch reference."""
        from ..methods import get

        opts = self.method_options.get("full") or get("full").config_cls()
        return opts if self.lr is None else replace(opts, lr=self.lr)

    def fingerprint(self) -> dict:
        """What, besides method options and seed, decides a run's result: a finished run is reused
        only when this matches."""
        # the search's settings decide the options a final run gets, and those are in its method_config
        skip = {
            "methods",
            "seeds",
            "out",
            "quiet",
            "report_to",
            "method_options",
            "lr",
            "tune",
            "tune_trials",
            "protocol",
            "baselines",
            *CLI_ONLY,
            "train_sizes",  # each run records its own size (RunSpec.per_class)
        }
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_dict(self) -> dict[str, Any]:
        """Every option (defaults included) and a section of options per method: what --config reads."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in run_fields() if f.name not in CLI_ONLY}
        for name in self.methods:
            out[name] = self.method_options[name].options()
        return out


MAX_SLUG = 150  # bytes of a run folder's name before '-seed<k>' (file names stop at 255; '.lock' is added)


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method with its options, one seed. label names the configuration in tables."""

    method: str
    options: Any  # the method's MethodConfig
    seed: int
    label: str
    scratch: bool = False  # the model's architecture from random initialisation (the 'scratch' reference)
    per_class: int | None = None  # --train-sizes: this many training images per class; None: the whole sample

    @property
    def name(self) -> str:
        """The run's folder name, e.g. 'lora-seed0', 'lora-r4-lr0.001-seed0' or (--train-sizes) 'lora-n20-seed0';
        a label too long for a file name keeps its first 100 characters and a hash of the whole."""
        slug = self.label.replace(" ", "-").replace("=", "").replace("/", "_").replace(",", "+")
        if len(slug.encode()) > MAX_SLUG:
            digest = hashlib.sha1(slug.encode()).hexdigest()[:12]
            slug = slug.encode()[:100].decode(errors="ignore") + "-" + digest
        return f"{slug}{size_suffix(self.per_class)}-seed{self.seed}"

    @property
    def key(self) -> str:
        """The configuration at its training size: what a search and a report row are about."""
        return self.label + ("" if self.per_class is None else f" @{self.per_class}/class")


def size_suffix(per_class: int | None) -> str:
    return "" if per_class is None else f"-n{per_class}"


def parse_sizes(values: list) -> list[str]:
    """--train-sizes: positive integers (training images per class) and 'all', each once; ascending, 'all' last."""
    items = [str(v).strip().lower() for v in values if str(v).strip()]
    sizes = []
    for v in items:
        if v != "all" and not (v.isdigit() and int(v) > 0):
            raise UserError(
                f"--train-sizes takes training images per class (integers > 0) and 'all', e.g. 5,20,100,all (got '{v}')"
            )
        sizes.append(v if v == "all" else str(int(v)))
    if len(set(sizes)) != len(sizes):
        raise UserError(f"--train-sizes names a size twice ({','.join(items)}); give each once")
    return sorted(sizes, key=lambda v: float("inf") if v == "all" else int(v))


def parse_baselines(names: list[str]) -> list[str]:
    """--baselines: names, '+name' (added to the defaults) or 'none'."""
    names = [n.strip() for n in names if n.strip()]
    if names == ["none"]:
        return []
    out = list(DEFAULT_BASELINES) if names and all(n.startswith("+") for n in names) else []
    for n in names:
        n = n.removeprefix("+")
        if n not in BASELINES:
            raise UserError(f"unknown baseline '{n}'; choose from {', '.join(BASELINES)}, '+scratch' or none")
        if n not in out:
            out.append(n)
    return out


def run_fields() -> list:
    return [f for f in fields(RunConfig) if f.name != "method_options"]
