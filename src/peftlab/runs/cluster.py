"""Many runs on many machines: each run of a sweep as a Ray task, results in the usual folder layout.

One run across several processes needs no code here: `accelerate launch` / `torchrun` start the
processes, and train.fit splits every batch and the evaluation across them (see README).
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import RunConfig, RunSpec
from ..errors import UserError


def _run_remote(cfg: RunConfig, spec: RunSpec) -> dict:
    """Inside a Ray worker: one run, written to cfg.out like a local run."""
    import warnings

    from .worker import Worker

    warnings.filterwarnings("ignore", category=FutureWarning)
    return Worker(cfg, log=lambda s: None).attempt(spec)


def ray_execute(
    cfg: RunConfig,
    specs: list[RunSpec],
    address: str,
    log: Callable[[str], None],
    cpus_per_run: float = 1,
    gpus_per_run: float | None = None,
) -> dict[str, dict]:
    """Send each spec to Ray ('local' starts a Ray instance on this machine; else a cluster address such
    as 'auto' or 'ray://head:10001'); return {run name: result} as the runs finish."""
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed; install it with: pip install 'peftlab[ray]'") from None
    import torch

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        ray.init(**kwargs) if address == "local" else ray.init(address=address, **kwargs)
    gpus = (1 if torch.cuda.is_available() else 0) if gpus_per_run is None else gpus_per_run
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus, max_retries=0)(_run_remote)
    quiet_cfg = RunConfig(**{**cfg.__dict__, "quiet": True})  # workers print nothing; the driver reports
    pending = {remote.remote(quiet_cfg, s): s for s in specs}
    out: dict[str, dict] = {}
    log(f"ray: {len(specs)} run(s) submitted ({cpus_per_run} CPU, {gpus} GPU each)")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        s = pending.pop(ready[0])
        try:
            out[s.name] = ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):  # bad input: stop as a local run would
                raise e.cause from None
            raise UserError(f"Ray task for {s.name} crashed: {e.cause!r}") from None
        r = out[s.name]
        log(
            f"{s.label} seed {s.seed}: {r['status']}"
            + (f", accuracy {r['metrics']['accuracy']:.3f}" if r["status"] == "ok" else f" — {r.get('error')}")
        )
    return out
