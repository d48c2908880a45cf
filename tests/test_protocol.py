"""The evaluation protocol: validation chooses (checkpoint, early stopping, a per-method search with one
budget), the test split is scored once per final run, searches resume after kill -9, protocols as presets."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from peftlab import config
from peftlab.errors import UserError
from peftlab.training import loop
from peftlab.training.loop import EarlyStopping, StopTraining

from .conftest import read_json
from .helpers import run_args, run_cli


def test_the_test_split_is_scored_exactly_once_per_final_run_and_never_in_a_search(
    tiny_vit, image_folder, tmp_path, capsys, monkeypatch
):
    scored = []  # the split each evaluate() call scored, by size: train 19, validation 5, test 12
    real = loop.evaluate
    monkeypatch.setattr(
        loop, "evaluate", lambda model, f, split, *a: scored.append(len(split)) or real(model, f, split, *a)
    )
    args = run_args(tiny_vit, image_folder, tmp_path, "--methods", "head,lora", "--tune", "lr", "--tune-trials", "3")
    rc, _, err = run_cli(capsys, *args)
    assert rc == 0, err
    # test: once per final run; validation: before training and after every epoch, in each trial (until it
    # is pruned) and in each final run (3 epochs)
    trials = [
        t for m in ("head", "lora") for t in read_json(tmp_path / f"{m}-seed0" / "result.json")["tuning"]["trials"]
    ]
    assert scored.count(12) == 2 and scored.count(5) == sum(1 + t["epochs"] for t in trials) + 2 * (1 + 3)
    assert all(t["epochs"] >= 2 for t in trials if t["state"] == "pruned")  # pruned from epoch 2, as recorded
    for m in ("head", "lora"):
        r = read_json(tmp_path / f"{m}-seed0" / "result.json")
        assert r["selection"]["test_evaluations"] == 1
        assert r["selection"]["options"] == "chosen by a search on the validation split"
        t = r["tuning"]
        assert t["budget"] == 3 and len(t["trials"]) == 3 and t["searched"] == ["lr"]
        assert r["method_config"]["lr"] == t["chosen"]["lr"] == t["trials"][t["best_trial"]]["params"]["lr"]
        low, high = t["space"]["lr"]["log_uniform"]
        assert all(low <= x["params"]["lr"] <= high for x in t["trials"])
        assert t["best_value"] == max(x["value"] for x in t["trials"] if x["value"] is not None)
    md = (tmp_path / "report.md").read_text()
    assert "### Search" in md and "(report-plots/search-lr.png)" in md and "3 trials over lr log-uniform" in md
    # a rerun finds the search and the runs finished: nothing is trained again
    scored.clear()
    rc, out, _ = run_cli(capsys, *[a for a in args if a != "--quiet"])
    assert rc == 0 and scored == [] and "reused 2 finished run(s)" in out


def test_tune_names_an_option_of_one_method_with_its_name(tiny_vit, image_folder, tmp_path, capsys):
    args = run_args(
        tiny_vit, image_folder, tmp_path, "--methods", "head,lora", "--tune", "lora.r", "--tune-trials", "2"
    )
    assert run_cli(capsys, *args)[0] == 0
    assert read_json(tmp_path / "head-seed0" / "result.json")["tuning"] is None
    lora = read_json(tmp_path / "lora-seed0" / "result.json")
    assert lora["tuning"]["searched"] == ["r"] and lora["method_config"]["r"] in (2, 4, 8, 16, 32)
    with pytest.raises(UserError, match=r"--tune r: head has no such option; head searches: lr \(name one method"):
        config.build({"methods": "head,lora", "tune": "r"})
    with pytest.raises(UserError, match=r"--tune full.r: method 'full' is not among --methods \(head, lora\)"):
        config.build({"methods": "head,lora", "tune": "full.r"})
    with pytest.raises(UserError, match=r"--tune lora.bias: lora does not search it; lora searches: "):
        config.build({"methods": "lora", "tune": "lora.bias"})


def _search_trials(db) -> list[tuple[int, str]]:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select number, state from trials order by number").fetchall()
    except sqlite3.OperationalError:  # the search is still creating its tables
        return []


def test_a_search_killed_with_kill_9_resumes_its_finished_trials(tiny_vit, image_folder, tmp_path):
    """kill -9 in the middle of a search: the rerun keeps the trials that finished (same numbers, same
    values) and runs only the rest, until the budget is met."""
    out = tmp_path / "out"
    args = run_args(tiny_vit, image_folder, out, "--methods", "full", "--tune", "lr", "--tune-trials", "4", epochs=4)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    db = out / "tuning" / "full.db"
    deadline = time.time() + 240
    while time.time() < deadline:
        if db.exists() and sum(s == "COMPLETE" for _, s in _search_trials(db)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _search_trials(db)
    finished = [n for n, s in before if s == "COMPLETE"]
    assert len(finished) >= 2 and not (out / "full-seed0" / "result.json").exists()
    with sqlite3.connect(db) as con:
        values = dict(con.execute("select trial_id, value from trial_values").fetchall())
    assert subprocess.run([sys.executable, "-m", "peftlab", *args], env=env, capture_output=True).returncode == 0
    after = _search_trials(db)
    assert after[: len(finished)] == [(n, "COMPLETE") for n in finished]  # kept, not redone
    done = [n for n, s in after if s in ("COMPLETE", "PRUNED")]
    assert len(done) == 4  # the budget, no more
    with sqlite3.connect(db) as con:
        assert {
            k: v for k, v in con.execute("select trial_id, value from trial_values").fetchall() if k in values
        } == values
    r = read_json(out / "full-seed0" / "result.json")
    assert [t["number"] for t in r["tuning"]["trials"]] == done


def test_damaged_or_locked_search_storage_is_one_line(tiny_vit, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "tuning").mkdir(parents=True)
    (out / "tuning" / "head.db").write_bytes(b"this is not a database" * 100)
    args = run_args(tiny_vit, image_folder, out, "--methods", "head", "--tune", "lr", "--tune-trials", "2")
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"peftlab: error: the search storage {out / 'tuning' / 'head.db'} cannot be read (")
    assert "delete it to start that search again" in err
    (out / "tuning" / "head.db").unlink()
    with sqlite3.connect(out / "tuning" / "head.db") as con:  # another process holds a write lock on it
        con.execute("create table t (x)")
        con.execute("begin exclusive")
        rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "is locked by another process" in err


def test_refit_on_train_and_validation(tiny_vit, image_folder, tmp_path, capsys):
    args = run_args(tiny_vit, image_folder, tmp_path, "--methods", "head", "--refit", "train+val")
    assert run_cli(capsys, *args)[0] == 0
    r = read_json(tmp_path / "head-seed0" / "result.json")
    assert r["data"]["train_examples"] == 24 and r["data"]["val_examples"] == 5  # the 5 trained on too
    assert r["metrics"]["val"] == {} and r["selection"]["checkpoint"] == "last epoch (no validation set)"
    assert r["selection"]["epoch"] == 3 and r["selection"]["test_evaluations"] == 1
    assert all("val_accuracy" not in h for h in r["history"])


def test_early_stopping_watches_validation_only():
    stop = EarlyStopping(2)
    for epoch, acc in enumerate([0.5, 0.6, 0.6], 1):
        stop({"epoch": epoch, "val_accuracy": acc})
    with pytest.raises(StopTraining):
        stop({"epoch": 4, "val_accuracy": 0.55})  # two epochs without a better validation accuracy


def test_early_stop_and_checkpoint_choices_are_recorded(tiny_vit, image_folder, tmp_path, capsys):
    args = run_args(
        tiny_vit, image_folder, tmp_path, "--methods", "full", "--full-lr", "0.05", "--early-stop", "1", epochs=8
    )
    assert run_cli(capsys, *args)[0] == 0
    r = read_json(tmp_path / "full-seed0" / "result.json")
    h, sel = r["history"], r["selection"]
    best = max(range(len(h)), key=lambda i: (h[i]["val_accuracy"], -h[i]["val_loss"]))
    assert sel["epoch"] == best + 1 and sel["epochs_trained"] == len(h)
    if sel["stopped_early_after"] is not None:  # one epoch without gain ends it
        assert len(h) < 8 and h[-1]["val_accuracy"] <= max(x["val_accuracy"] for x in h[:-1])
    assert r["train"]["early_stop"] == 1 and r["train"]["checkpoint"] == "best"


def test_protocols_are_presets_of_the_options():
    few = config.build({"protocol": "few-shot:2"})
    assert (few.train_per_class, few.val_per_class, few.test_size, few.seeds) == (2, 2, 0, [0, 1, 2])
    vtab = config.build({"protocol": "vtab-1k", "seeds": "3"})
    assert (vtab.train_size, vtab.val_size, vtab.test_size, vtab.refit, vtab.seeds) == (800, 200, 0, "train+val", [3])
    own = config.build({"protocol": "few-shot:5", "train_size": 50})  # what the run sets wins over the preset
    assert (own.train_size, own.train_per_class, own.val_per_class) == (50, None, 5)
    with pytest.raises(UserError, match="unknown --protocol 'few-shot:0'"):
        config.build({"protocol": "few-shot:0"})


def test_few_shot_protocol_samples_k_per_class(tiny_vit, image_folder, tmp_path, capsys):
    args = ["run", "--model", str(tiny_vit), "--dataset", str(image_folder), "--out", str(tmp_path), "--quiet"]
    args += ["--methods", "head", "--protocol", "few-shot:2", "--epochs", "1", "--min-per-class", "1"]
    assert run_cli(capsys, *args)[0] == 0
    for seed in (0, 1, 2):
        r = read_json(tmp_path / f"head-seed{seed}" / "result.json")
        assert r["coverage"]["train"]["per_class"] == {"dark": 2, "light": 2, "mid": 2}
        assert r["coverage"]["val"]["per_class"] == {"dark": 2, "light": 2, "mid": 2}
    r = read_json(tmp_path / "head-seed0" / "result.json")
    assert r["config"]["train_per_class"] == r["config"]["val_per_class"] == 2 and r["config"]["test_size"] == 0
