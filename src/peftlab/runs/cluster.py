"""Many runs on many machines: each run of a sweep as a Ray task, results in the usual folder layout.

One run across several processes needs no code here: `accelerate launch` / `torchrun` start the
processes, and train.fit splits every batch and the evaluation across them (see README).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..config import RunConfig, RunSpec
from ..errors import UserError


def _run_remote(cfg: RunConfig, spec: RunSpec, tuning: dict | None) -> dict:
    """Inside a Ray worker: one run, written to cfg.out like a local run."""
    import warnings

    from .worker import Worker

    warnings.filterwarnings("ignore", category=FutureWarning)
    return Worker(cfg, log=lambda s: None).attempt(spec, tuning, wait=True)


def ray_init(address: str):
    """Ray, started here ('local') or connected to a cluster ('auto', 'ray://head:10001') once."""
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed; install it with: pip install 'peftlab[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        ray.init(**kwargs) if address == "local" else ray.init(address=address, **kwargs)
    return ray


def ray_map(fn, calls: list[tuple], address: str, cpus_per_run: float = 1, gpus_per_run: float | None = None):
    """Run fn(*args) for each args in calls as Ray tasks ('local' starts a Ray instance on this machine; else
    a cluster address such as 'auto' or 'ray://head:10001'); yield (args, result) as they finish. A
    UserError inside a task stops everything, as it would locally."""
    import torch

    ray = ray_init(address)
    gpus = (1 if torch.cuda.is_available() else 0) if gpus_per_run is None else gpus_per_run
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus, max_retries=0)(fn)
    pending = {remote.remote(*args): args for args in calls}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        args = pending.pop(ready[0])
        try:
            yield args, ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):  # bad input: stop as a local run would
                raise e.cause from None
            raise UserError(f"a Ray task crashed: {e.cause!r}") from None


def ray_slots(cpus_per_run: float = 1, gpus_per_run: float | None = None) -> int:
    """How many tasks of this size the Ray cluster runs at once."""
    import ray
    import torch

    res = ray.cluster_resources()
    gpus = (1 if torch.cuda.is_available() else 0) if gpus_per_run is None else gpus_per_run
    slots = res.get("CPU", 1) // cpus_per_run
    if gpus:
        slots = min(slots, res.get("GPU", 0) // gpus)
    return max(1, int(slots))


def quiet(cfg: RunConfig) -> RunConfig:
    """The configuration for a Ray worker: it prints nothing; the driver reports."""
    return dataclasses.replace(cfg, quiet=True)


def ray_execute(
    cfg: RunConfig,
    specs: list[RunSpec],
    address: str,
    log: Callable[[str], None],
    tuning: dict[str, dict] | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float | None = None,
) -> dict[str, dict]:
    """Send each spec to Ray; return {run name: result} as the runs finish. tuning: {RunSpec.key: search record}."""
    calls = [(quiet(cfg), s, (tuning or {}).get(s.key)) for s in specs]
    log(f"ray: {len(specs)} run(s) submitted ({cpus_per_run} CPU each)")
    out: dict[str, dict] = {}
    for (_, s, _), r in ray_map(_run_remote, calls, address, cpus_per_run, gpus_per_run):
        out[s.name] = r
        log(
            f"{s.label} seed {s.seed}: {r['status']}"
            + (
                f", test accuracy {r['metrics']['test']['accuracy']:.3f}"
                if r["status"] == "ok"
                else f" — {r.get('error')}"
            )
        )
    return out
