"""A comparison: plan its runs, skip those finished on disk, run the rest (here or on Ray), and write
the folder's summary, report and config.yaml."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import methods as M
from ..baselines import REFERENCES
from ..config import RunConfig, RunSpec, config_yaml
from ..errors import Unsupported, UserError
from ..models import describe, fit_head
from ..report import context_lines, data_size_lines, format_text, noise_lines, summary_markdown, write_report
from ..results import FINAL, Result, load_result
from .references import reference_header
from .tuning import RaySettings, tune
from .worker import Worker, _header, _model_config, _write, unsupported


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".peftlab-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder '{out}' ({e.strerror}); pass a writable --out") from e


def preflight(specs: list[RunSpec], config) -> dict[str, str]:
    """Apply every method configuration to a weightless (meta-device) copy of the model before any
    training, so a bad option fails before any result is written. A method that cannot apply to this
    model (Unsupported) does not stop the others: returns {label: why} for those."""
    from transformers import AutoModelForImageClassification

    seen, unsupported = set(), {}
    for s in specs:
        if s.label in seen:
            continue
        seen.add(s.label)
        with torch.device("meta"):
            model = AutoModelForImageClassification.from_config(config)
        fit_head(model, ["a", "b"], s.seed)  # the head size does not change whether a method applies
        try:
            M.get(s.method).apply(model, describe(model), s.options, 100)
        except Unsupported as e:
            unsupported[s.label] = str(e)
    return unsupported


def _finished(run_dir: Path, header: Result) -> Result | None:
    path = run_dir / "result.json"
    if not path.exists():
        return None
    try:
        old = load_result(path)
    except UserError:
        return None  # unreadable: redo it
    if old.get("config") != json.loads(json.dumps(header["config"])):
        raise UserError(
            f"'{run_dir}' holds a run with a different configuration; pass another --out "
            "(results are never overwritten)"
        )
    return old if old.get("status") in FINAL else None


def execute(
    cfg: RunConfig,
    specs: list[RunSpec],
    log: Callable[[str], None] = print,
    ray_address: str | None = None,
    ray_resources: dict | None = None,
    settings: dict | None = None,
) -> list[Result]:
    """Run specs, one folder each. Finished runs are skipped, unfinished ones redone; a run that fails
    (exception, NaN loss, out of memory) is recorded and the rest go on. Ctrl-C or kill leaves only
    complete result.json files (each written atomically). ray_address ('' or 'auto' for a local Ray
    instance) sends each run to Ray as a task instead of running it here. settings: what config.yaml
    records, for a sweep (its file's options and grid); a run records cfg.to_dict()."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if ray_address is not None:
        from .cluster import ray_execute

        worker = None
        _check_writable(out)
        refused = preflight(specs, _model_config(cfg.model))
    else:
        worker = Worker(cfg, log)
        log = worker.log
        _check_writable(out)
        refused = preflight(specs, worker.config)
    say = log if not cfg.quiet else (lambda s: None)
    if worker is not None:  # a --train-sizes entry larger than a class has fails before anything trains
        for k in dict.fromkeys(s.per_class for s in specs if s.per_class is not None):
            worker.subsample(specs[0].seed, k)
    for label, why in refused.items():
        log(f"{label}: unsupported on {cfg.model} — {why}")
    skipped = {s.name: unsupported(cfg, s, refused[s.label]) for s in specs if s.label in refused}
    for s in specs:
        if s.name in skipped and (worker is None or worker.main):
            _finished(out / s.name, _header(cfg, s))  # a run of another configuration there is never overwritten
            _write(out / s.name / "result.json", skipped[s.name])
    runnable, searches = search(
        cfg, [s for s in specs if s.name not in skipped], say, worker, ray_address, ray_resources
    )
    chosen = {s.name: s for s in runnable}
    specs = [chosen.get(s.name, s) for s in specs]
    done = {s.name: skipped.get(s.name) or _finished(out / s.name, _header(cfg, s)) for s in specs}
    todo = [s for s in specs if not done[s.name]]
    seeds = list(dict.fromkeys(s.seed for s in specs))  # --only-index: the seed of that one run
    sizes = list(dict.fromkeys(s.per_class for s in specs))
    if worker is None:
        fresh = ray_execute(cfg, todo, ray_address, say, searches, **(ray_resources or {})) if todo else {}
        refs = references(cfg, seeds, sizes, None, log)
    else:
        fresh, refs = {}, []
        for seed in seeds:  # a seed's references, then its runs, while its images are decoded
            if worker.main:
                refs += references(cfg, [seed], sizes, worker, log)
            fresh |= {s.name: worker.attempt(s, searches.get(s.key)) for s in todo if s.seed == seed}
        worker.accelerator.wait_for_everyone()
        if not worker.main:
            return list(fresh.values())
    results = refs + [done[s.name] or fresh[s.name] for s in specs]
    _write(out / "config.yaml", config_yaml(settings or cfg.to_dict(), "sweep" if settings else "run"))
    _write(out / "summary.md", summary_markdown(results))
    write_report(out, results)  # report.md, report-plots/, report.html
    if len(specs) > len(todo) + len(skipped):
        say(f"reused {len(specs) - len(todo) - len(skipped)} finished run(s) from {out}")
    if not cfg.quiet:
        log("\n" + "\n".join(context_lines(results)) + "\n\n" + format_text(results))
        for line in noise_lines(results):
            log(line)
        sized = data_size_lines(results)
        if sized:
            log("\naccuracy against training-set size: " + "\n  ".join(sized))
        log(f"\nwall time {time.perf_counter() - t0:.1f} s · results in {out}{os.sep} (summary.md)")
    return results


def references(cfg: RunConfig, seeds: list[int], sizes: list[int | None], worker: Worker | None, log) -> list[Result]:
    """The cheap reference baselines of these seeds and training sizes (they take seconds: fitted here, also
    when the runs went to Ray); those finished on disk with the same configuration are reused."""
    names = [n for n in cfg.baselines if n in REFERENCES]
    out = []
    for seed in seeds:
        for k in sizes:
            headers = [reference_header(cfg, n, seed, k) for n in names]
            finished = [_finished(Path(cfg.out) / h["run_name"], h) for h in headers]
            todo = [n for n, r in zip(names, finished) if r is None]
            if todo and worker is None:
                worker = Worker(cfg, log)
            fresh = iter(worker.references(seed, todo, k) if todo else [])
            out += [r if r is not None else next(fresh) for r in finished]
    return out


def search(
    cfg: RunConfig, specs: list[RunSpec], log, worker, ray_address: str | None, ray_resources: dict | None
) -> tuple[list[RunSpec], dict[str, dict]]:
    """--tune: each configuration's search on the validation split (resumed from the folder's storage), then
    its runs with the chosen options (with --train-sizes, one search per configuration and size). Returns the
    specs to run and {RunSpec.key: search record}."""
    if not cfg.tune:
        return specs, {}
    ray = RaySettings(ray_address, **(ray_resources or {})) if ray_address is not None else None
    chosen, records = {}, {}
    for s in specs:
        if s.key not in chosen:
            tuned, record = tune(cfg, s, log, worker=worker, ray=ray)
            chosen[s.key], records[s.key] = tuned.options, record
    return [dataclasses.replace(s, options=chosen[s.key]) for s in specs], {k: v for k, v in records.items() if v}


def run(cfg: RunConfig, log: Callable[[str], None] = print) -> list[Result]:
    """Compare cfg's methods (once per seed) on one model and dataset."""
    return execute(cfg, cfg.plan(), log)


def exit_status(results: list[dict]) -> int:
    """The command's exit status: 0 when at least one method run finished (or none was asked for); else 1, and
    a line on stderr saying that every run failed, diverged or could not apply to the model."""
    runs = [r for r in results if r.get("kind", "method") == "method"]
    if not runs or any(r.get("status") == "ok" for r in runs):
        return 0
    statuses = ", ".join(sorted({r.get("status", "?") for r in runs}))
    print(
        f"peftlab: no run succeeded ({len(runs)} runs: {statuses}); see the summary in the results folder",
        file=sys.stderr,
    )
    return 1
