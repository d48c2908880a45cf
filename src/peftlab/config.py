"""Run configuration: dataclasses checked in __post_init__, filled from defaults, a YAML/JSON file
(--config) and the command line, in that order. The CLI's options are generated from these fields."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .data import DEFAULT_DATASET
from .errors import UserError
from .methods import DEFAULT_METHODS, REGISTRY, MethodConfig, parse_methods
from .models import BUNDLED_NAME
from .train import TrainConfig


def _positive(owner: str, **values) -> None:
    for name, v in values.items():
        if v is not None and not v > 0:
            raise UserError(f"{owner}{name.replace('_', '-')} must be > 0 (got {v})")


@dataclass
class RunConfig:
    model: str = field(default=BUNDLED_NAME, metadata={
        "help": f"hub id, local model folder, or '{BUNDLED_NAME}' (bundled, offline)"})
    dataset: str = field(default=DEFAULT_DATASET, metadata={
        "help": "fashion-mnist:5-9|0-4|all, a hub dataset id, an image folder or a save_to_disk folder"})
    methods: str = field(default=",".join(DEFAULT_METHODS), metadata={
        "help": "comma-separated methods, or 'all' (see 'peftlab methods')"})
    seed: int = field(default=0, metadata={"help": "seed for sampling, head init and shuffling"})
    out: str = field(default="", metadata={"help": "results folder (default: runs/<date-time>)"})
    train_size: int = field(default=3000, metadata={
        "help": "stratified, seeded sample of the training split; 0 = all"})
    eval_size: int = field(default=1000, metadata={
        "help": "stratified, seeded sample of the evaluation split; 0 = all"})
    epochs: int = field(default=3, metadata={"help": "passes over the training sample"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float | None = field(default=None, metadata={
        "help": "learning rate for every method (default: each method's own, see --<method>-lr)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps of linear warmup before cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 = off"})
    image_column: str | None = field(default=None, metadata={"help": "image column (default: detected)"})
    label_column: str | None = field(default=None, metadata={"help": "label column (default: detected)"})
    train_split: str | None = field(default=None, metadata={"help": "training split name (default: train)"})
    eval_split: str | None = field(default=None, metadata={
        "help": "evaluation split (default: validation/test; else 20%% of train held out)"})
    min_per_class: int = field(default=5, metadata={"help": "warn when a class has fewer examples in a split"})
    strict_coverage: bool = field(default=False, metadata={"help": "make class-coverage warnings errors"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 on GPUs that have it), fp32, bf16, fp16"})
    quiet: bool = field(default=False, metadata={"help": "no progress output"})
    method_options: dict[str, MethodConfig] = field(default_factory=dict)

    def __post_init__(self):
        self.methods = ",".join(parse_methods(self.methods))
        _positive("--", epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        if self.train_size < 0 or self.eval_size < 0:
            raise UserError("--train-size and --eval-size must be >= 0 (0 = all)")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1 or self.max_grad_norm < 0:
            raise UserError("--weight-decay and --max-grad-norm must be >= 0, --warmup-ratio in [0, 1)")
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
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, weight_decay=self.weight_decay,
                           warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm)

    def lr_for(self, method: str) -> float:
        return self.lr if self.lr is not None else self.method_options[method].lr


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
        return cls(**opts)
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
    if isinstance(values.get("methods"), list):
        values["methods"] = ",".join(values["methods"])
    options = {name: method_config(name, opts) for name, opts in sections.items()}
    try:
        return RunConfig(**values, method_options=options)
    except TypeError as e:
        raise UserError(f"bad option value: {e}") from e
