"""A comparison: plan its runs, skip those finished on disk, run the rest (here or on Ray), and write
the folder's summary, report and config.yaml."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import methods as M
from ..baselines import REFERENCES
from ..config import RunConfig, RunSpec
from ..errors import Unsupported, UserError
from ..models import describe, fit_head
from ..report import context_lines, data_size_lines, format_text, noise_lines, summary_markdown, write_report
from ..results import Result
from .lock import FOLDER, PRESENT, Lock, claim, finished
from .references import reference_header
from .tuning import RaySettings, _slug, tune
from .worker import Worker, _header, _model_config, _write, unsupported


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".peftlab-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder '{out}' ({e.strerror}); pass a writable --out") from e


def preflight(specs: list[RunSpec], config, trust_remote_code: bool = False) -> dict[str, str]:
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
            model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
        fit_head(model, ["a", "b"], s.seed)  # the head size does not change whether a method applies
        try:
            M.get(s.method).apply(model, describe(model), s.options, 100)
        except Unsupported as e:
            unsupported[s.label] = str(e)
    return unsupported


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
    records, for a sweep (its file's options and grid); a run records cfg.to_dict().

    Other processes may work in the same folder (see runs.lock): each run is locked while it runs and read
    again before it starts; a run another process is running is left to it, and waited for at the end."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    present = Lock(out, PRESENT)
    if ray_address is not None:
        worker = None
        _check_writable(out)
        refused = preflight(specs, _model_config(cfg.model, cfg.trust_remote_code), cfg.trust_remote_code)
    else:
        worker = Worker(cfg, log)
        log = worker.log
        _check_writable(out)
        refused = preflight(specs, worker.config, cfg.trust_remote_code)
    if worker is None or worker.main:
        present.acquire(shared=True)
        claim(out, settings or cfg.to_dict(), "sweep" if settings else "run", present)
    try:
        return _execute(cfg, specs, log, worker, ray_address, ray_resources, t0, refused)
    finally:
        present.release()


def _execute(cfg, specs, log, worker, ray_address, ray_resources, t0, refused) -> list[Result]:
    out = Path(cfg.out)
    say = log if not cfg.quiet else (lambda s: None)
    if worker is not None:  # a --train-sizes entry larger than a class has fails before anything trains
        for k in dict.fromkeys(s.per_class for s in specs if s.per_class is not None):
            worker.subsample(specs[0].seed, k)
    for label, why in refused.items():  # a method that cannot apply to this model: recorded, the others run
        log(f"{label}: unsupported on {cfg.model} — {why}")
    skipped = {s.name: unsupported(cfg, s, refused[s.label]) for s in specs if s.label in refused}
    runnable, searches = search(
        cfg, [s for s in specs if s.name not in skipped], say, worker, ray_address, ray_resources
    )
    chosen = {s.name: s for s in runnable}
    specs = [chosen.get(s.name, s) for s in specs]
    # read before any training: a folder in the way, damaged or of another configuration stops here
    done = {s.name: finished(out / s.name, _header(cfg, s)) for s in specs}
    for s in specs:
        if s.name in skipped and (worker is None or worker.main):
            with Lock(out, s.name):
                _write(out / s.name / "result.json", skipped[s.name])
    seeds = list(dict.fromkeys(s.seed for s in specs))  # --only-index: the seed of that one run
    sizes = list(dict.fromkeys(s.per_class for s in specs))
    if worker is None:
        from .cluster import ray_execute

        todo = [s for s in specs if not done[s.name] and s.name not in skipped]
        fresh = ray_execute(cfg, todo, ray_address, say, searches, **(ray_resources or {})) if todo else {}
        reused = len(specs) - len(todo) - len(skipped)
        refs = references(cfg, seeds, sizes, None, log)
    else:
        fresh, held, refs = {}, [], []
        for seed in seeds:  # a seed's references, then its runs, while its images are decoded
            if worker.main:
                refs += references(cfg, [seed], sizes, worker, log)
            for s in (s for s in specs if s.seed == seed and s.name not in skipped):  # one another process runs ...
                r = worker.attempt(s, searches.get(s.key), wait=False)
                (held.append(s) if r is None else fresh.__setitem__(s.name, r))
        for s in held:  # ... and waited for: its result read, or the run made here if that process died
            fresh[s.name] = worker.attempt(s, searches.get(s.key), wait=True)
        worker.accelerator.wait_for_everyone()
        if not worker.main:
            return list(fresh.values())
        reused = len(worker.reused)
    results = refs + [skipped.get(s.name) or fresh.get(s.name) or done[s.name] for s in specs]
    with Lock(out, FOLDER):
        _write(out / "summary.md", summary_markdown(results))
        write_report(out, results)  # report.md, report-plots/, report.html
    if reused:
        say(f"reused {reused} finished run(s) from {out}")
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
    when the runs went to Ray), each under its folder's lock; those finished on disk with the same
    configuration are reused."""
    names = [n for n in cfg.baselines if n in REFERENCES]
    out = []
    for seed in seeds:
        for k in sizes:
            headers = {n: reference_header(cfg, n, seed, k) for n in names}
            runs = {n: headers[n]["run_name"] for n in names}
            locks = [Lock(cfg.out, runs[n]) for n in sorted(names, key=runs.get)]  # one order: no deadlock
            try:
                for lock in locks:
                    lock.acquire(wait=True)
                old = [finished(Path(cfg.out) / runs[n], headers[n]) for n in names]
                todo = [n for n, r in zip(names, old) if r is None]
                if todo and worker is None:
                    worker = Worker(cfg, log)
                fresh = iter(worker.references(seed, todo, k) if todo else [])
                out += [r if r is not None else next(fresh) for r in old]
            finally:
                for lock in locks:
                    lock.release()
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
            # one search at a time per configuration: a second process waits, then finds it finished
            lock = Lock(cfg.out, f"search-{_slug(s.key)}")
            if worker is None or worker.main:
                lock.acquire(wait=True)
            try:
                tuned, record = tune(cfg, s, log, worker=worker, ray=ray)
            finally:
                lock.release()
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
