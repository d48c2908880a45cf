"""Fault injection: what a careless or hostile user, a damaged disk or a second process does to peftlab.

Each case damages a copy of one small finished run folder (or the input), runs the command and asserts the exit
code, one line naming what is wrong, no traceback, and that every result.json that existed before is
byte-identical after. The concurrency tests run real processes on one --out folder, one of them killed with
kill -9, and check that nothing finished is lost, overwritten or trained twice."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftlab import cli
from peftlab.config import RunSpec
from peftlab.results import io as results_io

from .conftest import CLASSES, write_image_folder
from .helpers import run_args, run_cli


# ---------------------------------------------------------------- one finished folder for the module
@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_vit, image_folder) -> Path:
    """A finished 'run --methods head,lora' (1 epoch): its folder is copied and damaged by each case."""
    out = tmp_path_factory.mktemp("faults") / "o"
    assert cli.main(run_args(tiny_vit, image_folder, out, "--methods", "head,lora", epochs=1)) == 0
    return out


def results_of(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("result.json"))}


def check(capsys, args: list[str], rc: int, phrase: str, keep: Path) -> str:
    """Run args: exit code rc, stderr one line holding phrase (when rc != 0), no traceback, every result.json
    under keep unchanged, byte for byte. Returns stdout."""
    before = results_of(keep)
    code, out, err = run_cli(capsys, *args)
    assert code == rc, err
    if rc:
        assert err.startswith("peftlab: error: ") and err.count("\n") == 1, err
        assert phrase in err, err
    else:
        assert phrase in out + err, out + err
    after = results_of(keep)
    assert {p: after.get(p) for p in before} == before  # new results may come; none that existed changes
    return out


def _result(folder: Path, run: str) -> Path:
    return folder / run / "result.json"


def cut_in_half(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def edit(p: Path, change) -> None:
    data = json.loads(p.read_text())
    change(data)
    p.write_text(json.dumps(data))


# ---------------------------------------------------------------- damaged result files, for every reader
DAMAGED = {
    "cut in half": (cut_in_half, "(JSONDecodeError)"),
    "{}": (lambda p: p.write_text("{}"), "is not a peftlab result (missing status, method, seed)"),
    "[]": (lambda p: p.write_text("[]"), "is not a peftlab result (not a mapping)"),
    "not UTF-8": (lambda p: p.write_bytes(b'{"status": "\xff"}'), "(UnicodeDecodeError)"),
}
READERS = {
    "report": lambda o, w: ["report", str(o)],
    "predict": lambda o, w: ["predict", str(o / "lora-seed0"), str(w)],
    "eval": lambda o, w: ["eval", str(o / "lora-seed0"), "--dataset", str(w)],
    "merge": lambda o, w: ["merge", str(o / "lora-seed0"), "--out", str(o.parent / "merged")],
}


@pytest.mark.parametrize("damage", DAMAGED)
@pytest.mark.parametrize("reader", READERS)
def test_a_damaged_result_file_is_one_line(done, image_folder, tmp_path, capsys, damage, reader):
    o = shutil.copytree(done, tmp_path / "o")
    hurt, phrase = DAMAGED[damage]
    hurt(_result(o, "lora-seed0"))
    check(capsys, READERS[reader](o, image_folder), 2, phrase, o)
    assert not (tmp_path / "merged").exists()


# ---------------------------------------------------------------- damaged run folders and bad commands on them
def _adapter(o: Path, run: str) -> Path:
    name = "adapter_model.safetensors" if run.startswith("lora") else "trainable.safetensors"
    return o / run / "adapter" / name


def _two_labels(o: Path) -> None:
    for run in ("head-seed0", "lora-seed0"):
        edit(_result(o, run), lambda d: d["data"].__setitem__("label_names", ["a", "b"]))


def _copy_run(o: Path, run: str, to: str, change) -> None:
    shutil.copytree(o / run, o / to)
    edit(_result(o, to), change)


FOLDER_CASES = {
    "adapter deleted": (
        lambda o: _adapter(o, "lora-seed0").unlink(),
        ["predict", "{o}/lora-seed0", "{img}"],
        "has no saved weights",
    ),
    "adapter cut in half": (
        lambda o: cut_in_half(_adapter(o, "lora-seed0")),
        ["predict", "{o}/lora-seed0", "{img}"],
        "cannot be loaded into model",
    ),
    "trained tensors deleted": (
        lambda o: _adapter(o, "head-seed0").unlink(),
        ["eval", "{o}/head-seed0", "--dataset", "{img}"],
        "has no saved weights",
    ),
    "trained tensors cut in half": (
        lambda o: cut_in_half(_adapter(o, "head-seed0")),
        ["merge", "{o}/head-seed0", "--out", "{o}/../m"],
        "cannot be loaded into model",
    ),
    "labels disagree with the weights (PEFT)": (
        _two_labels,
        ["predict", "{o}/lora-seed0", "{img}"],
        "with its 2 labels (RuntimeError: size mismatch",
    ),
    "labels disagree with the weights (tensors)": (
        _two_labels,
        ["predict", "{o}/head-seed0", "{img}"],
        "with its 2 labels (RuntimeError: size mismatch",
    ),
    "the base model moved away": (
        lambda o: edit(_result(o, "lora-seed0"), lambda d: d.__setitem__("model", str(o.parent / "moved"))),
        ["predict", "{o}/lora-seed0", "{img}"],
        "does not exist",
    ),
    "merge --out an existing file": (
        lambda o: (o.parent / "m").write_text("mine"),
        ["merge", "{o}/lora-seed0", "--out", "{o}/../m"],
        "is a file; peftlab does not overwrite it",
    ),
    "report over runs of another dataset": (
        lambda o: _copy_run(o, "head-seed0", "more/head-seed0", lambda d: d.__setitem__("dataset", "other")),
        ["report", "{o}"],
        "holds runs of different datasets",
    ),
    "report over runs with another class count": (
        lambda o: _copy_run(
            o, "head-seed0", "more/head-seed1", lambda d: d.update(seed=1) or d["data"].update(label_names=["a", "b"])
        ),
        ["report", "{o}"],
        "holds runs of different label sets",
    ),
    "report over one label's runs of another configuration": (
        lambda o: _copy_run(
            o, "head-seed0", "more/head-seed1", lambda d: d.update(seed=1) or d["config"].update(epochs=9)
        ),
        ["report", "{o}"],
        "holds runs of different configurations under one label 'head'",
    ),
    "report over one seed twice": (
        lambda o: _copy_run(o, "head-seed0", "again/head-seed0", lambda d: None),
        ["report", "{o}"],
        "holds two runs of 'head' with seed 0",
    ),
    "a folder named like a run that peftlab did not make": (
        lambda o: (o / "last-seed0").mkdir() or (o / "last-seed0" / "precious.txt").write_text("mine"),
        ["run", "--methods", "head,lora,last"],
        "is in the way: it has no result.json and no mark of an unfinished peftlab run (it holds precious.txt)",
    ),
    "a run folder that is a link": (
        lambda o: (o.parent / "elsewhere").mkdir() or (o / "last-seed0").symlink_to(o.parent / "elsewhere"),
        ["run", "--methods", "head,lora,last"],
        "is a link (to",
    ),
    "another configuration on the same --out": (
        None,
        ["run", "--methods", "head,lora", "--epochs", "2"],
        "holds runs of a different configuration (epochs: 1 there, 2 here",
    ),
    "a damaged result in the way of a run": (
        lambda o: cut_in_half(_result(o, "head-seed0")),
        ["run", "--methods", "head,lora"],
        "is not a readable peftlab result; peftlab does not delete it",
    ),
}


def everything(o: Path) -> dict[Path, bytes]:
    """Every file a user or a finished run put in o (not the locks, not config.yaml, which may name more runs)."""
    return {p: p.read_bytes() for p in sorted(o.rglob("*")) if p.is_file() and ".peftlab" not in p.parts}


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_a_damaged_run_folder_is_one_line(done, tiny_vit, image_folder, tmp_path, capsys, case):
    o = shutil.copytree(done, tmp_path / "o", symlinks=True)
    hurt, args, phrase = FOLDER_CASES[case]
    if hurt:
        hurt(o)
    if args[0] == "run":  # the later --epochs wins
        args = run_args(tiny_vit, image_folder, o, *args[1:], epochs=1)
    before = {p: b for p, b in everything(o).items() if p.name != "config.yaml"}
    check(capsys, [a.format(o=o, img=image_folder) for a in args], 2, phrase, o)
    assert {p: b for p, b in everything(o).items() if p.name != "config.yaml"} == before  # nothing deleted
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").iterdir())


# ---------------------------------------------------------------- hostile input
def _symlinked_class(tmp: Path, img: Path) -> Path:
    d = shutil.copytree(img, tmp / "img")
    (d / "train" / "x").symlink_to(d / "train" / "dark")
    return d


def _string_in_config(tmp: Path, vit: Path) -> Path:
    m = shutil.copytree(vit, tmp / "vit")
    edit(m / "config.json", lambda d: d.__setitem__("hidden_size", "32"))
    return m


def _needs_remote_code(tmp: Path, vit: Path) -> Path:
    m = shutil.copytree(vit, tmp / "vit")
    (m / "evil.py").write_text(f"open({str(tmp / 'ran')!r}, 'w').write('code ran')\n")
    edit(m / "config.json", lambda d: d.update(model_type="evil-vit", auto_map={"AutoConfig": "evil.EvilConfig"}))
    return m


INPUT_CASES = {
    "symlinked class folder": (
        lambda t, vit, img: ["--dataset", str(_symlinked_class(t, img))],
        "is a link (to",
    ),
    "config.json with a string for an int": (
        lambda t, vit, img: ["--model", str(_string_in_config(t, vit))],
        "fix its config.json",
    ),
    "a model that needs its own code": (
        lambda t, vit, img: ["--model", str(_needs_remote_code(t, vit))],
        "--trust-remote-code",
    ),
    "a label column for an image folder": (lambda t, vit, img: ["--label-column", "image"], "has no columns"),
    "a missing local model": (lambda t, vit, img: ["--model", "./no/such/model"], "does not exist"),
    "NaN --max-grad-norm": (lambda t, vit, img: ["--max-grad-norm", "nan"], "--max-grad-norm must be a finite"),
    "NaN --lora-alpha": (lambda t, vit, img: ["--methods", "lora", "--lora-alpha", "nan"], "lora.alpha must be a fin"),
    "inf --lora-alpha": (lambda t, vit, img: ["--methods", "lora", "--lora-alpha", "inf"], "lora.alpha must be a fin"),
    "seed beyond 2^64": (lambda t, vit, img: ["--seeds", "18446744073709551616"], "--seeds must be at most"),
    "a seed twice": (lambda t, vit, img: ["--seeds", "0,0"], "--seeds must be distinct"),
    "a method twice": (lambda t, vit, img: ["--methods", "head,head"], "names head more than once"),
}


@pytest.mark.parametrize("case", INPUT_CASES)
def test_hostile_input_is_one_line_before_any_work(tiny_vit, image_folder, tmp_path, capsys, case):
    make, phrase = INPUT_CASES[case]
    out = tmp_path / "out"
    args = run_args(tiny_vit, image_folder, out, "--methods", "head", epochs=1) + make(tmp_path, tiny_vit, image_folder)
    check(capsys, args, 2, phrase, tmp_path)
    assert not list(out.glob("*/result.json")) and not (tmp_path / "ran").exists()


def _file(name: str, text: bytes):
    def write(folder: Path) -> Path:
        (folder / name).write_bytes(text)
        return folder / name

    return write


FILE_CASES = {
    "YAML key that is a number": (_file("c.yaml", b"1: 2\n"), "unknown option(s): 1"),
    "YAML with byte 0xFF": (_file("c.yaml", b"epochs: \xff\n"), "is not UTF-8 text (byte 0xff"),
    "YAML key twice": (_file("c.yaml", b"epochs: 1\nepochs: 2\n"), "'epochs' is given twice"),
    "JSON key twice": (_file("c.json", b'{"epochs": 1, "epochs": 2}'), "'epochs' is given twice"),
    "a file that turns on remote code": (_file("c.yaml", b"trust_remote_code: true\n"), "a file never turns that on"),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_config_files_are_one_line(tmp_path, capsys, case):
    make, phrase = FILE_CASES[case]
    check(capsys, ["run", "--config", str(make(tmp_path)), "--out", str(tmp_path / "o")], 2, phrase, tmp_path)


GRIDS = {
    "an empty option list": ({"lora": {"r": []}}, "'r' is an empty list, which makes no runs"),
    "an empty grid": ({}, "the sweep's 'grid' must map method names to option lists"),
}


@pytest.mark.parametrize("case", GRIDS)
def test_a_grid_that_makes_no_runs_is_an_error(tiny_vit, image_folder, tmp_path, capsys, case):
    grid, phrase = GRIDS[case]
    f = tmp_path / "s.json"
    f.write_text(
        json.dumps({"model": str(tiny_vit), "dataset": str(image_folder), "out": str(tmp_path / "o")} | {"grid": grid})
    )
    check(capsys, ["sweep", str(f)], 2, phrase, tmp_path)


def test_a_long_grid_label_fits_a_file_name():
    label = "lora targets=" + "query,value," * 40 + "query"
    names = {RunSpec("lora", {}, 0, label=label + tail).name for tail in ("", "x")}
    assert len(names) == 2 and all(len(n.encode()) <= 200 for n in names)


def test_label_column_that_holds_images(hf_dataset_dir, tiny_vit, tmp_path, capsys):
    args = run_args(tiny_vit, hf_dataset_dir, tmp_path / "o", "--methods", "head", epochs=1)
    check(capsys, [*args, "--label-column", "img"], 2, "both name 'img'", tmp_path)
    check(
        capsys,
        [*args, "--image-column", "category", "--label-column", "img"],
        2,
        "image column 'category' holds ClassLabel values, not images",
        tmp_path,
    )


def test_a_full_disk_on_a_new_out_is_one_line(tiny_vit, image_folder, tmp_path, capsys, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_io.os, "fsync", fsync)
    args = run_args(tiny_vit, image_folder, tmp_path / "o", "--methods", "head", epochs=1)
    check(capsys, args, 2, "the disk is full; free space or pass another --out", tmp_path)


# ---------------------------------------------------------------- hostile input that runs, correctly
def test_predict_survives_a_decompression_bomb(done, tmp_path, capsys):
    from PIL import Image

    Image.new("L", (8, 8), 100).save(tmp_path / "ok.png")
    Image.new("1", (20_000, 20_000)).save(tmp_path / "bomb.png")  # 4e8 pixels: beyond PIL's limit, 6 MB on disk
    out = check(capsys, ["predict", str(done / "lora-seed0"), str(tmp_path), "--json"], 0, "ok.png", done)
    rows = {Path(r["path"]).name: r for r in json.loads(out)}
    assert "decompression bomb" in rows["bomb.png"]["error"] and len(rows["ok.png"]["predictions"]) == 3


def test_names_that_are_not_utf8_train_and_report(tiny_vit, tmp_path, capsys):
    img = write_image_folder(tmp_path / "img", {"train": {c: 4 for c in CLASSES}, "test": {c: 2 for c in CLASSES}})
    for split in ("train", "test"):  # class 'dark' becomes b'd\xffk'; one file name too
        os.rename(img / split / "dark", os.fsencode(img / split) + b"/d\xffk")
        os.rename(os.fsencode(img / split) + b"/d\xffk/000.png", os.fsencode(img / split) + b"/d\xffk/\xfe.png")
    out = tmp_path / "o"
    check(capsys, run_args(tiny_vit, img, out, "--methods", "head", epochs=1), 0, "", tmp_path)
    labels = json.loads(_result(out, "head-seed0").read_text())["data"]["label_names"]
    assert labels == ["d\\xffk", "light", "mid"]  # printable, and told apart from any other name
    check(capsys, ["report", str(out)], 0, "head", out)
    assert "d\\xffk" in (out / "report.md").read_text()


def test_what_peft_changes_is_recorded_and_every_method_option_is_taken(tiny_vit, image_folder, tmp_path, capsys):
    """--oft-block-size 7 on a 32-wide model: PEFT trains with 8, and the result says so. --lora-all-* and
    --freeze-first-* reach their methods. Files get the user's umask (PEFT's adapter files were 0600)."""
    out = tmp_path / "o"
    args = ["--methods", "oft,lora-all,freeze-first", "--oft-block-size", "7", "--lora-all-r", "2"]
    args += ["--freeze-first-blocks", "1"]
    old = os.umask(0o022)
    try:
        check(capsys, run_args(tiny_vit, image_folder, out, *args, epochs=1), 0, "", tmp_path)
    finally:
        os.umask(old)
    res = {r: json.loads(_result(out, f"{r}-seed0").read_text()) for r in ("oft", "lora-all", "freeze-first")}
    assert res["oft"]["method_config"]["block_size"] == 7
    assert res["oft"]["params"]["adjusted"] == {"block_size": {"asked": 7, "used": [8]}}
    assert res["lora-all"]["method_config"]["r"] == 2 and res["freeze-first"]["method_config"]["blocks"] == 1
    modes = {f.name: f.stat().st_mode & 0o777 for f in (out / "oft-seed0").rglob("*") if f.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_a_default_sample_size_is_never_an_error(tiny_vit, image_folder, tmp_path, capsys):
    """18 training images and no --train-size: the default 8,000 shrinks to all of them, and the run says so."""
    args = ["run", "--model", str(tiny_vit), "--dataset", str(image_folder), "--out", str(tmp_path / "o")]
    args += ["--methods", "head", "--epochs", "1", "--baselines", "none", "--min-per-class", "1"]
    check(capsys, args, 0, "fewer than the default --train-size 8000", tmp_path)


# ---------------------------------------------------------------- real processes on one --out
def _peftlab(*args: str) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "peftlab", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _trained(text: str) -> list[str]:
    """The runs a process trained: one line per run at its first epoch."""
    return re.findall(r"^(\S+) seed 0 epoch 1/", text, flags=re.M)


def test_two_processes_on_one_out_train_each_run_once(tiny_vit, image_folder, tmp_path):
    out = tmp_path / "o"
    base = [a for a in run_args(tiny_vit, image_folder, out, epochs=2, batch_size=4) if a != "--quiet"]
    a = _peftlab(*base, "--methods", "head,lora")
    b = _peftlab(*base, "--methods", "lora,head")
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert "Traceback" not in err_a + err_b
    assert sorted(_trained(out_a) + _trained(out_b)) == ["head", "lora"]  # each run trained by one of them
    assert sorted(p.parent.name for p in out.glob("*/result.json")) == ["head-seed0", "lora-seed0"]
    assert not list(out.glob("*/.peftlab-unfinished")) and (out / "summary.md").exists()


def test_a_process_killed_mid_run_loses_nothing_finished(tiny_vit, image_folder, tmp_path):
    """kill -9 while the second run trains: the kernel drops its lock; the next process keeps the first run
    (byte-identical) and redoes the second from peftlab's own unfinished mark."""
    out = tmp_path / "o"
    base = [a for a in run_args(tiny_vit, image_folder, out, epochs=3, batch_size=1) if a != "--quiet"]
    a = _peftlab(*base, "--methods", "head,lora")
    end = time.monotonic() + 180
    while not (out / "lora-seed0" / ".peftlab-unfinished").exists():
        assert a.poll() is None and time.monotonic() < end, a.communicate()
        time.sleep(0.02)
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=60)
    head = _result(out, "head-seed0").read_bytes()
    assert not _result(out, "lora-seed0").exists()
    b = _peftlab(*base, "--methods", "head,lora")
    text, err = b.communicate(timeout=300)
    assert b.returncode == 0 and "Traceback" not in err, err
    assert _trained(text) == ["lora"] and _result(out, "head-seed0").read_bytes() == head
    assert json.loads(_result(out, "lora-seed0").read_text())["status"] == "ok"


HOLDER = """
import sys, time
from pathlib import Path
from peftlab.runs.lock import Lock, start
lock = Lock(sys.argv[1], "lora-seed0")
assert lock.acquire(wait=False)
start(Path(sys.argv[1]) / "lora-seed0", "lora-seed0")  # what a peftlab process does as a run starts
print("holding", flush=True)
time.sleep(600)
"""


def test_a_run_held_by_a_live_process_is_waited_for_then_taken_over(tiny_vit, image_folder, tmp_path):
    """A process mid-run holds lora-seed0: a second process runs the rest, names the holder and waits; when the
    holder dies (kill -9) it runs lora itself."""
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        base = [a for a in run_args(tiny_vit, image_folder, out, epochs=1) if a != "--quiet"]
        b = _peftlab(*base, "--methods", "head,lora")
        lines = []
        for line in b.stdout:  # each log line is flushed
            lines.append(line)
            if "waiting for" in line:
                break
        assert f"lora seed 0: waiting for process {holder.pid} on " in lines[-1], "".join(lines)
        assert _trained("".join(lines)) == ["head"] and not _result(out, "lora-seed0").exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        rest, err = b.communicate(timeout=300)
        assert b.returncode == 0 and "Traceback" not in err, err
        assert _trained(rest) == ["lora"] and json.loads(_result(out, "lora-seed0").read_text())["status"] == "ok"
    finally:  # never left behind, whatever failed
        holder.kill()
        holder.wait(timeout=60)


def test_sigterm_is_like_ctrl_c(tiny_vit, image_folder, tmp_path):
    out = tmp_path / "o"
    p = _peftlab(*run_args(tiny_vit, image_folder, out, "--methods", "head,lora", epochs=3, batch_size=1))
    end = time.monotonic() + 180
    while not _result(out, "head-seed0").exists():
        assert p.poll() is None and time.monotonic() < end, p.communicate()
        time.sleep(0.02)
    head = _result(out, "head-seed0").read_bytes()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "Traceback" not in err, err
    assert err.strip().endswith(
        "terminated (SIGTERM); every result.json written is complete — rerun the same command to finish the rest"
    )
    assert _result(out, "head-seed0").read_bytes() == head
