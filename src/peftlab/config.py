"""Run configuration: dataclasses checked in __post_init__, filled from defaults, a YAML/JSON file
(--config) and the command line, in that order. The CLI's options are generated from these fields.

This module imports neither torch nor the method registry at import time (the report layer reads the
fields' help texts); the registry is imported where a method name or option is checked.
"""

from __future__ import annotations

import json
import subprocess
import time
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UserError

BUNDLED_NAME = "peftlab-vit-tiny"  # the model peftlab ships (src/peftlab/bundled), the default --model
DEFAULT_DATASET = "fashion-mnist:5-9"
DEFAULT_METHODS = ["head", "last", "lora", "full"]
META_KEY = "meta"  # config.yaml's section of facts about the run (version, commit); not an option


def field_type(cls, f) -> type:
    """The plain type of a dataclass field ('int | None' -> int, 'list[int]' -> list)."""
    t = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    t = args[0] if args and typing.get_origin(t) is not list else t
    return typing.get_origin(t) or t


def item_type(cls, f) -> type:
    """The element type of a list field ('list[int]' -> int)."""
    return typing.get_args(typing.get_type_hints(cls)[f.name])[0]


def _scalar(v, typ: type):
    """One value from YAML/JSON or the command line to typ; ValueError when it is not one."""
    if isinstance(v, typ) and not (typ is int and isinstance(v, bool)):
        return v
    if typ is bool:
        if str(v).lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError
        return str(v).lower() in ("true", "yes", "1")
    if typ is int:
        num = float(v)
        if not num.is_integer():
            raise ValueError
        return int(num)
    if typ is float:
        return float(v)
    if typ is str:
        return str(v)
    raise ValueError


def coerce(cls, values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Values from YAML/JSON to the fields' types: YAML reads '1e-3' as a string, JSON 4.0 as a float;
    a list field takes a list or a comma-separated string."""
    out = dict(values)
    for f in fields(cls):
        if f.name not in out or out[f.name] is None:
            continue
        v, typ = out[f.name], field_type(cls, f)
        try:
            if typ is list:
                items = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v
                if not isinstance(items, (list, tuple)):
                    items = [items]
                out[f.name] = [_scalar(x, item_type(cls, f)) for x in items]
            else:
                out[f.name] = _scalar(v, typ)
        except (TypeError, ValueError):
            what = item_type(cls, f) if typ is list else typ
            rule = ("comma-separated " if typ is list else "") + {int: "integer", float: "number"}.get(
                what, what.__name__
            )
            rule = rule + "s" if typ is list else ("an " if rule[0] in "aeiou" else "a ") + rule
            raise UserError(f"{owner}{f.name.replace('_', '-')} must be {rule} (got {v!r})") from None
    return out


def _positive(owner: str, **values) -> None:
    for name, v in values.items():
        if v is not None and not v > 0:
            raise UserError(f"{owner}{name.replace('_', '-')} must be > 0 (got {v})")


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


@dataclass
class DataOptions:
    """What data a run reads and how it samples and checks it (data.task.load_task)."""

    dataset: str = DEFAULT_DATASET
    train_size: int = 0
    eval_size: int = 0
    image_column: str | None = None
    label_column: str | None = None
    train_split: str | None = None
    eval_split: str | None = None
    holdout: float = 0.2  # share of the training split held out for evaluation when there is no eval split
    min_per_class: int = 5
    strict_coverage: bool = False
    max_bad_fraction: float = 0.1


@dataclass
class RunConfig:
    model: str = field(
        default=BUNDLED_NAME, metadata={"help": f"hub id, local model folder, or '{BUNDLED_NAME}' (bundled, offline)"}
    )
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "fashion-mnist:5-9|0-4|all, a hub dataset id, an image folder or a save_to_disk folder"},
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
    method_options: dict[str, Any] = field(default_factory=dict)  # method name -> its MethodConfig

    def __post_init__(self):
        from .methods import REGISTRY, parse_methods

        self.methods = parse_methods(self.methods)
        seeds = [self.seeds] if isinstance(self.seeds, (int, str)) else list(self.seeds)
        try:
            seeds = [
                int(x) for s in seeds for x in (str(s).split(",") if isinstance(s, str) else [s]) if str(x).strip()
            ]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got '{self.seeds}')") from None
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            shown = ",".join(map(str, seeds))
            raise UserError(f"--seeds must be distinct integers >= 0, e.g. 0,1,2 (got '{shown}')")
        self.seeds = seeds
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
        for name in self.methods:
            self.method_options.setdefault(name, REGISTRY[name].config_cls())
        if not self.out:
            self.out = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))

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

    def data_options(self) -> DataOptions:
        return DataOptions(**{f.name: getattr(self, f.name) for f in fields(DataOptions) if hasattr(self, f.name)})

    def options_for(self, method: str):
        """The method's options, with the run-wide --lr applied when given."""
        opts = self.method_options[method]
        return opts if self.lr is None else replace(opts, lr=self.lr)

    def plan(self) -> list[RunSpec]:
        """One run per seed and method, seed-major (a seed's data sample is drawn once)."""
        return [RunSpec(m, self.options_for(m), seed, m) for seed in self.seeds for m in self.methods]

    def fingerprint(self) -> dict:
        """What, besides method options and seed, decides a run's result: a finished run is reused
        only when this matches."""
        skip = {"methods", "seeds", "out", "quiet", "method_options", "lr"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_dict(self) -> dict[str, Any]:
        """Every option (defaults included) and a section of options per method: what --config reads."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in run_fields()}
        for name in self.methods:
            out[name] = self.method_options[name].options()
        return out


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method with its options, one seed. label names the configuration in tables."""

    method: str
    options: Any  # the method's MethodConfig
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
    """A YAML or JSON config: RunConfig keys at the top, method options in a section per method; a
    'meta' section (written into config.yaml: version, commit) is not an option and is dropped."""
    from .methods import REGISTRY

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
    except Exception as e:  # noqa: BLE001 - yaml and json raise different types; both mean "not parseable"
        raise UserError(f"cannot parse config file '{path}': {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of options")
    data.pop(META_KEY, None)
    for k, v in data.items():  # a method's section must be a mapping, e.g. lora: {r: 4}
        if str(k) in REGISTRY and v is not None and not isinstance(v, dict):
            raise UserError(f"config file '{path}': '{k}' must be a mapping of {k} options (e.g. {k}: {{lr: 0.001}})")
    return data


def method_config(name: str, opts: dict[str, Any] | None):
    """{option: value} for one method -> its checked config dataclass."""
    from .methods import get

    cls = get(name).config_cls
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
    from .methods import REGISTRY

    values = {str(k).replace("-", "_") if str(k) not in REGISTRY else str(k): v for k, v in values.items()}
    known = {f.name for f in run_fields()}
    sections = {k: values.pop(k) for k in list(values) if k in REGISTRY}
    if "grid" in values:
        raise UserError("'grid' is a sweep file's key; run that file with 'peftlab sweep FILE'")
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(unknown)}; see 'peftlab run --help'")
    options = {name: method_config(name, opts) for name, opts in sections.items()}
    try:
        return RunConfig(**coerce(RunConfig, values, "--"), method_options=options)
    except TypeError as e:
        raise UserError(f"bad option value: {e}") from e


def git_commit() -> str | None:
    """The commit of the peftlab checkout this code runs from, '+dirty' when it has uncommitted changes;
    None for an installed wheel."""
    here = str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    if head.returncode or len(commit) != 40:
        return None
    return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def config_yaml(values: dict[str, Any], command: str = "run") -> str:
    """The effective configuration as YAML that 'peftlab <command> --config FILE' (run) or 'peftlab sweep
    FILE' reads back; its 'meta' section records the peftlab version and git commit."""
    import yaml

    from . import __version__

    meta = {"peftlab_version": __version__, "git_commit": git_commit(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rerun = "peftlab run --config FILE" if command == "run" else "peftlab sweep FILE"
    header = f"# The effective configuration of this folder's runs, every option included. Rerun: {rerun}\n"
    body = yaml.safe_dump({**values, META_KEY: meta}, sort_keys=False, allow_unicode=True)
    return header + body
