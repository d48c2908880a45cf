"""The package's shape: no import circles, a report layer without torch, one registry where a method is
one place, results with a schema, and run folders that rerun themselves."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import peftlab
from peftlab import methods as M
from peftlab import theory
from peftlab.errors import UserError
from peftlab.results import SCHEMA_VERSION, load_result, load_results

from .conftest import read_json
from .helpers import make_result, run_args, run_cli

SRC = Path(peftlab.__file__).parent


# ---------------------------------------------------------------- import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(name: str) -> bool:
    return (SRC.parent / name.replace(".", "/") / "__init__.py").exists()


def _exists(name: str) -> bool:
    return _is_package(name) or (SRC.parent / (name.replace(".", "/") + ".py")).exists()


def import_graph() -> dict[str, set[str]]:
    """Module -> the peftlab modules it imports when it is imported (module-level statements only; imports
    inside functions and under TYPE_CHECKING run later or never). Importing a.b.c also runs the __init__
    of a and a.b, unless the importer is inside them (then they are already being imported)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for sub in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
                if isinstance(sub, ast.Import):
                    targets |= {a.name for a in sub.names if a.name.startswith("peftlab")}
                elif isinstance(sub, ast.ImportFrom):
                    if sub.level:
                        base = package.split(".")[: len(package.split(".")) - sub.level + 1]
                        mod = ".".join(base + ([sub.module] if sub.module else []))
                    else:
                        mod = sub.module or ""
                    if not mod.startswith("peftlab"):
                        continue
                    for a in sub.names:  # 'from pkg import module' imports the module
                        targets.add(f"{mod}.{a.name}" if _exists(f"{mod}.{a.name}") else mod)
        edges = set()
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                parent = ".".join(parts[:i])
                inside = name == parent or name.startswith(parent + ".")
                if _exists(parent) and (i == len(parts) or not inside) and parent != name:
                    edges.add(parent)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 30 and "peftlab.runs.worker" in graph["peftlab.runs"]
    assert cycles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_report_layer_imports_no_torch():
    code = "import sys, peftlab.report, peftlab.results, peftlab.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_is_giant():
    sizes = {p.relative_to(SRC): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert max(sizes.values()) <= 450, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_public_api_resolves():
    for name in peftlab.__all__:
        assert getattr(peftlab, name) is not None, name
    assert peftlab.__version__ == __import__("importlib.metadata").metadata.version("peftlab")


# ---------------------------------------------------------------- the registry
def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="method 'head' is registered twice"):
        M.register("head", M.HeadConfig, "again")(lambda *a: None)
    with pytest.raises(ValueError, match="search space names options it does not have"):
        M.register("x-new", M.HeadConfig, "x", search={"rank": M.Choice((1, 2))})(lambda *a: None)
    assert "x-new" not in M.REGISTRY


def test_a_method_without_formula_runs_and_is_reported_not_derived(
    tiny_vit, image_folder, tmp_path, capsys, monkeypatch
):
    bare = dataclasses.replace(M.REGISTRY["head"], name="bare", formula=None)
    monkeypatch.setitem(M.REGISTRY, "bare", bare)
    rc, out, err = run_cli(capsys, *run_args(tiny_vit, image_folder, tmp_path, "--methods", "bare,head", epochs=1))
    assert rc == 0, err
    r = read_json(tmp_path / "bare-seed0" / "result.json")
    assert r["status"] == "ok" and r["params"]["kind"] == theory.NOT_DERIVED and r["params"]["mismatches"] == []
    assert "not derived" in (tmp_path / "summary.md").read_text()
    assert read_json(tmp_path / "head-seed0" / "result.json")["params"]["theory_match"] is True


# ---------------------------------------------------------------- results
def test_every_result_carries_the_schema_and_older_ones_are_read(tmp_path):
    old = make_result("lora", 0, 0.7)
    del old["schema_version"], old["method_info"]  # as peftlab 0.1 wrote it
    (tmp_path / "lora-seed0").mkdir()
    (tmp_path / "lora-seed0" / "result.json").write_text(json.dumps(old))
    [r] = load_results(tmp_path)
    assert r["schema_version"] == SCHEMA_VERSION and r["method_info"] == {} and r["_path"].endswith("lora-seed0")
    newer = dict(old, schema_version=SCHEMA_VERSION + 1)
    (tmp_path / "lora-seed0" / "result.json").write_text(json.dumps(newer))
    with pytest.raises(UserError, match="written by a newer peftlab"):
        load_result(tmp_path / "lora-seed0" / "result.json")
    (tmp_path / "lora-seed0" / "result.json").write_text('{"status": "ok", "meth')
    with pytest.raises(UserError, match="it is not a complete result file"):
        load_result(tmp_path / "lora-seed0" / "result.json")


# ---------------------------------------------------------------- run folders rerun themselves
def test_config_yaml_reruns_the_folder(tiny_vit, image_folder, tmp_path, capsys):
    import yaml

    first = tmp_path / "first"
    args = run_args(tiny_vit, image_folder, first, "--methods", "head,lora-all", "--lora-all-r", "2", epochs=1)
    assert run_cli(capsys, *args, "--seeds", "0,1")[0] == 0
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["methods"] == ["head", "lora-all"] and saved["seeds"] == [0, 1]  # lists, not comma strings
    assert saved["lora-all"]["r"] == 2 and saved["head"]["lr"] == M.HeadConfig().lr  # defaults included
    assert saved["warmup_ratio"] == 0.1 and saved["lr"] is None
    assert saved["meta"]["peftlab_version"] == peftlab.__version__
    again = tmp_path / "again"
    rc, _, err = run_cli(capsys, "run", "--config", str(first / "config.yaml"), "--out", str(again))
    assert rc == 0, err
    for name in ("head-seed0", "lora-all-seed1"):
        a, b = read_json(first / name / "result.json"), read_json(again / name / "result.json")
        assert a["config"] == b["config"] and a["metrics"]["test"] == b["metrics"]["test"]
        assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
