"""--report-to: TensorBoard, MLflow and Weights & Biases follow each run, for real and offline. Each tracker's
records are read back with its own reader (TensorBoard's event reader, MLflow's client on the local store,
W&B's offline run file) and must equal the run's own history and result. A tracker whose package is not
installed is skipped here (CI installs them: the 'test' extra)."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

from peftlab.config import TRACKERS

from .conftest import read_json
from .helpers import run_args, run_cli

INSTALLED = [t for t in TRACKERS if importlib.util.find_spec({"tensorboard": "tensorboard"}.get(t, t))]
RUNS = ("head-seed0", "lora-seed0")


@pytest.fixture(scope="module")
def tracked(tiny_vit, image_folder, tmp_path_factory) -> Path:
    if not INSTALLED:
        pytest.skip("no tracker package installed (pip install 'peftlab[trackers]')")
    out = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("WANDB_PROJECT", raising=False)
    mp.setenv("WANDB_MODE", "offline")  # W&B writes its run files and never reaches the network
    mp.setenv("WANDB_SILENT", "true")
    try:
        from peftlab import cli

        args = run_args(tiny_vit, image_folder, out, "--methods", "head,lora", "--report-to", ",".join(INSTALLED))
        assert cli.main(args) == 0
    finally:
        mp.undo()
    return out


def _needs(name: str) -> None:
    if name not in INSTALLED:
        pytest.skip(f"{name} is not installed (pip install 'peftlab[trackers]')")


def _expected(out: Path, run: str) -> tuple[dict, list[dict]]:
    r = read_json(out / run / "result.json")
    return r, r["history"]


def test_tensorboard_event_files_hold_each_epoch_and_the_final_metrics(tracked):
    _needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for run in RUNS:
        events = EventAccumulator(str(tracked / "tensorboard" / run))
        events.Reload()
        r, history = _expected(tracked, run)
        scalars = lambda tag, ev=events: [(s.step, s.value) for s in ev.Scalars(tag)]  # noqa: E731
        assert [s for s, _ in scalars("train/loss")] == [h["epoch"] for h in history] == [1, 2, 3]
        for tag, key in (("train/loss", "train_loss"), ("val/accuracy", "val_accuracy"), ("train/lr", "lr")):
            assert [v for _, v in scalars(tag)] == pytest.approx([h[key] for h in history], rel=1e-6), tag
        assert len(scalars("train/img_s")) == 3 and all(v > 0 for _, v in scalars("train/img_s"))
        assert scalars("test/accuracy") == [(3, pytest.approx(r["metrics"]["test"]["accuracy"], rel=1e-6))]
        assert scalars("params/trainable") == [(3, r["params"]["trainable"])]


def test_mlflow_store_holds_one_run_per_configuration_and_seed(tracked):
    _needs("mlflow")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(tracked.name)  # named like the results folder
    found = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == sorted(RUNS)
    for name in RUNS:
        r, history = _expected(tracked, name)
        run = found[name]
        assert run.data.params["method"] == r["method"] and run.data.params["seed"] == "0"
        assert run.data.params[f"{r['method']}.lr"] == str(r["method_config"]["lr"])
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in losses] == [(h["epoch"], pytest.approx(h["train_loss"])) for h in history]
        assert run.data.metrics["test/accuracy"] == pytest.approx(r["metrics"]["test"]["accuracy"])
        assert run.data.metrics["params/total"] == r["params"]["total"]
        assert run.info.status == "FINISHED"


def wandb_records(path: Path):
    """The records of a W&B run file (its LevelDB-style log of protobuf records: 32 KiB blocks, each record
    split into chunks with a 7-byte header), decoded with W&B's own protobuf classes."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def test_wandb_offline_run_files_hold_the_config_and_every_epoch(tracked):
    _needs("wandb")
    import json

    files = sorted((tracked / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == len(RUNS)
    seen = {}
    for f in files:
        name, config, history = None, {}, []
        for rec in wandb_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                name = rec.run.display_name
                assert rec.run.project == tracked.name
            elif kind == "config":
                config |= {i.key: json.loads(i.value_json) for i in rec.config.update}
            elif kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        seen[name] = (config, history)
    assert sorted(seen) == sorted(RUNS)
    for name in RUNS:
        r, expected = _expected(tracked, name)
        config, history = seen[name]
        assert config["method"] == r["method"] and config["seed"] == 0
        rows = {row["_step"]: row for row in history}
        assert [rows[h["epoch"]]["train/loss"] for h in expected] == pytest.approx([h["train_loss"] for h in expected])
        assert rows[3]["test/accuracy"] == pytest.approx(r["metrics"]["test"]["accuracy"])


def test_a_tracker_without_its_package_is_a_one_line_error(tiny_vit, image_folder, tmp_path, capsys, monkeypatch):
    from peftlab.runs import trackers

    monkeypatch.setitem(trackers.PACKAGES, "wandb", ("peftlab_no_such_package",))
    rc, out, err = run_cli(
        capsys, *run_args(tiny_vit, image_folder, tmp_path, "--methods", "head", "--report-to", "wandb")
    )
    assert rc == 2 and err.count("\n") == 1
    assert "--report-to wandb needs the 'peftlab_no_such_package' package: pip install 'peftlab[trackers]'" in err
    assert not list(tmp_path.glob("*/result.json"))
    rc, _, err = run_cli(capsys, *run_args(tiny_vit, image_folder, tmp_path, "--report-to", "comet"))
    assert rc == 2 and "unknown tracker 'comet'; choose from tensorboard, mlflow, wandb" in err
