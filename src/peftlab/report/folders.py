"""`peftlab report DIR [DIR ...]`: the report of one results folder, or of several compared in one table
(each configuration named <folder>/<label>), from the result files alone."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..results import Result, load_results, write_text_atomic
from .build import write_report
from .table import context_lines, format_text, noise_lines, summary_markdown


def read_folders(folders: list[str]) -> list[Result]:
    """Every result under each folder; with several folders each result's label becomes <folder>/<label>, so
    that the folders' configurations stay apart (two folders' 'lora' are two rows, compared seed by seed)."""
    results = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise UserError(f"'{folder}' is not a folder; pass a results folder written by 'peftlab run'")
        found = load_results(folder)
        if not found:
            raise UserError(f"no result.json files under '{folder}'")
        if len(folders) > 1:
            name = Path(folder).absolute().name
            found = [r | {"label": f"{name}/{r.get('label') or r['method']}"} for r in found]
        results += found
    return results


def report_folders(folders: list[str], out: str | None = None) -> list[str]:
    """The lines to print (context, table, noise, notes); writes summary.md and the report into out (default:
    the folder itself, when there is one)."""
    results = read_folders(folders)
    lines = ["\n".join(context_lines(results)) + "\n\n" + format_text(results), *noise_lines(results)]
    for what in ("model", "dataset"):
        values = sorted({str(r.get(what)) for r in results})
        if len(values) > 1:
            lines.append(f"note: the folders differ in {what} ({', '.join(values)}): their test sets are not the same")
    out = out or (folders[0] if len(folders) == 1 else None)
    if out is None:
        return [*lines, "(several folders: pass --out DIR to write their summary.md, report.md and report.html)"]
    write_text_atomic(Path(out) / "summary.md", summary_markdown(results))
    write_report(out, results)
    return [*lines, f"report: {Path(out) / 'report.md'} and {Path(out) / 'report.html'}"]
