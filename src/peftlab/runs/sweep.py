"""Sweeps: a YAML/JSON file = run options + a grid of method options; expanded into RunSpecs.

    model: peftlab-vit-tiny
    dataset: fashion-mnist:3,4,6,7,9
    seeds: [0, 1, 2]
    epochs: 3
    grid:
      head: {}
      lora: {r: [4, 8, 16], lr: [0.001, 0.005]}
      last: {blocks: [1, 2]}

Each grid entry is the cartesian product of its option lists; every run is a folder under `out`
(default: runs/<file name>), so rerunning the same file resumes it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..config import CLI_ONLY, RunConfig, RunSpec, build, method_config, read_file, run_fields
from ..errors import UserError
from ..methods import REGISTRY


def expand(grid: dict, seeds: list[int], lr: float | None = None) -> list[RunSpec]:
    if not isinstance(grid, dict) or not grid:
        raise UserError("the sweep's 'grid' must map method names to option lists, e.g. {lora: {r: [4, 8]}}")
    configs: list[tuple[str, str, object]] = []
    for method, options in grid.items():
        if method not in REGISTRY:
            raise UserError(f"unknown method '{method}' in the sweep grid; available: {', '.join(REGISTRY)}")
        options = options or {}
        if not isinstance(options, dict):
            raise UserError(f"grid entry '{method}' must be a mapping of options (got {options!r})")
        keys = list(options)
        values = [v if isinstance(v, list) else [v] for v in options.values()]
        for k, v in zip(keys, values):
            if not v:
                raise UserError(f"grid entry '{method}': '{k}' is an empty list, which makes no runs; give it values")
        for combo in itertools.product(*values):
            opts = dict(zip(keys, combo))
            if lr is not None and "lr" not in opts:
                opts["lr"] = lr
            label = " ".join([method] + [f"{k}={v}" for k, v in zip(keys, combo)])
            configs.append((method, label, method_config(method, opts)))
    labels = [c[1] for c in configs]
    if len(set(labels)) != len(labels):
        raise UserError("the sweep grid names the same configuration twice")
    return [RunSpec(m, opts, seed, label) for seed in seeds for m, label, opts in configs]


def load(path: str, out: str | None = None, trust_remote_code: bool = False) -> tuple[RunConfig, list[RunSpec], dict]:
    """The sweep file -> its run options, its runs, and the settings config.yaml records (every run
    option, defaults included, and the grid): 'peftlab sweep OUT/config.yaml' reruns it. A file without a
    'grid' runs its methods as 'peftlab run' would; a 'grid' that is empty is an error."""
    values = read_file(path)
    has_grid = "grid" in values
    grid = values.pop("grid", None)
    values.setdefault("out", str(Path("runs") / Path(path).stem))
    if out:
        values["out"] = out
    if trust_remote_code:
        values["trust_remote_code"] = True
    if has_grid:
        if not isinstance(grid, dict) or not grid:
            expand(grid, [])  # raises the message about the grid's shape
        values["methods"] = list(grid)
    cfg = build(values)
    specs = expand(grid, cfg.seeds, cfg.lr) if has_grid else cfg.plan()
    if not has_grid:
        return cfg, specs, cfg.to_dict()
    return cfg, specs, {f.name: getattr(cfg, f.name) for f in run_fields() if f.name not in CLI_ONLY} | {"grid": grid}
