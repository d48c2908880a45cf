"""The whole report: its blocks (context, table, plots, per-class accuracy, findings), rendered to
report.md + report-plots/ and a self-contained report.html. write_report is the one function here that
touches files."""

from __future__ import annotations

import errno
from pathlib import Path

from ..errors import UserError
from ..results import Result, is_ok, write_bytes_atomic
from .datasize import data_size_figure, data_size_table
from .document import Bullets, Heading, Para, Table, to_html, to_markdown
from .findings import findings
from .plots import figures
from .table import COLUMNS, context_lines, per_class_table, table_rows

REPORT_PLOTS = "report-plots"  # report.md's PNG files, beside it; report.html carries its own copies


def report_blocks(results: list[Result], figures: list) -> list:
    """The report's content: context, comparison table, plots, per-class accuracy, findings."""
    ok = [r for r in results if is_ok(r)]
    title = f"peftlab report: {ok[0]['model']} on {ok[0]['dataset']}" if ok else "peftlab report"
    blocks = [Heading(title, 1), Bullets(context_lines(results)), Heading("Comparison", 2)]
    if ok:
        blocks += [
            Table(COLUMNS, table_rows(results)),
            Para(
                "Test acc: test accuracy, mean over seeds ± standard deviation (scored once per run, with the "
                "checkpoint chosen on validation); 95% CI is the interval of that mean. Val acc: the validation "
                "accuracy of the chosen checkpoints. "
                "Time, img/s: mean per run; peak memory: largest over seeds; adapter: the saved trained part."
            ),
        ]
    else:
        blocks.append(Para("No run succeeded."))
    sized = data_size_table(results)
    if sized is not None:
        blocks += [
            Heading("Accuracy against training-set size", 2),
            Para(
                "Test accuracy at each training size, mean over seeds [95% interval]; bold: the most accurate at "
                "that size and every configuration not below it beyond noise (paired test over seeds, "
                "Holm-corrected per size). The table above and the findings are at the largest size."
            ),
            sized,
        ]
    if figures:
        blocks += [Heading("Plots", 2)] + list(figures)
    pc = per_class_table(results)
    if pc is not None:
        blocks += [
            Heading("Per-class accuracy", 2),
            Para(
                "Test accuracy on each class's images, mean over seeds; bold: a configuration more accurate on "
                "that class than every other beyond noise (paired test over seeds, Holm-corrected over every "
                "class); none in bold: no class has such a winner at this budget."
            ),
            pc,
        ]
    return blocks + findings(results)


def build_report(results: list[Result]) -> tuple[str, str, dict[str, bytes]]:
    """(report.md text, report.html text, {plot file name: PNG bytes}): the same results give the
    same bytes."""
    figs = figures(results)
    sized = data_size_figure(results)
    if sized is not None:
        figs.insert(0, sized)  # the question a practitioner asks first: which method with how much data
    blocks = report_blocks(results, figs)
    title = blocks[0].text
    return to_markdown(blocks, REPORT_PLOTS), to_html(blocks, title), {f"{f.name}.png": f.png for f in figs}


def write_report(out: str | Path, results: list[Result]) -> list[Path]:
    """Write report.md, its plots (report-plots/*.png) and report.html into out; return their paths."""
    out = Path(out)
    md, page, pngs = build_report(results)
    plots = out / REPORT_PLOTS
    written = []
    try:
        plots.mkdir(parents=True, exist_ok=True)
        for old in plots.glob("*.png"):
            if old.name not in pngs:
                old.unlink()  # a plot the results no longer have
        for name, data in pngs.items():
            write_bytes_atomic(plots / name, data)
            written.append(plots / name)
        for name, text in (("report.md", md), ("report.html", page)):
            write_bytes_atomic(out / name, text.encode())
            written.append(out / name)
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(f"cannot write the report into {out}: {why}") from e
    return written
