"""Tidy tables of result files, for pandas, polars and spreadsheets: one row per run (or, with history, one
row per run and epoch), flat column names, written as CSV, JSON Lines or Parquet (Parquet through pyarrow,
which `datasets` already installs). Torch-free.

Columns: where the run is (source, folder) and what it is (run_name, kind, method, label, seed, status,
error, model, dataset, created), then each section of result.json flattened with its name as a prefix:
method options as opt_<name>, params_*, val_* and test_* (metrics; per-class scores, the confusion matrix and
the per-image record stay in result.json), selection_*, time_*, throughput_*, memory_*, size_*, data_* (the
sizes and the test split), train_*, inference_* (and inference_base_*), env_* (device, package versions).
A run's history rows carry the identity columns and the epoch's own: epoch, train_loss, val_accuracy,
val_loss, lr, seconds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import UserError
from .io import write_bytes_atomic
from .schema import Result, load_results

FORMATS = ("csv", "jsonl", "parquet")
IDENTITY = ("source", "folder", "run_name", "kind", "method", "label", "seed", "status", "error", "model", "dataset")
# sections of result.json that become columns, each with its prefix; what is left out is kept in result.json
SECTIONS = {
    "params": "params",
    "selection": "selection",
    "time": "time",
    "throughput": "throughput",
    "memory": "memory",
    "size": "size",
    "train": "train",
    "inference": "inference",
}
# per class, per image and per candidate (a reference's validation score of each C or k) stay in result.json
SKIP = {"test": {"per_class_accuracy", "confusion", "correct", "scores"}, "val": {"scores"}}
DATA_KEYS = ("train_examples", "val_examples", "test_examples", "test_split", "channels", "storage")


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flatten(prefix: str, d: dict, out: dict, skip: set = frozenset()) -> None:
    """Scalars of d (nested dicts joined with '_') as out[prefix_key]; lists and skipped keys left out."""
    for k, v in d.items():
        if k in skip:
            continue
        name = f"{prefix}_{k}"
        if isinstance(v, dict):
            _flatten(name, v, out)
        elif _scalar(v):
            out[name] = v


def run_row(r: Result, source: str = "") -> dict:
    """One result as one flat row."""
    path = Path(r.get("_path", ""))
    row = {
        "source": source,
        "folder": str(path.relative_to(source)) if source and path.is_relative_to(source) else str(path),
        **{k: r.get(k) for k in IDENTITY[2:]},
        "created": r.get("created"),
    }
    for k, v in (r.get("method_config") or {}).items():
        row[f"opt_{k}"] = ",".join(map(str, v)) if isinstance(v, list) else v
    metrics = r.get("metrics") or {}
    for split in ("val", "test"):
        _flatten(split, metrics.get(split) or {}, row, SKIP.get(split, set()))
    for section, prefix in SECTIONS.items():
        value = r.get(section)
        if isinstance(value, dict):
            _flatten(prefix, value, row)
    data = r.get("data") or {}
    row |= {f"data_{k}": data[k] for k in DATA_KEYS if k in data}
    env = r.get("env") or {}
    row |= {f"env_{k}": env[k] for k in ("device", "device_name", "python") if k in env}
    row |= {f"env_{k}": v for k, v in (env.get("packages") or {}).items()}
    return row


def history_rows(r: Result, source: str = "") -> list[dict]:
    """One row per epoch of a run: its identity columns and the epoch's record."""
    ident = {k: v for k, v in run_row(r, source).items() if k in IDENTITY}
    return [ident | {k: v for k, v in h.items() if _scalar(v)} for h in r.get("history") or []]


def table(folders: list[str | Path], history: bool = False) -> list[dict]:
    """The rows of every result.json under each folder (in path order), with one set of columns: the union of
    all rows' keys in first-seen order, missing values None."""
    rows = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise UserError(f"'{folder}' is not a folder; pass results folders written by 'peftlab run'")
        results = load_results(folder)
        if not results:
            raise UserError(f"no result.json files under '{folder}'")
        for r in results:
            rows += history_rows(r, str(folder)) if history else [run_row(r, str(folder))]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [{c: row.get(c) for c in columns} for row in rows]


def _column_type(values: list):
    """The Arrow type of a column: bool, int64, float64 or string (a mixed column is written as strings)."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def to_bytes(rows: list[dict], fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    columns = list(rows[0]) if rows else []
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().encode()
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("--format parquet needs pyarrow: pip install pyarrow (or export csv or jsonl)") from None
    arrays = {}
    for c in columns:
        values = [r[c] for r in rows]
        typ = _column_type(values)
        if typ == pa.string():
            values = [None if v is None else str(v) for v in values]
        elif typ == pa.float64():
            values = [None if v is None else float(v) for v in values]
        arrays[c] = pa.array(values, type=typ)
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays), buf)
    return buf.getvalue()


def export(folders: list[str | Path], fmt: str, history: bool = False, out: str | Path | None = None) -> bytes | None:
    """`peftlab export`: the table's bytes, written to out (then None) or returned (CSV and JSON Lines only)."""
    if fmt == "parquet" and not out:
        raise UserError("--format parquet writes a binary file: pass --out FILE.parquet")
    data = to_bytes(table(folders, history=history), fmt)
    if out is None:
        return data
    write_bytes_atomic(Path(out), data)
    return None
