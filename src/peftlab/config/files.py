"""Reading options (a YAML/JSON --config file plus the command line, protocol presets) into a checked
RunConfig, and writing a folder's effective configuration as config.yaml."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from .run import CLI_ONLY, RunConfig, run_fields
from .values import coerce

META_KEY = "meta"  # config.yaml's section of facts about the run (version, commit); not an option


# what each protocol sets, unless the run sets it itself
PROTOCOLS = {
    "vtab-1k": {"train_size": 800, "val_size": 200, "test_size": 0, "refit": "train+val"},
    "few-shot": lambda k: {"train_per_class": k, "val_per_class": k, "test_size": 0, "seeds": [0, 1, 2]},
}


def protocol_values(name: str) -> dict[str, Any]:
    """The options a --protocol stands for (vtab-1k, few-shot:K)."""
    base, _, arg = name.partition(":")
    if base == "vtab-1k" and not arg:
        return dict(PROTOCOLS["vtab-1k"])
    if base == "few-shot" and arg.isdigit() and int(arg) >= 1:
        return PROTOCOLS["few-shot"](int(arg))
    raise UserError(f"unknown --protocol '{name}'; use vtab-1k or few-shot:K (K images per class, e.g. few-shot:5)")


def read_file(path: str) -> dict[str, Any]:
    """A YAML or JSON config: RunConfig keys at the top, method options in a section per method; a
    'meta' section (written into config.yaml: version, commit) is not an option and is dropped."""
    from ..methods import REGISTRY

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{path}' does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"config file '{path}' is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from e
    except OSError as e:
        raise UserError(f"cannot read config file '{path}' ({e.strerror})") from e
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys) if p.suffix == ".json" else _load_yaml(text)
    except UserError as e:
        raise UserError(f"config file '{path}': {e}") from e
    except Exception as e:  # noqa: BLE001 - yaml and json raise different types; both mean "not parseable"
        first = " ".join(str(e).split())  # yaml's messages span lines: one line here
        raise UserError(f"cannot parse config file '{path}': {first}") from e
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of options")
    data.pop(META_KEY, None)
    for key in CLI_ONLY:
        if key in data:
            raise UserError(
                f"config file '{path}' sets '{key}': a file never turns that on; pass --{key.replace('_', '-')} "
                "on the command line if you mean it"
            )
    for k, v in data.items():  # a method's section must be a mapping, e.g. lora: {r: 4}
        if str(k) in REGISTRY and v is not None and not isinstance(v, dict):
            raise UserError(f"config file '{path}': '{k}' must be a mapping of {k} options (e.g. {k}: {{lr: 0.001}})")
    return data


def _unique_keys(pairs: list[tuple]) -> dict:
    """A mapping from key-value pairs; a key given twice is an error (JSON and YAML would keep the last)."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise UserError(f"'{k}' is given twice in one mapping; give each key once")
        out[k] = v
    return out


def _load_yaml(text: str):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        loader.flatten_mapping(node)  # YAML merge keys (<<) first, as SafeLoader does
        pairs = [(loader.construct_object(k, deep=True), loader.construct_object(v, deep=True)) for k, v in node.value]
        try:
            return _unique_keys(pairs)
        except UserError as e:
            raise UserError(f"line {node.start_mark.line + 1}: {e}") from None

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader) or {}  # noqa: S506 - a SafeLoader, with unique keys


def method_config(name: str, opts: dict[str, Any] | None):
    """{option: value} for one method -> its checked config dataclass."""
    from ..methods import get

    cls = get(name).config_cls
    allowed = {f.name for f in fields(cls)}
    if opts is not None and not isinstance(opts, dict):
        raise UserError(f"{name} options must be a mapping of option: value (got {opts!r})")
    opts = {str(k).replace("-", "_"): v for k, v in (opts or {}).items()}
    bad = sorted(set(opts) - allowed)
    if bad:
        raise UserError(f"unknown {name} option(s): {', '.join(bad)}; {name} takes: {', '.join(sorted(allowed))}")
    try:
        return cls(**coerce(cls, opts, f"{name}."))
    except TypeError as e:
        raise UserError(f"bad {name} options: {e}") from e


def build(values: dict[str, Any]) -> RunConfig:
    """Flat run options plus {method: {option: value}} sections -> a checked RunConfig."""
    from ..methods import REGISTRY

    values = {str(k).replace("-", "_") if str(k) not in REGISTRY else str(k): v for k, v in values.items()}
    known = {f.name for f in run_fields()}
    sections = {k: values.pop(k) for k in list(values) if k in REGISTRY}
    if "grid" in values:
        raise UserError("'grid' is a sweep file's key; run that file with 'peftlab sweep FILE'")
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(unknown)}; see 'peftlab run --help'")
    options = {name: method_config(name, opts) for name, opts in sections.items()}
    if values.get("protocol"):  # the preset fills what the run does not set itself
        preset = protocol_values(str(values["protocol"]))
        for role in ("train", "val"):  # a size the run gives replaces the preset's per-class count
            if f"{role}_size" in values:
                preset.pop(f"{role}_per_class", None)
        values = preset | values
    try:
        return RunConfig(**coerce(RunConfig, values, "--"), method_options=options)
    except TypeError as e:
        raise UserError(f"bad option value: {e}") from e


def git_commit() -> str | None:
    """The commit of the peftlab checkout this code runs from, '+dirty' when it has uncommitted changes;
    None for an installed wheel."""
    here = str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    if head.returncode or len(commit) != 40:
        return None
    return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def config_yaml(values: dict[str, Any], command: str = "run") -> str:
    """The effective configuration as YAML that 'peftlab <command> --config FILE' (run) or 'peftlab sweep
    FILE' reads back; its 'meta' section records the peftlab version and git commit."""
    import yaml

    from .. import __version__

    meta = {"peftlab_version": __version__, "git_commit": git_commit(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rerun = "peftlab run --config FILE" if command == "run" else "peftlab sweep FILE"
    header = f"# The effective configuration of this folder's runs, every option included. Rerun: {rerun}\n"
    body = yaml.safe_dump({**values, META_KEY: meta}, sort_keys=False, allow_unicode=True)
    return header + body


# config.yaml is a folder's configuration: a later command on the folder may add runs (these keys name which
# runs), never change how they are made; the others say where and how a command printed, not what it ran
RUN_SET_KEYS = ("methods", "seeds", "grid", "baselines")
NOT_CONFIG = ("out", "quiet", "protocol", META_KEY)


def as_yaml_values(values: dict[str, Any]) -> dict[str, Any]:
    """values as config.yaml holds them once read back (tuples as lists ...), so that the two compare."""
    import yaml

    return yaml.safe_load(yaml.safe_dump(values, sort_keys=False, allow_unicode=True))


def conflicts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The options on which two folder configurations (config.yaml values) disagree about how runs are made,
    as 'key: old there, new here'; which runs each names (methods, seeds, grid, baselines) may differ, and
    so may the options of a method only one of them runs."""
    from ..methods import REGISTRY

    out = []
    for k in dict.fromkeys([*old, *new]):
        if k in RUN_SET_KEYS or k in NOT_CONFIG or (k in REGISTRY and (k not in old or k not in new)):
            continue
        if old.get(k) != new.get(k):
            out.append(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here")
    return out


def covers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether configuration a names every run configuration b names (its methods, seeds and baselines; a
    sweep's grid points)."""

    def within(x, y) -> bool:
        y = y if isinstance(y, list) else [y]
        return all(v in y for v in (x if isinstance(x, list) else [x]))

    if ("grid" in a) != ("grid" in b) or not within(b.get("seeds") or [], a.get("seeds") or []):
        return False
    if not within(b.get("baselines") or [], a.get("baselines") or []):
        return False
    if "grid" not in b:
        return within(b.get("methods") or [], a.get("methods") or [])
    ga, gb = a.get("grid") or {}, b.get("grid") or {}
    for method, options in gb.items():
        oa, ob = ga.get(method, None), options or {}
        if method not in ga or set(oa or {}) != set(ob):
            return False
        if not all(within(v, (oa or {})[k]) for k, v in ob.items()):
            return False
    return True
