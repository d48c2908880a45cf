"""Tidy tables of results (peftlab export), reports across folders, and logs that read well: one line per
epoch off a terminal, --log-level, warnings through Python's logging."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import pytest

from peftlab.results import write_json_atomic

from .helpers import make_result, run_args, run_cli


def _folder(root: Path, runs: dict[str, float], seeds=(0, 1)) -> Path:
    for method, acc in runs.items():
        for seed in seeds:
            r = make_result(method, seed, acc + 0.01 * seed)
            write_json_atomic(root / f"{method}-seed{seed}" / "result.json", r)
    return root


@pytest.fixture
def two_folders(tmp_path) -> tuple[Path, Path]:
    return _folder(tmp_path / "small-lr", {"head": 0.6, "lora": 0.8}), _folder(tmp_path / "big-lr", {"lora": 0.7})


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_writes_one_flat_row_per_run_that_pandas_reads(two_folders, tmp_path, capsys, fmt):
    import pandas as pd

    a, b = two_folders
    target = tmp_path / f"runs.{fmt}"
    rc, _, err = run_cli(capsys, "export", str(a), str(b), "--format", fmt, "--out", str(target))
    assert rc == 0, err
    df = {"csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True), "parquet": pd.read_parquet}[fmt](target)
    assert len(df) == 6 and df["source"].tolist() == [str(a)] * 4 + [str(b)] * 2
    assert df["folder"].tolist()[:2] == ["head-seed0", "head-seed1"]
    assert not [c for c in df.columns if not c.replace("_", "").isalnum()]  # flat names: letters, digits, _
    row = df[(df["source"] == str(b)) & (df["seed"] == 1)].iloc[0]
    expected = make_result("lora", 1, 0.71)
    assert row["method"] == "lora" and row["test_accuracy"] == pytest.approx(0.71)
    assert row["params_trainable"] == expected["params"]["trainable"] and row["opt_r"] == 8
    assert row["opt_targets"] == "query,value" and row["val_start_accuracy"] == pytest.approx(0.15)
    assert row["time_train_s"] == pytest.approx(expected["time"]["train_s"]) and row["selection_epoch"] == 2
    assert "test_confusion" not in df.columns and "test_correct" not in df.columns  # kept in result.json
    # head has no r: an empty cell, not a wrong one
    assert pd.isna(df[df["method"] == "head"]["opt_r"]).all()


def test_export_history_has_one_row_per_run_and_epoch(two_folders, capsys):
    a, _ = two_folders
    rc, out, _ = run_cli(capsys, "export", str(a), "--history")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and len(rows) == 4 * 2
    assert [(r["folder"], r["epoch"]) for r in rows[:2]] == [("head-seed0", "1"), ("head-seed0", "2")]
    assert list(rows[0]) == [
        *("source", "folder", "run_name", "kind", "method", "label", "seed", "status", "error", "model", "dataset"),
        *("epoch", "train_loss", "val_accuracy", "val_loss", "seconds"),
    ]
    rc, out, _ = run_cli(capsys, "export", str(a), "--format", "jsonl")
    assert [json.loads(line)["test_accuracy"] for line in out.splitlines()] == pytest.approx([0.6, 0.61, 0.8, 0.81])


def test_export_errors_are_one_line(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "export", str(tmp_path / "nowhere"))
    assert rc == 2 and "is not a folder" in err and err.count("\n") == 1
    rc, _, err = run_cli(capsys, "export", str(tmp_path), "--format", "parquet")
    assert rc == 2 and "pass --out FILE.parquet" in err


def test_report_compares_several_folders(two_folders, tmp_path, capsys):
    a, b = two_folders
    rc, out, err = run_cli(capsys, "report", str(a), str(b))
    assert rc == 0, err
    rows = [line.split()[0] for line in out.splitlines() if line.startswith(("small-lr/", "big-lr/"))]
    assert rows[:3] == ["small-lr/head", "big-lr/lora", "small-lr/lora"]  # the table: methods in registry order
    assert "pass --out DIR" in out and not (a / "report.md").exists() and not (b / "report.md").exists()
    rc, out, _ = run_cli(capsys, "report", str(a), str(b), "--out", str(tmp_path / "both"))
    assert rc == 0 and "big-lr/lora" in (tmp_path / "both" / "report.md").read_text()
    assert "small-lr/lora vs big-lr/lora" in out  # the two learning rates' runs are compared, seed by seed


def test_logs_read_well_off_a_terminal(tiny_vit, image_folder, tmp_path, capsys):
    """Output that is not a terminal gets one line per epoch and no progress bar; --log-level warning keeps
    the warnings and drops the rest; a library user gets the warnings through logging."""
    args = run_args(tiny_vit, image_folder, tmp_path / "a", "--methods", "head", "--min-per-class", "9", epochs=2)
    args.remove("--quiet")
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0 and "\r" not in out + err
    epochs = [line for line in out.splitlines() if line.startswith("head seed 0 epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("head seed 0 epoch 1/2: train loss ")
    assert "validation accuracy" in epochs[0] and "img/s" in epochs[0]
    assert "WARNING class coverage:" in out  # fewer than 9 validation images of a class
    rc, out, _ = run_cli(
        capsys, *[a if a != str(tmp_path / "a") else str(tmp_path / "b") for a in args], "--log-level", "warning"
    )
    assert rc == 0 and out.startswith("WARNING class coverage:") and "epoch" not in out and "method" not in out

    from peftlab import build_config, run

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("peftlab")
    logger.addHandler(handler)
    try:
        cfg = build_config(
            {"model": str(tiny_vit), "dataset": str(image_folder), "methods": "head", "out": str(tmp_path / "c")}
            | {"epochs": 1, "baselines": "none", "train_size": 0, "test_size": 0, "min_per_class": 9, "quiet": True}
        )
        run(cfg, log=lambda s: None)
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings and warnings[0].startswith("class coverage:")
