"""One run across two processes (torchrun, gloo on CPU) and a sweep as Ray tasks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftlab import cli

from .conftest import read_json
from .helpers import run_args as _run_args


def run_args(model: Path, dataset: Path, out: Path, *extra: str) -> list[str]:
    # 20 training images: batches of 8, 8 and 4 split evenly over 2 processes (an uneven one would repeat one)
    return _run_args(model, dataset, out, "--methods", "head,full", "--val-size", "4", *extra)


def test_two_processes_match_one(tiny_vit, image_folder, tmp_path):
    """DDP on 2 CPU processes: the same global batches, so the same result as one process; every eval
    sample counted once (12 test images: uneven shards are padded and the repeats dropped)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "peftlab",
            *run_args(tiny_vit, image_folder, two),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli.main(run_args(tiny_vit, image_folder, tmp_path / "one")) == 0
    for method in ("head", "full"):
        assert sorted(p.name for p in two.glob("*/result.json")) == ["result.json"] * 2  # written once each
        a, b = (
            read_json(tmp_path / "one" / f"{method}-seed0" / "result.json"),
            read_json(two / f"{method}-seed0" / "result.json"),
        )
        assert b["throughput"]["processes"] == 2 and a["throughput"]["processes"] == 1
        assert b["metrics"]["test"]["examples"] == b["data"]["test_examples"] == 12
        assert b["metrics"]["val"]["examples"] == b["data"]["val_examples"] == 4
        assert b["metrics"]["val"]["start_accuracy"] == a["metrics"]["val"]["start_accuracy"]
        assert b["metrics"]["test"]["accuracy"] == pytest.approx(a["metrics"]["test"]["accuracy"], abs=1 / 12 + 1e-9)
        assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"], rel=1e-3)


def test_batch_must_split_evenly_across_processes(tiny_vit, image_folder, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "--master_port",
            "29534",
            "-m",
            "peftlab",
            *run_args(tiny_vit, image_folder, tmp_path / "o"),
            "--batch-size",
            "7",
        ],
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("peftlab: error:")]
    assert ours and "must be a multiple of the 2 processes" in ours[0]
    assert "peftlab/train.py" not in proc.stderr  # a message, not a traceback (torchrun adds its own summary)


def test_ray_sweep_completes_and_a_rerun_skips_everything(tiny_vit, image_folder, tmp_path, capsys):
    pytest.importorskip("ray")
    import ray

    out = tmp_path / "sweep"
    f = tmp_path / "s.json"
    f.write_text(
        json.dumps(
            {
                "model": str(tiny_vit),
                "dataset": str(image_folder),
                "out": str(out),
                "train_size": 0,
                "test_size": 0,
                "min_per_class": 1,
                "epochs": 2,
                "batch_size": 8,
                "baselines": "none",
                "grid": {"head": {"lr": [0.01, 0.1]}, "lora": {"r": [2, 4]}},
            }
        )
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert cli.main(["sweep", str(f), "--ray"]) == 0
        printed = capsys.readouterr().out
        assert "ray: 4 run(s) submitted" in printed
        found = sorted(p.parent.name for p in out.glob("*/result.json"))
        assert found == ["head-lr0.01-seed0", "head-lr0.1-seed0", "lora-r2-seed0", "lora-r4-seed0"]
        assert all(read_json(out / n / "result.json")["status"] == "ok" for n in found)
        assert (out / "lora-r4-seed0" / "adapter" / "adapter_config.json").exists()
        stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
        assert cli.main(["sweep", str(f), "--ray"]) == 0
        assert "reused 4 finished run(s)" in capsys.readouterr().out
        assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamps
        # a search on Ray: its trials are Ray tasks, asked and told by Optuna here, with the budget
        tuned = tmp_path / "tuned.json"
        tuned.write_text(
            json.dumps(
                json.loads(f.read_text())
                | {"out": str(tmp_path / "tuned"), "tune": ["lr"], "tune_trials": 3, "grid": {"head": {}}}
            )
        )
        assert cli.main(["sweep", str(tuned), "--ray"]) == 0
        t = read_json(tmp_path / "tuned" / "head-seed0" / "result.json")["tuning"]
        assert len(t["trials"]) == 3 and all(x["state"] == "complete" and x["epochs"] == 2 for x in t["trials"])
        assert t["pruner"] == "none (trials ran as Ray tasks)" and "searching lr" in capsys.readouterr().out
    finally:
        ray.shutdown()


def test_only_index_runs_one_grid_point(tiny_vit, image_folder, tmp_path, capsys):
    f = tmp_path / "s.json"
    f.write_text(
        json.dumps(
            {
                "model": str(tiny_vit),
                "dataset": str(image_folder),
                "out": str(tmp_path / "o"),
                "train_size": 0,
                "test_size": 0,
                "min_per_class": 1,
                "epochs": 1,
                "batch_size": 8,
                "seeds": [0, 1],
                "grid": {"head": {}, "last": {}},
            }
        )
    )
    assert cli.main(["sweep", str(f), "--count"]) == 0
    assert capsys.readouterr().out.strip() == "4"
    assert cli.main(["sweep", str(f), "--only-index", "3", "--quiet"]) == 0
    found = sorted(p.parent.name for p in (tmp_path / "o").glob("*/result.json"))
    # that one run, and the references of its seed only (each array task fits its own seed's, once)
    assert found == ["last-seed1"] + [f"ref-{b}-seed1" for b in ("knn", "majority", "pixels", "probe")]
    assert cli.main(["sweep", str(f), "--only-index", "4"]) == 2
    assert "outside the grid's 4 runs (0-3)" in capsys.readouterr().err
