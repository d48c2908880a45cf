"""`peftlab report DIR [DIR ...]`: the report of one results folder, or of several compared in one table
(each configuration named <folder>/<label>), from the result files alone."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..results import Result, load_results, write_text_atomic
from .build import write_report
from .groups import label, size_of
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
        check_comparable(found, folder)
        if len(folders) > 1:
            name = Path(folder).absolute().name
            found = [r | {"label": f"{name}/{r.get('label') or r['method']}"} for r in found]
        results += found
    if len(folders) > 1:  # folders may differ in model or dataset (noted), never in the classes compared
        _same(results, "label set", lambda r: sorted((r.get("data") or {}).get("label_names") or []), "")
    return results


def _where(r: Result, folder: str) -> str:
    return str(Path(r.get("_path", "?")).relative_to(folder)) if folder else str(r.get("_path", "?"))


def _same(results: list[Result], what: str, key, folder: str) -> None:
    """One value of key over results, else a one-line error naming two runs that differ."""
    first: dict[str, Result] = {}
    for r in results:
        first.setdefault(repr(key(r)), r)
    if len(first) > 1:
        (a, ra), (b, rb) = list(first.items())[:2]
        place = f"'{folder}' holds" if folder else "the folders hold"
        raise UserError(
            f"{place} runs of different {what} ({a[:80]} in {_where(ra, folder)}, {b[:80]} in {_where(rb, folder)}): "
            "their accuracies are not comparable; report each set of runs on its own (peftlab report DIR for "
            "each), or move the other runs away"
        )


def check_comparable(results: list[Result], folder: str) -> None:
    """The runs of one folder are compared row against row and seed against seed: they must share the model,
    the dataset and its label set, and a row's runs (one label, one training size) the configuration apart
    from the seed, each seed once. Otherwise a one-line error (never a row of unrelated runs)."""
    _same(results, "models", lambda r: r.get("model"), folder)
    _same(results, "datasets", lambda r: r.get("dataset"), folder)
    _same(results, "label sets", lambda r: (r.get("data") or {}).get("label_names"), folder)
    rows: dict[tuple, list[Result]] = {}
    for r in results:
        rows.setdefault((r.get("kind"), label(r), size_of(r)), []).append(r)
    for (_, name, _), rs in rows.items():
        _same(rs, f"configurations under one label '{name}'", _config_but_seed, folder)
        seen: dict = {}
        for r in rs:
            if r.get("seed") in seen:
                raise UserError(
                    f"'{folder}' holds two runs of '{name}' with seed {r.get('seed')} "
                    f"({_where(seen[r['seed']], folder)}"
                    f" and {_where(r, folder)}): one would count twice in its mean and spread; move one away"
                )
            seen[r.get("seed")] = r


def _config_but_seed(r: Result) -> dict:
    return {k: v for k, v in (r.get("config") or {}).items() if k not in ("seed", "seeds")}


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
