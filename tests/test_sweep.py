"""Seeds with intervals, resumable sweeps that survive failures, Ctrl-C, kill -9 and a full disk."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftlab import cli, report
from peftlab.report import summarize
from peftlab.results import io as results_io

from .conftest import read_json
from .helpers import make_result


def write_sweep(
    path: Path, model: Path, dataset: Path, out: Path, grid: dict, seeds=(0,), epochs: int = 2, **extra
) -> Path:
    path.write_text(
        json.dumps(
            {
                "model": str(model),
                "dataset": str(dataset),
                "out": str(out),
                "seeds": list(seeds),
                "train_size": 0,
                "test_size": 0,
                "min_per_class": 1,
                "epochs": epochs,
                "batch_size": 8,
                "quiet": True,
                "baselines": "none",
                "grid": grid,
                **extra,
            }
        )
    )
    return path


def result_files(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))}


# ---------------------------------------------------------------- statistics
def test_summary_matches_hand_computed_values():
    s = summarize([0.80, 0.82, 0.84])
    assert s.n == 3 and s.mean == pytest.approx(0.82)
    assert s.std == pytest.approx(0.02)  # sqrt(((-.02)^2 + 0 + .02^2) / 2)
    half = 4.302653 * 0.02 / math.sqrt(3)  # t_{0.975, 2} = 4.302653
    assert (s.low, s.high) == (pytest.approx(0.82 - half), pytest.approx(0.82 + half))
    one = summarize([0.5])
    assert (one.std, one.low, one.high) == (0.0, 0.5, 0.5)
    two = summarize([0.7, 0.9], bounds=None)
    assert two.high - two.mean == pytest.approx(12.706205 * math.sqrt(0.02) / math.sqrt(2))
    assert summarize([0.7, 0.9]).high == 1.0  # an accuracy's interval stops at 1


def test_noise_lines_test_paired_differences():
    close = [make_result("head", s, a) for s, a in enumerate([0.80, 0.82, 0.84])]
    close += [make_result("lora", s, a) for s, a in enumerate([0.83, 0.80, 0.86])]
    lines = report.noise_lines(close)
    assert lines[0].startswith("best: lora (0.830 ± 0.030 over 3 seeds); 1 paired comparisons, Holm-corrected")
    assert lines[1].startswith("lora vs head: +0.010, 95% CI") and "indistinguishable at this budget" in lines[1]
    far = [make_result("head", s, a) for s, a in enumerate([0.50, 0.52, 0.53])] + close[3:]
    assert "higher, beyond noise (paired t over 3 seeds, Holm p = " in report.noise_lines(far)[1]
    single = report.noise_lines([make_result("head", 0, 0.5), make_result("lora", 0, 0.6)])
    assert single[0] == "best: lora (0.600 (one seed)); 0 paired comparisons, Holm-corrected"
    assert "nothing to test (rerun with --seeds 0,1,2)" in single[1]


def test_table_shows_mean_std_and_interval_over_seeds():
    rs = [make_result("lora", s, a, baseline=0.2) for s, a in enumerate([0.80, 0.82, 0.84])]
    row = report.table_rows(rs)[0]
    assert row[0] == "lora" and row[1] == "3"
    assert (row[5], row[6]) == ("0.820", "0.820 ± 0.020")  # validation, test
    s = summarize([0.80, 0.82, 0.84])
    assert row[7] == f"{s.low:.3f}–{s.high:.3f}"


# ---------------------------------------------------------------- seeds through the CLI
def test_seeds_run_every_method_per_seed(tiny_vit, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "run",
        "--model",
        str(tiny_vit),
        "--dataset",
        str(image_folder),
        "--out",
        str(out),
        "--train-size",
        "0",
        "--test-size",
        "0",
        "--min-per-class",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--methods",
        "head,full",
        "--seeds",
        "0,1,2",
        "--baselines",
        "none",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    found = result_files(out)
    assert sorted(found) == [f"{m}-seed{s}" for m in ("full", "head") for s in (0, 1, 2)]
    assert {r["seed"] for r in found.values()} == {0, 1, 2}
    losses = {s: found[f"full-seed{s}"]["history"][0]["train_loss"] for s in (0, 1, 2)}
    assert len(set(losses.values())) == 3  # different seeds: different head init and data order
    full = [found[f"full-seed{s}"]["metrics"]["test"]["accuracy"] for s in (0, 1, 2)]
    assert f"{summarize(full).mean:.3f}" in printed and "seeds 0, 1, 2" in printed
    assert "best:" in printed


def test_bad_seeds_are_one_line_errors(capsys):
    assert cli.main(["run", "--seeds", "0,x"]) == 2
    assert capsys.readouterr().err.strip() == ("peftlab: error: --seeds must be comma-separated integers (got '0,x')")
    assert cli.main(["run", "--seeds", "1,1"]) == 2
    assert "distinct" in capsys.readouterr().err


# ---------------------------------------------------------------- sweeps
def test_sweep_runs_the_grid_and_a_rerun_skips_everything(tiny_vit, image_folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    f = write_sweep(
        tmp_path / "s.json",
        tiny_vit,
        image_folder,
        out,
        {"head": {"lr": [0.01, 0.1]}, "lora": {"r": [2, 4]}},
        seeds=(0, 1),
    )
    assert cli.main(["sweep", str(f)]) == 0
    found = result_files(out)
    assert sorted(found) == sorted(
        f"{label}-seed{s}" for label in ("head-lr0.01", "head-lr0.1", "lora-r2", "lora-r4") for s in (0, 1)
    )
    assert found["lora-r4-seed1"]["method_config"]["r"] == 4 and found["lora-r4-seed1"]["label"] == "lora r=4"
    assert found["head-lr0.1-seed0"]["method_config"]["lr"] == 0.1
    assert all(r["status"] == "ok" for r in found.values())
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert cli.main(["sweep", str(f), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamps  # nothing redone
    summary = (out / "summary.md").read_text()
    assert "| lora r=4 | 2 |" in summary


def test_sweep_records_a_diverged_run_and_goes_on(tiny_vit, image_folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    f = write_sweep(tmp_path / "s.yaml", tiny_vit, image_folder, out, {"full": {"lr": [1e30, 1e-3]}})
    assert cli.main(["sweep", str(f)]) == 0
    found = result_files(out)
    bad, good = found["full-lr1e+30-seed0"], found["full-lr0.001-seed0"]
    assert bad["status"] == "diverged" and "training loss became nan" in bad["error"].lower()
    assert good["status"] == "ok"
    assert "full lr=1e+30 seed 0: diverged" in (out / "summary.md").read_text()


def test_an_unfinished_run_is_redone(tiny_vit, image_folder, tmp_path):
    out = tmp_path / "sweep"
    f = write_sweep(tmp_path / "s.json", tiny_vit, image_folder, out, {"head": {}, "last": {}})
    assert cli.main(["sweep", str(f)]) == 0
    # as if killed after saving the adapter: the result is not written and peftlab's mark is still there
    (out / "last-seed0" / "result.json").unlink()
    (out / "last-seed0" / ".peftlab-unfinished").write_text("{}")
    head_stamp = (out / "head-seed0" / "result.json").stat().st_mtime_ns
    assert cli.main(["sweep", str(f)]) == 0
    assert (out / "last-seed0" / "result.json").exists()
    assert (out / "head-seed0" / "result.json").stat().st_mtime_ns == head_stamp


def test_a_changed_config_never_overwrites_results(tiny_vit, image_folder, tmp_path, capsys):
    out = tmp_path / "sweep"
    f = write_sweep(tmp_path / "s.json", tiny_vit, image_folder, out, {"head": {}})
    assert cli.main(["sweep", str(f)]) == 0
    before = (out / "head-seed0" / "result.json").read_text()
    f2 = write_sweep(tmp_path / "s.json", tiny_vit, image_folder, out, {"head": {}}, epochs=3)
    capsys.readouterr()
    assert cli.main(["sweep", str(f2)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("peftlab: error: ") and "different configuration" in err and "\n" not in err
    assert (out / "head-seed0" / "result.json").read_text() == before


@pytest.mark.parametrize(
    "grid, message",
    [
        ({}, "grid' must map method names"),
        ({"nope": {}}, "unknown method 'nope'"),
        ({"lora": {"rank": [4]}}, "unknown lora option(s): rank"),
        ({"lora": {"r": [0]}}, "lora.r must be >= 1"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tiny_vit, image_folder, tmp_path, capsys, grid, message):
    f = write_sweep(tmp_path / "s.json", tiny_vit, image_folder, tmp_path / "o", grid)
    assert cli.main(["sweep", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftlab: error: ") and message in err and err.count("\n") == 1


def test_a_full_disk_stops_with_one_line_and_keeps_finished_results(
    tiny_vit, image_folder, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "sweep"
    f = write_sweep(tmp_path / "s.json", tiny_vit, image_folder, out, {"head": {}, "last": {}})
    real_fsync = os.fsync

    def fsync(fd):  # writing the second run's result.json hits a full disk
        if "last-seed0/.result.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(results_io.os, "fsync", fsync)
    assert cli.main(["sweep", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"peftlab: error: cannot write {out / 'last-seed0' / 'result.json'}: the disk is full; free "
        "space or pass another --out, then rerun the same command: finished runs are kept and skipped"
    )
    assert read_json(out / "head-seed0" / "result.json")["status"] == "ok"
    assert not (out / "last-seed0" / "result.json").exists()
    assert not list(out.rglob("*.tmp"))  # no half-written temp file left behind
    monkeypatch.setattr(results_io.os, "fsync", real_fsync)
    assert cli.main(["sweep", str(f)]) == 0  # space is back: the rest completes
    assert sorted(result_files(out)) == ["head-seed0", "last-seed0"]


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["run", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"peftlab: error: cannot write to output folder '{blocker / 'sub'}'") and err.count("\n") == 1


# ---------------------------------------------------------------- real interruptions of a subprocess
def _start(f: Path) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "peftlab", "sweep", str(f)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_results(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while len(list(out.glob("*/result.json"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the sweep made no progress"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_sweep_resumes_without_loss_or_duplicates(tiny_vit, image_folder, tmp_path, sig):
    out = tmp_path / "sweep"
    grid = {"head": {"lr": [0.01, 0.02, 0.03]}, "full": {"lr": [1e-3, 2e-3, 3e-3]}}
    f = write_sweep(tmp_path / "s.json", tiny_vit, image_folder, out, grid, epochs=8)
    proc = _start(f)
    _wait_for_results(out, 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err
        assert "interrupted; every result.json written is complete" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done = result_files(out)  # every result.json on disk parses: none is half-written
    assert 2 <= len(done) < 6 and all(r["status"] == "ok" for r in done.values())
    stamps = {name: (out / name / "result.json").stat().st_mtime_ns for name in done}
    rerun = _start(f)
    assert rerun.wait(timeout=300) == 0, rerun.communicate()
    final = result_files(out)
    run_folders = sorted(p.name for p in out.iterdir() if p.is_dir() and "-seed" in p.name)
    assert len(final) == 6 and run_folders == sorted(final)  # one folder per run, nothing duplicated
    assert {name: (out / name / "result.json").stat().st_mtime_ns for name in stamps} == stamps  # not redone
    assert not list(out.rglob("*.tmp"))
