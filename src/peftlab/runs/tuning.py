"""Per-method hyperparameter search on the validation split, with an equal budget for every method.

Optuna does the searching (a seeded TPE sampler, median pruning on each epoch's validation accuracy);
its storage is a SQLite file in the output folder, so a search killed at any point resumes with its
finished trials kept. The search spaces come from the method registry (each method's lr range on a log
scale and its own options). The objective of a trial is the validation accuracy of the checkpoint the
training would keep; the test split is never looked at. A search record goes into every final run's
result.json, so the report can show the budget, the space, each trial and the choice.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from .. import methods as M
from ..config import RunConfig, RunSpec, tuned_options
from ..errors import UserError
from ..training import Diverged, fit
from ..training.loop import EarlyStopping

STORAGE_DIR = "tuning"  # inside the output folder: one SQLite file per searched configuration


def space_of(method: str, options: list[str]) -> dict[str, dict]:
    """{option: its registered search space, as a JSON record} for the options searched."""
    out = {}
    for name in options:
        space = M.get(method).search[name]
        if isinstance(space, M.LogRange):
            out[name] = {"log_uniform": [space.low, space.high]}
        elif isinstance(space, M.IntRange):
            out[name] = {"int": [space.low, space.high], "log": space.log}
        else:
            out[name] = {"choice": list(space.values)}
    return out


def _suggest(trial, name: str, space: dict):
    if "log_uniform" in space:
        return trial.suggest_float(name, *space["log_uniform"], log=True)
    if "int" in space:
        return trial.suggest_int(name, *space["int"], log=space["log"])
    return trial.suggest_categorical(name, space["choice"])


def _storage(path: Path):
    """The study's SQLite storage; a file that is not one, or one locked by another process, is a clear error."""
    import optuna
    import sqlalchemy

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 10}}, skip_compatibility_check=False
        )
        storage.get_all_studies()  # touches the file: a damaged one fails here, not mid-search
        return storage
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError, ValueError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        what = "is locked by another process" if "locked" in why else f"cannot be read ({why})"
        todo = "wait for it or pass another --out" if "locked" in why else "delete it to start that search again"
        raise UserError(f"the search storage {path} {what}; {todo}") from e


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label.replace(" ", "-"))[:120]


@dataclasses.dataclass
class RaySettings:
    """Where trials run when --ray is given: each trial a Ray task of this size."""

    address: str
    cpus_per_run: float = 1
    gpus_per_run: float | None = None


def tune(
    cfg: RunConfig, spec: RunSpec, log: Callable[[str], None], worker=None, ray: RaySettings | None = None
) -> tuple[RunSpec, dict | None]:
    """Search spec's method options named by --tune, cfg.tune_trials trials in all (resuming a stored search),
    on the validation split of the first seed's data — in this process with worker, or as Ray tasks (in
    waves as wide as the cluster; trials there are not pruned, their epochs are reported afterwards). Return
    the spec with the chosen options and the search's record (None when nothing is searched for it)."""
    import optuna
    from optuna.trial import TrialState

    names = tuned_options(cfg.tune, spec.method)
    if not names:
        return spec, None
    space = space_of(spec.method, names)
    seed, budget = cfg.seeds[0], cfg.tune_trials
    path = Path(cfg.out) / STORAGE_DIR / f"{_slug(spec.key)}.db"
    storage = _storage(path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = max(2, budget // 3)  # random trials before TPE models the space
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    # prune after the second epoch at the earliest: the first one is mostly warm-up. Steps are epochs
    # (1, 2, ...) and Optuna prunes from step == n_warmup_steps on, so 2 means "from epoch 2"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=2)
    study = optuna.create_study(
        study_name=spec.key,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        # left RUNNING by a process that was killed (the caller holds the search's lock: no live one): not finished
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    count = lambda: len(study.get_trials(deepcopy=False, states=finished))  # noqa: E731
    done = count()
    if done < budget:
        log(
            f"{spec.key}: searching {', '.join(names)} on the validation split: trials {done + 1}-{budget} of "
            f"{budget}" + (f" ({done} finished before, kept)" if done else "") + (" on Ray" if ray else "")
        )
    if ray is None:
        task = worker.data(seed, spec.per_class)
        if not len(task.val):
            raise UserError("a search needs a validation split, and it is empty here; check --val-size")
        while count() < budget:
            study.optimize(
                lambda trial: _objective(trial, worker, spec, space, task, seed),
                n_trials=1,
                catch=(),
                gc_after_trial=True,
            )
    else:
        from .cluster import quiet, ray_init, ray_map, ray_slots

        ray_init(ray.address)
        while count() < budget:
            wave = [study.ask() for _ in range(min(budget - count(), ray_slots(ray.cpus_per_run, ray.gpus_per_run)))]
            calls = [(quiet(cfg), spec, {n: _suggest(t, n, space[n]) for n in names}) for t in wave]
            by_params = {id(c): t for c, t in zip(calls, wave)}
            for args, (curve, diverged) in ray_map(
                _trial_remote, calls, ray.address, ray.cpus_per_run, ray.gpus_per_run
            ):
                trial = by_params[id(args)]
                for epoch, acc in enumerate(curve, 1):
                    trial.report(acc, epoch)
                if diverged:
                    trial.set_user_attr("diverged", True)
                study.tell(trial, 0.0 if diverged else max(curve) if curve else 0.0)
    trials = study.get_trials(deepcopy=False, states=finished)
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number), default=None)
    if best is None:
        raise UserError(f"{spec.key}: every trial of the search was pruned; raise --tune-trials or --epochs")
    chosen = {k: best.params[k] for k in names}
    record = {
        "searched": names,
        "space": space,
        "budget": budget,
        "seed": seed,
        "objective": "validation accuracy of the checkpoint kept (--checkpoint), on the first seed's data",
        "sampler": f"TPE (seed {seed}, {startup} random trials first)",
        "pruner": (
            f"median of the trials' validation accuracy per epoch, from epoch 2 (after {startup} trials)"
            if ray is None
            else "none (trials ran as Ray tasks)"
        ),
        "storage": str(path.relative_to(cfg.out)),
        "trials": [
            {
                "number": t.number,
                "params": dict(t.params),
                "value": t.value,
                "state": t.state.name.lower(),
                "epochs": len(t.intermediate_values),
                **({"diverged": True} if t.user_attrs.get("diverged") else {}),
            }
            for t in sorted(trials, key=lambda t: t.number)
        ],
        "chosen": chosen,
        "best_value": best.value,
        "best_trial": best.number,
    }
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items())
    log(f"{spec.key}: chose {shown} (validation accuracy {best.value:.3f}, trial {best.number} of {budget})")
    return dataclasses.replace(spec, options=dataclasses.replace(spec.options, **chosen)), record


def _train_trial(worker, spec: RunSpec, options, task, seed: int, callbacks: list):
    """One trial's training: the final runs' settings, no test split."""
    from .worker import prepare

    cfg = worker.cfg
    prepared, _ = prepare(cfg, spec.method, options, task, seed, lambda s: None)
    tcfg = cfg.train_config(task)
    callbacks = callbacks + ([EarlyStopping(tcfg.early_stop)] if tcfg.early_stop else [])
    return fit(
        prepared,
        task,
        worker.spec,
        tcfg,
        options.lr,
        seed,
        worker.accelerator,
        progress=False,
        callbacks=callbacks,
        score_test=False,
        measure_memory=False,  # a trial's memory is its final run's
    )


def _objective(trial, worker, spec: RunSpec, space: dict, task, seed: int) -> float:
    import optuna

    values = {name: _suggest(trial, name, s) for name, s in space.items()}
    try:
        options = dataclasses.replace(spec.options, **values)
    except UserError as e:  # a combination the method refuses (e.g. a target rank above the initial one)
        trial.set_user_attr("invalid", str(e))
        raise optuna.TrialPruned() from e

    def report(record: dict) -> None:
        trial.report(record["val_accuracy"], record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    try:
        out = _train_trial(worker, spec, options, task, seed, [report])
    except Diverged:
        trial.set_user_attr("diverged", True)
        return 0.0  # a diverging configuration is the worst there is, not a missing one
    return float(out.val["accuracy"])


def _trial_remote(cfg: RunConfig, spec: RunSpec, values: dict) -> tuple[list[float], bool]:
    """Inside a Ray worker: one trial -> (validation accuracy per epoch, diverged)."""
    import warnings

    from .worker import Worker

    warnings.filterwarnings("ignore", category=FutureWarning)
    worker = Worker(cfg, log=lambda s: None)
    seed = cfg.seeds[0]
    task = worker.data(seed, spec.per_class)
    curve: list[float] = []
    try:
        options = dataclasses.replace(spec.options, **values)
        _train_trial(worker, spec, options, task, seed, [lambda r: curve.append(r["val_accuracy"])])
    except Diverged:
        return curve, True
    except UserError:
        return [], False
    return curve, False
