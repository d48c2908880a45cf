"""What a run writes: result.json's typed shape, its schema version and status, and the one loader that
reads every version. Pure Python (no torch): the report layer reads results through here.

Version history:
  1 (no schema_version key): peftlab 0.1.
  2: schema_version, method_info (the method's description, paper, option meanings and order, so that
     reports need no method registry).
  3: three splits. metrics.val (the validation split: what chose the checkpoint, the options) and
     metrics.test (scored once); selection (what was chosen on what, how often test was scored); tuning
     (a search's record); data.val_examples, test_examples, test_split, splits, identities; history's
     val_accuracy / val_loss. Versions 1-2 scored one split ('eval') every epoch and reported it: they are
     read as test metrics with that caveat in selection.checkpoint.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict

from ..errors import UserError

SCHEMA_VERSION = 3


class Status(StrEnum):
    """How a run ended. A rerun keeps FINAL ones and tries the others again (they may be transient)."""

    OK = "ok"
    DIVERGED = "diverged"  # the loss became NaN or infinite
    OOM = "oom"  # out of GPU memory
    FAILED = "failed"  # any other error; the traceback is in error.log
    UNSUPPORTED = "unsupported"  # the method cannot apply to this model (error says why); the others ran


FINAL = (Status.OK, Status.DIVERGED)  # unsupported is decided again on each run (peftlab may have learnt it)


class Params(TypedDict, total=False):
    trainable: int
    total: int  # base + added, each module once
    base: int  # the model with its new head
    added: int  # parameters the method adds beside the base
    trainable_pct: float  # of base
    peft_all_params: int  # PEFT's own figure (modules_to_save counted twice)
    kind: str  # "theory", "structural" or "not derived": where the derived counts come from
    theory_trainable: int
    theory_total: int
    theory_match: bool
    structural_trainable: int
    structural_total: int
    structural_match: bool
    mismatches: list[dict]


class SplitMetrics(TypedDict, total=False):
    accuracy: float
    top5_accuracy: float | None  # only with more than 5 classes
    macro_f1: float
    loss: float
    examples: int
    start_accuracy: float  # validation: before training (the new head untrained)
    chance_accuracy: float  # test: always predicting its most frequent class
    per_class_accuracy: dict[str, float | None]  # test
    confusion: list[list[int]]  # test: rows true class, columns predicted


class Metrics(TypedDict, total=False):
    val: SplitMetrics  # the selected checkpoint on the validation split ({} when validation was trained on)
    test: SplitMetrics  # scored once, with the selected weights


class Selection(TypedDict, total=False):
    options: str  # "as given ..." or "chosen by a search on the validation split"
    checkpoint: str  # what chose the weights tested: "best validation accuracy", "last epoch (...)"
    epoch: int  # the epoch whose weights were tested
    epochs_trained: int
    stopped_early_after: int | None
    refit: str  # train or train+val
    test_evaluations: int  # how many times the test split was scored: 1


class Epoch(TypedDict, total=False):
    epoch: int
    train_loss: float
    val_accuracy: float
    val_loss: float
    seconds: float
    lr: float


class Times(TypedDict, total=False):
    train_s: float  # epochs plus building a prefix cache
    eval_s: float
    total_s: float  # model loading to saved adapter and measured inference cost
    data_s: float  # reading and decoding the data for this run (0 when reused)


class Throughput(TypedDict, total=False):
    train_img_s: float
    steps: int
    processes: int
    train_flops_per_image: float
    achieved_tflops: float
    mfu: float | None


class InferenceCost(TypedDict, total=False):
    params: int  # parameters of the model, each module once
    flops_per_image: float  # torch's flop counter, one forward in eval mode
    img_s: float  # measured: one batch over the median time of its forward, no gradients, the run's precision


class Inference(InferenceCost, total=False):
    """The trained model as it would be deployed, beside the base model (pretrained, new head, unadapted)."""

    deployed: str  # "merged" (folded into the base weights: the method allows it) or "unmerged"
    batch: int  # images per timed forward
    base: InferenceCost


class Memory(TypedDict):
    peak_bytes: int
    kind: str  # "cuda_max_allocated" or "process_peak_rss"


class Size(TypedDict):
    adapter_bytes: int
    adapter_path: str


class DataInfo(TypedDict, total=False):
    label_names: list[str]
    train_examples: int
    val_examples: int
    test_examples: int
    test_split: str
    splits: dict  # per role: source split, how it was made, size; "check": disjointness and duplicates
    identities: str  # the file beside result.json with every image's identity and the test predictions
    notes: list[str]
    skipped: dict
    storage: str
    image_size: list[int]
    geometry: dict  # the image processor's resize and crop steps, filter, channel order (older results: absent)
    channels: int
    normalization: dict


class Result(TypedDict, total=False):
    """One run's result.json."""

    schema_version: int
    status: str  # a Status value
    error: str  # failed runs: "<type>: <first line>"
    method: str
    label: str  # the configuration's name in tables, e.g. "lora r=4"
    method_config: dict[str, Any]
    method_info: dict[str, Any]  # description, paper, options (their meanings), order
    model: str
    dataset: str
    seed: int
    run_name: str
    config: dict[str, Any]  # everything that decides the result: a finished run is reused only on a match
    created: str
    params: Params
    metrics: Metrics
    selection: Selection
    tuning: dict | None  # the search that chose the options: space, budget, trials, choice
    history: list[Epoch]
    time: Times
    throughput: Throughput
    inference: Inference  # what the model costs at inference (results from before it was measured lack it)
    memory: Memory
    size: Size
    coverage: dict
    data: DataInfo
    train: dict[str, Any]
    env: dict[str, Any]
    _path: str  # not in the file: the run folder it was read from


REQUIRED = ("status", "method", "seed")  # in every result, finished or not
REQUIRED_OK = ("params", "metrics", "time", "throughput", "memory", "size", "data", "train", "env")


def test_metrics(r: Result) -> SplitMetrics:
    """The test split's metrics of a finished run: what tables and findings report."""
    return r["metrics"]["test"]


def val_metrics(r: Result) -> SplitMetrics:
    """The validation metrics of the selected checkpoint ({} when validation was trained on)."""
    return r["metrics"].get("val") or {}


def upgrade(data: dict) -> Result:
    """A result of any earlier version -> the current shape (nothing is lost; added keys get neutral values)."""
    version = data.get("schema_version", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(f"written by a newer peftlab (schema {version}; this one reads up to {SCHEMA_VERSION})")
    if version < 2:
        data.setdefault("method_info", {})
    if version < 3 and "metrics" in data:  # one split ('eval') scored every epoch and reported: call it test
        m, d = data["metrics"], data.get("data", {})
        data["metrics"] = {
            "val": {},
            "test": {
                "accuracy": m.get("accuracy"),
                "top5_accuracy": m.get("top5_accuracy"),
                "macro_f1": m.get("macro_f1"),
                "loss": m.get("eval_loss"),
                "examples": m.get("evaluated_examples", d.get("eval_examples")),
                "chance_accuracy": m.get("chance_accuracy"),
                "per_class_accuracy": m.get("per_class_accuracy", {}),
                "confusion": m.get("confusion", []),
            },
        }
        epochs = len(data.get("history", []))
        data["selection"] = {
            "options": "as given (defaults or options)",
            "checkpoint": "last epoch (written before peftlab 0.2: no validation split; its one evaluation split, "
            "here reported as test, was also scored every epoch)",
            "epoch": epochs,
            "epochs_trained": epochs,
            "test_evaluations": epochs + 1,
        }
        data.setdefault("tuning", None)
        if d:
            d.setdefault("test_examples", d.get("eval_examples"))
            d.setdefault("test_split", d.get("eval_split"))
            d.setdefault("val_examples", 0)
    data["schema_version"] = SCHEMA_VERSION
    return data


def is_ok(r: Result) -> bool:
    return r.get("status", Status.OK.value) == Status.OK.value


def load_result(path: str | Path) -> Result:
    """One result.json, upgraded to the current schema; a damaged file is a one-line UserError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise UserError(
            f"cannot read {path} ({why}); it is not a complete result file: delete its run folder "
            "and rerun to redo that run"
        ) from e
    try:
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        missing = [
            k for k in REQUIRED + (REQUIRED_OK if data.get("status") == Status.OK.value else ()) if k not in data
        ]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        result = upgrade(data)
    except ValueError as e:
        raise UserError(
            f"{path} is not a peftlab result ({e}); delete its run folder and rerun to redo that run"
        ) from e
    result["_path"] = str(path.parent)
    return result


def load_results(root: str | Path) -> list[Result]:
    """Every result.json under root, in path order."""
    return [load_result(p) for p in sorted(Path(root).rglob("result.json"))]
