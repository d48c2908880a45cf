"""peftlab: fine-tune a pretrained image classifier with many methods and compare them.

The public API (what the example notebook and the benchmarks use) is listed in __all__. Names are
imported on first use, so that `import peftlab` (and `import peftlab.report`) stays free of torch.

    import peftlab
    results = peftlab.run(peftlab.build_config({"methods": "head,lora", "epochs": 1}))
    md, html, plots = peftlab.build_report(results)
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> the module that defines it
_API = {
    "RunConfig": "peftlab.config",
    "RunSpec": "peftlab.config",
    "TrainConfig": "peftlab.config",
    "DataOptions": "peftlab.config",
    "build_config": ("peftlab.config", "build"),
    "UserError": "peftlab.errors",
    "run": "peftlab.runs",
    "execute": "peftlab.runs",
    "load_run": "peftlab.runs",
    "merge": "peftlab.runs",
    "load": "peftlab.runs",
    "predict": "peftlab.runs",
    "evaluate_run": "peftlab.runs",
    "REGISTRY": "peftlab.methods",
    "get_method": ("peftlab.methods", "get"),
    "load_task": "peftlab.data",
    "load_model": "peftlab.models",
    "bundled_path": "peftlab.models",
    "derive": "peftlab.theory",
    "load_config": "peftlab.theory",
    "load_results": "peftlab.results",
    "build_report": "peftlab.report",
    "write_report": "peftlab.report",
    "findings": "peftlab.report",
    "format_markdown": "peftlab.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'peftlab' has no attribute '{name}'")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
