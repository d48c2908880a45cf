"""Run configuration: dataclasses checked in __post_init__, filled from defaults, a YAML/JSON file
(--config) and the command line, in that order. The CLI's options are generated from these fields."""

from __future__ import annotations

import json
import time
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .data import DEFAULT_DATASET
from .errors import UserError
from .methods import DEFAULT_METHODS, REGISTRY, MethodConfig, parse_methods
from .models import BUNDLED_NAME
from .train import TrainConfig


def field_type(cls, f) -> type:
    """The plain type of a dataclass field ('int | None' -> int)."""
    t = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


def coerce(cls, values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Values from YAML/JSON to the fields' types: YAML reads '1e-3' as a string, JSON 4.0 as a float."""
    out = dict(values)
    for f in fields(cls):
        if f.name not in out:
            continue
        v, typ = out[f.name], field_type(cls, f)
        if v is None or isinstance(v, typ) and not (typ is int and isinstance(v, bool)):
            continue
        try:
            if typ is bool:
                if str(v).lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError
                out[f.name] = str(v).lower() in ("true", "yes", "1")
            elif typ is int:
                num = float(v)
                if not num.is_integer():
                    raise ValueError
                out[f.name] = int(num)
            elif typ is float:
                out[f.name] = float(v)
            elif typ is str:
                out[f.name] = str(v)
        except (TypeError, ValueError):
            raise UserError(
                f"{owner}{f.name.replace('_', '-')} must be {'an integer' if typ is int else 'a ' + typ.__name__}"
                f" (got {v!r})"
            ) from None
    return out


def _positive(owner: str, **values) -> None:
    for name, v in values.items():
        if v is not None and not v > 0:
            raise UserError(f"{owner}{name.replace('_', '-')} must be > 0 (got {v})")


@dataclass
class RunConfig:
    model: str = field(
        default=BUNDLED_NAME, metadata={"help": f"hub id, local model folder, or '{BUNDLED_NAME}' (bundled, offline)"}
    )
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "fashion-mnist:5-9|0-4|all, a hub dataset id, an image folder or a save_to_disk folder"},
    )
    methods: str = field(
        default=",".join(DEFAULT_METHODS),
        metadata={"help": "comma-separated methods, or 'all' (see 'peftlab methods')"},
    )
    seeds: str = field(
        default="0",
        metadata={"help": "comma-separated seeds (sampling, head init, data order); each method runs once per seed"},
    )
    out: str = field(default="", metadata={"help": "results folder (default: runs/<date-time>)"})
    train_size: int = field(default=3000, metadata={"help": "stratified, seeded sample of the training split; 0 = all"})
    eval_size: int = field(
        default=1000, metadata={"help": "stratified, seeded sample of the evaluation split; 0 = all"}
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
    eval_split: str | None = field(
        default=None, metadata={"help": "evaluation split (default: validation/test; else 20%% of train held out)"}
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
    method_options: dict[str, MethodConfig] = field(default_factory=dict)

    def __post_init__(self):
        self.methods = ",".join(parse_methods(self.methods))
        try:
            seeds = [int(x) for x in str(self.seeds).split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got '{self.seeds}')") from None
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise UserError(f"--seeds must be distinct integers >= 0, e.g. 0,1,2 (got '{self.seeds}')")
        self.seeds = ",".join(map(str, seeds))
        _positive("--", epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        if self.train_size < 0 or self.eval_size < 0:
            raise UserError("--train-size and --eval-size must be >= 0 (0 = all)")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1 or self.max_grad_norm < 0:
            raise UserError("--weight-decay and --max-grad-norm must be >= 0, --warmup-ratio in [0, 1)")
        if not 0 <= self.max_bad_fraction <= 1:
            raise UserError(f"--max-bad-fraction must be between 0 and 1 (got {self.max_bad_fraction:g})")
        if self.augment not in ("none", "flip", "crop-flip"):
            raise UserError(f"--augment must be none, flip or crop-flip (got '{self.augment}')")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda (got '{self.device}')")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"--precision must be auto, fp32, bf16 or fp16 (got '{self.precision}')")
        for name in self.method_names:
            self.method_options.setdefault(name, REGISTRY[name].config_cls())
        if not self.out:
            self.out = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))

    @property
    def method_names(self) -> list[str]:
        return self.methods.split(",")

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            warmup_ratio=self.warmup_ratio,
            max_grad_norm=self.max_grad_norm,
            augment=self.augment,
            prefix_cache=self.prefix_cache,
        )

    @property
    def seed_list(self) -> list[int]:
        return [int(x) for x in self.seeds.split(",")]

    def options_for(self, method: str) -> MethodConfig:
        """The method's options, with the run-wide --lr applied when given."""
        opts = self.method_options[method]
        return opts if self.lr is None else replace(opts, lr=self.lr)

    def plan(self) -> list[RunSpec]:
        """One run per seed and method, seed-major (a seed's data sample is drawn once)."""
        return [RunSpec(m, self.options_for(m), seed, m) for seed in self.seed_list for m in self.method_names]

    def fingerprint(self) -> dict:
        """What, besides method options and seed, decides a run's result: a finished run is reused
        only when this matches."""
        skip = {"methods", "seeds", "out", "quiet", "method_options", "lr"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method with its options, one seed. label names the configuration in tables."""

    method: str
    options: MethodConfig
    seed: int
    label: str

    @property
    def name(self) -> str:
        """The run's folder name, e.g. 'lora-seed0' or 'lora-r4-lr0.001-seed0'."""
        slug = self.label.replace(" ", "-").replace("=", "").replace("/", "_").replace(",", "+")
        return f"{slug}-seed{self.seed}"


def run_fields() -> list:
    return [f for f in fields(RunConfig) if f.name != "method_options"]


def read_file(path: str) -> dict[str, Any]:
    """A YAML or JSON config: RunConfig keys at the top, method options in a section per method."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{path}' does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # yaml and json raise different types; both mean "not parseable"
        raise UserError(f"cannot parse config file '{path}': {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of options")
    for k, v in data.items():  # a method's section must be a mapping, e.g. lora: {r: 4}
        if str(k) in REGISTRY and v is not None and not isinstance(v, dict):
            raise UserError(f"config file '{path}': '{k}' must be a mapping of {k} options (e.g. {k}: {{lr: 0.001}})")
    return data


def method_config(name: str, opts: dict[str, Any] | None) -> MethodConfig:
    """{option: value} for one method -> its checked config dataclass."""
    cls = REGISTRY[name].config_cls
    allowed = {f.name for f in fields(cls)}
    if opts is not None and not isinstance(opts, dict):
        raise UserError(f"{name} options must be a mapping of option: value (got {opts!r})")
    opts = {k.replace("-", "_"): v for k, v in (opts or {}).items()}
    bad = sorted(set(opts) - allowed)
    if bad:
        raise UserError(f"unknown {name} option(s): {', '.join(bad)}; {name} takes: {', '.join(sorted(allowed))}")
    try:
        return cls(**coerce(cls, opts, f"{name}."))
    except TypeError as e:
        raise UserError(f"bad {name} options: {e}") from e


def build(values: dict[str, Any]) -> RunConfig:
    """Flat run options plus {method: {option: value}} sections -> a checked RunConfig."""
    values = {k.replace("-", "_"): v for k, v in values.items()}
    known = {f.name for f in run_fields()}
    sections = {k: values.pop(k) for k in list(values) if k in REGISTRY}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(unknown)}; see 'peftlab run --help'")
    for key in ("methods", "seeds"):
        if isinstance(values.get(key), (list, tuple, int)):
            v = values[key]
            values[key] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    options = {name: method_config(name, opts) for name, opts in sections.items()}
    try:
        return RunConfig(**coerce(RunConfig, values, "--"), method_options=options)
    except TypeError as e:
        raise UserError(f"bad option value: {e}") from e
