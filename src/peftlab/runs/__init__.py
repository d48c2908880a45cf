"""Runs: one run and the Worker that runs many (worker), a comparison with resume (executor), sweeps
(sweep), Ray (cluster), using what a run left (artifacts: reload, merge, predict, eval) and the bundled
model's pretraining (pretrain)."""

from .artifacts import evaluate_run, finished_result, load, load_run, merge, predict
from .executor import execute, run
from .worker import Worker, run_one

__all__ = [
    "Worker",
    "evaluate_run",
    "execute",
    "finished_result",
    "load",
    "load_run",
    "merge",
    "predict",
    "run",
    "run_one",
]
