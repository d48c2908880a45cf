"""The report: report.md and a self-contained report.html (table, plots, per-class accuracy, findings)
built from result dicts alone; rendered by headless Chromium; the example notebook run end to end."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from peftlab import cli, methods, report
from peftlab.models import BUNDLED_DIR
from peftlab.report import findings, to_markdown

from .conftest import CLASSES
from .helpers import NAMES, TRAINABLE, needs_fmnist, run_args
from .helpers import make_result as fake

DEFAULTS = {m: methods.REGISTRY[m].config_cls().options() for m in methods.REGISTRY}

# accuracies per seed: lora leads full beyond noise (paired), head and last indistinguishable from lora
SEEDS = {"head": [0.62, 0.70, 0.63], "last": [0.66, 0.73, 0.74], "lora": [0.70, 0.75, 0.80], "full": [0.30, 0.35, 0.30]}


def results_set() -> list[dict]:
    return [fake(m, s, a) for m, accs in SEEDS.items() for s, a in enumerate(accs)]


def findings_md(results: list[dict]) -> str:
    """The Findings section alone (no plots: fast)."""
    return to_markdown(findings(results), report.REPORT_PLOTS)


@pytest.fixture(scope="module")
def built() -> tuple[str, str, dict[str, bytes]]:
    return report.build_report(results_set())


def non_blank(png: bytes, min_colours: int = 20) -> bool:
    """Decodes, and is a picture: many distinct colours and a fair share of non-white pixels."""
    px = pixels(png)
    colours = n_colours(px)
    non_white = (px.min(axis=2) < 240).mean()
    return colours >= min_colours and non_white > 0.02


def n_colours(px: np.ndarray) -> int:
    rgb = px.astype(np.int64)
    return len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ---------------------------------------------------------------- report.md
def test_markdown_has_the_table_every_plot_and_the_findings(built):
    md, _, pngs = built
    assert md.startswith("# peftlab report: tiny-model on toy-data")
    assert "| " + " | ".join(report.COLUMNS) + " |" in md
    for m in SEEDS:
        row = next(line for line in md.splitlines() if line.startswith(f"| {m} | 3 |"))
        assert f"{TRAINABLE[m]:,} ✓" in row  # trainable: measured / theory / match
    assert "| lora | 3 | 12,613 | 12,613 ✓ | 4.14% | 0.750 | 0.750 ± 0.050 |" in md
    assert set(pngs) == {
        "accuracy-vs-trainable.png",
        "accuracy-vs-time.png",
        "accuracy-vs-memory.png",
        "learning-curves.png",
        "confusion-best.png",
    }
    for name, png in pngs.items():
        assert f"]({report.REPORT_PLOTS}/{name})" in md
        assert png.startswith(b"\x89PNG") and non_blank(png), name
    assert "Confusion matrix of lora" in md  # the best configuration
    # per-class accuracy: one row per class, a column per configuration, the best in bold
    assert "| class | test images | head | last | lora | full |" in md
    assert "| Sandal | 20 | 0.650 | 0.717 | 0.750 | 0.317 |" in md  # no class winner beyond noise: none bold
    for heading in (
        "## Findings",
        "### Metric and chance level",
        "### Protocol: what chose what",
        "### Before training",
        "### Hyperparameters and their meaning",
        "### Parameter counts and the theory check",
        "### Time and accuracy",
        "### Comparison: accuracy",
        "### Comparison: efficiency",
        "### Comparison: reliability",
        "### Advantages and disadvantages",
        "### Class coverage",
    ):
        assert heading in md


def test_findings_state_the_numbers_of_the_results(built):
    md = built[0]
    assert "**Chance level: 0.200**" in md and "the 100 test images (split 'test')" in md
    assert "no top-5 accuracy: with 5 classes it would always be 1" in md
    assert (
        "**Before training** (the pretrained model with its new, untrained 5-class head), validation accuracy: "
        "**0.150**"
    ) in md
    assert "Highest mean test accuracy: **lora** (0.750 ± 0.050)." in md
    assert "the test split is scored 1 time(s) per final run, with the weights chosen." in md
    assert "4 of 4 configurations match their derived counts." in md
    assert "**lora**: test accuracy **0.750 ± 0.050**" in md
    assert "; validation 0.750 at the checkpoint of epoch 2." in md
    assert "Trainable parameters (exact): head 325, lora 12,613, last 50,309, full 304,709." in md
    assert "All 12 runs finished: none failed or diverged." in md
    assert (
        "every seed — train: 5 of 5 classes, 200 images (40 per class); "
        "test: 5 of 5 classes, 100 images (20 per class)."
    ) in md


def test_option_meanings_come_from_the_method_configs(built):
    md = built[0]
    for f in fields(methods.LoraConfig):
        value = DEFAULTS["lora"][f.name]
        assert f"| {f.name} | {value} | {f.metadata['help']} |" in md
    assert f"**lora**: {methods.REGISTRY['lora'].description}." in md


def test_a_different_set_of_results_gives_other_findings():
    """Nothing is fixed text about one run: other numbers, other sentences."""
    rs = [fake("head", s, a, baseline=0.5) for s, a in enumerate([0.9, 0.92])]
    rs += [fake("full", s, a, baseline=0.5) for s, a in enumerate([0.5, 0.52])]
    md = findings_md(rs)
    assert "validation accuracy: **0.500**" in md
    assert "Highest mean test accuracy: **head** (0.910 ± 0.014)." in md
    assert "**full** — disadvantages: less accurate than head beyond noise" in md
    assert "lora" not in md


def test_differences_within_noise_are_called_so(built):
    findings = built[0].split("## Findings")[1]
    # lora - head per seed: +.08, +.05, +.17 (paired t, p 0.11 before correction): indistinguishable; lora - full:
    # +.40, +.40, +.50: beyond noise even after Holm's correction over the 6 comparisons
    assert "**Indistinguishable from it at this budget**: head and last — the paired tests do not tell" in findings
    assert (
        "lora vs head: +0.100, 95% CI -0.05" in findings
        and "indistinguishable at this budget (paired t over" in findings.split("lora vs head:")[1].split("\n")[0]
    )
    assert (
        "lora vs full: +0.433, 95% CI +0.29" in findings
        and "higher, beyond noise (paired t over 3 seeds, Holm p" in findings.split("lora vs full:")[1].split("\n")[0]
    )
    assert "Below it beyond noise: full." in findings
    assert "highest mean accuracy, more accurate than full beyond noise" in findings
    assert "**full** — advantages:" not in findings.split("**full** —")[0]
    assert "less accurate than head, last and lora beyond noise" in findings.split("**full** —")[1].split("\n")[0]
    assert "spreads are not ranked below 10 seeds" in findings and "spread over seeds" not in findings
    one_seed = [fake(m, 0, a) for m, a in (("head", 0.6), ("lora", 0.7))]
    md1 = findings_md(one_seed)
    assert "One seed per configuration: no estimate of how much accuracy varies" in md1
    assert "rerun with --seeds 0,1,2" in md1


def test_failed_and_diverged_runs_are_listed():
    rs = results_set() + [fake("lora", 3, 0, status="diverged"), fake("full", 3, 0, status="failed")]
    md = findings_md(rs)
    assert "2 of 14 runs did not finish:" in md
    assert "lora seed 3: **diverged** — Diverged: the loss became nan at step 3" in md
    assert "full seed 3: **failed** —" in md
    nothing = report.build_report([fake("lora", 0, 0, status="failed")])
    assert "No run succeeded" in nothing[0] and "lora seed 0: **failed**" in nothing[0] and not nothing[2]


def test_a_count_that_differs_from_theory_is_flagged():
    rs = [
        fake(
            "lora",
            0,
            0.7,
            theory_match=False,
            theory_trainable=12_000,
            mismatches=[{"what": "trainable", "theory": 12_000, "measured": 12_613}],
        ),
        fake("head", 0, 0.6),
    ]
    md = report.format_markdown(rs) + findings_md(rs)
    assert "| lora | 1 | 12,613 | 12,000 MISMATCH |" in md
    assert "1 of 2 configurations match their derived counts; mismatches: lora." in md
    assert "**MISMATCH** — trainable 12,000 derived vs 12,613 measured" in md


def test_coverage_problems_and_notes_are_stated():
    rs = [fake("head", 0, 0.6)]
    rs[0]["coverage"]["test"] |= {"classes_present": 4, "missing": ["Bag"], "below_min": ["Shirt"]}
    rs[0]["config"] = {"min_per_class": 5}
    rs[0]["data"]["notes"] = ["test split misses 1 of 5 classes (Bag)"]
    md = findings_md(rs)
    assert (
        "test: 4 of 5 classes, 100 images (20 per class), **missing: Bag**, **fewer than 5 images: Shirt (20)**"
    ) in md
    assert "Note: test split misses 1 of 5 classes (Bag)" in md


def test_the_report_is_a_pure_function_of_the_results(built):
    md, page, pngs = built
    shuffled = results_set()[::-1]
    again = report.build_report(shuffled)
    assert again[0] == md and again[1] == page and again[2] == pngs  # byte for byte, whatever the input order


def test_a_pareto_front_drops_only_what_is_beaten_beyond_noise():
    """lora is more accurate than full beyond noise and cheaper: full is off the parameter front; head is
    cheapest, and last is not beaten beyond noise by anything cheaper: both stay."""
    from peftlab.report.compare import Comparisons
    from peftlab.report.verdicts import front, reduce

    cmp = Comparisons(results_set())
    gs = [reduce(c) for c in cmp.configs]
    assert [g.label for g in front(gs, cmp, lambda g: g.trainable)] == ["head", "lora", "last"]


def test_inference_cost_columns_and_plot():
    """The deployed model's FLOPs and speed against the base's, in the table and in a plot; '-' (and no
    plot) for results from before inference was measured."""

    def cost(flops, img_s):
        return {"params": 304_709, "flops_per_image": flops, "img_s": img_s}

    base = cost(29.6e6, 1000.0)
    inference = {
        "lora": {"deployed": "merged", "batch": 32, **cost(29.6e6, 990.0), "base": base},
        "head": {"deployed": "merged", "batch": 32, **cost(29.6e6, 1000.0), "base": base},
        "full": {"deployed": "merged", "batch": 32, **cost(29.6e6, 1010.0), "base": base},
        "last": {"deployed": "unmerged", "batch": 32, **cost(32.56e6, 800.0), "base": base},  # as VPT would be
    }
    results = [r | {"inference": inference[r["method"]]} for r in results_set()]
    rows = {r[0]: r[-2:] for r in report.table_rows(results)}
    assert report.COLUMNS[-2:] == ["infer FLOPs (vs base)", "infer img/s (vs base)"]
    assert rows["lora"] == ["29.6M (= base, merged)", "990 (×0.99)"]
    assert rows["last"] == ["32.6M (+10.0%)", "800 (×0.80)"]
    assert {r[0]: r[-2:] for r in report.table_rows(results_set())}["lora"] == ["-", "-"]
    names = [f.name for f in report.plots.figures(results)]
    assert "accuracy-vs-inference" in names and "accuracy-vs-inference" not in [
        f.name for f in report.plots.figures(results_set())
    ]
    png = next(f.png for f in report.plots.figures(results) if f.name == "accuracy-vs-inference")
    assert non_blank(png)


def test_html_is_self_contained_and_carries_every_plot(built):
    md, page, pngs = built
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
    decoded = [base64.b64decode(s.split(",", 1)[1]) for s in srcs]
    assert sorted(decoded) == sorted(pngs.values()) and all(non_blank(d) for d in decoded)
    assert "<h2>Findings</h2>" in page and "<strong>Chance level: 0.200</strong>" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium; "
    "'make test' installs it where apt-get exists)",
)
def test_html_renders_in_headless_chromium(built, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(built[1])
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    px = pixels(shot.read_bytes())
    assert px.shape == (4000, 1280, 3)
    assert non_blank(shot.read_bytes(), min_colours=500)
    # the plots sit below the table: that region holds many colours and the plots' saturated ones
    plots = px[500:2200]
    assert n_colours(plots) > 500
    r, g, b = (plots[..., i].astype(int) for i in range(3))
    assert ((b > 150) & (r < 100)).sum() > 500  # blue markers, lines and confusion cells
    assert ((r > 180) & (g < 80) & (b < 80)).sum() > 100  # the red of the 4th configuration


# ---------------------------------------------------------------- written by run and report
def test_run_and_report_write_report_files(tiny_vit, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(run_args(tiny_vit, image_folder, out, "--methods", "head,lora", "--epochs", "1")) == 0
    assert capsys.readouterr().out == ""  # --quiet: nothing printed
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "| head | 1 |" in md and "| lora | 1 |" in md and f"{len(CLASSES)} classes" in md
    assert "<h2>Findings</h2>" in page
    for name in re.findall(rf"\]\({report.REPORT_PLOTS}/([^)]+)\)", md):
        assert non_blank((out / report.REPORT_PLOTS / name).read_bytes())
    (out / "report.md").unlink()
    (out / "report.html").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (out / "report.md").read_text() == md and (out / "report.html").read_text() == page


# ---------------------------------------------------------------- the example notebook
NOTEBOOK = Path(__file__).parent.parent / "examples" / "compare_methods.ipynb"


@needs_fmnist
@pytest.mark.skipif(not (BUNDLED_DIR / "model.safetensors").exists(), reason="bundled model not built")
def test_example_notebook_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat, nbclient, ipykernel)")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbformat, nbclient, ipykernel)")
    monkeypatch.setenv("PEFTLAB_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PEFTLAB_NOTEBOOK_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny model: one thread is fastest on a shared machine
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + json.dumps(o.get("data", {})) for o in outputs)
    assert "8 runs, statuses: ['ok']" in text and "Chance level" in text and "372,581" in text
    for name in ("report.md", "report.html"):
        assert (tmp_path / "runs" / name).is_file()


def test_classes_missing_from_some_seeds_test_samples():
    """A class absent from one seed's test sample (accuracy None) is averaged over the seeds that have it;
    absent from all, it shows '-'. Nothing raises."""
    from peftlab.report.table import per_class_table

    rs = [fake("lora", 0, 0.8), fake("lora", 1, 0.6), fake("head", 0, 0.5), fake("head", 1, 0.5)]
    rs[1]["metrics"]["test"]["per_class_accuracy"][NAMES[0]] = None  # lora seed 1: no test image of class 0
    for r in rs[2:]:
        r["metrics"]["test"]["per_class_accuracy"][NAMES[1]] = None  # head: class 1 in no test sample
    table = per_class_table(rs)
    cell = {(row[0], g): v for row in table.rows for g, v in zip(table.header[2:], row[2:])}
    assert (cell[NAMES[0], "lora"], cell[NAMES[0], "head"]) == ("0.800", "0.500")  # lora: seed 0 only
    assert (cell[NAMES[1], "lora"], cell[NAMES[1], "head"]) == ("0.700", "-")
    assert (cell[NAMES[2], "lora"], cell[NAMES[2], "head"]) == ("0.700", "0.500")  # 2 seeds: no winner claimed
    findings(rs)
    report.build_report(rs)
