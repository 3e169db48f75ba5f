"""The house's rules, read from the code's own imports (docs/architecture.md): the data flow one way
(schedule -> snapshot -> probe -> record -> fit -> diagnose -> report), the fitting core knows no
Trainer, the store knows no laws, and no two modules import each other. A new arrow that runs back
up fails here, with the file and the name it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "transfer_probe"
HEAVY = ("torch", "transformers", "accelerate", "datasets", "evaluate")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(mod: str) -> bool:
    p = ROOT.parent.joinpath(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function, resolved to the project's
    module (``from transfer_probe import laws`` -> ``transfer_probe.laws``)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if _exists(sub) else base)
    return out


GRAPH = {_module(p): _imports(p) for p in ROOT.rglob("*.py")}


def _project(deps):
    return {d for d in deps if d.startswith("transfer_probe.")}


def _matching(prefixes):
    return sorted(m for m in GRAPH if any(m == p or m.startswith(p + ".") for p in prefixes))


# The fitting core: pure numbers in, numbers out. It must run where no deep-learning stack is
# installed (a notebook reading a history) and cannot reach the training loop.
CORE = ("transfer_probe.laws", "transfer_probe.diagnose", "transfer_probe.compare",
        "transfer_probe.transferred", "transfer_probe.store", "transfer_probe.text")
TOP = ("transfer_probe.callback", "transfer_probe.cli", "transfer_probe.report", "transfer_probe.demo",
       "transfer_probe.posthoc", "transfer_probe.run", "transfer_probe.cli_args", "transfer_probe.cli_fit")


@pytest.mark.parametrize("mod", _matching(CORE))
def test_the_fitting_core_knows_no_trainer(mod):
    heavy = sorted(d for d in GRAPH[mod] if d.split(".")[0] in HEAVY)
    up = sorted(d for d in _project(GRAPH[mod]) if any(d == t or d.startswith(t + ".") for t in TOP))
    assert not heavy and not up, f"{mod} imports {heavy + up}"


@pytest.mark.parametrize("mod", ["transfer_probe.loop", "transfer_probe.loop_setup", "transfer_probe.loop_verdicts"])
def test_the_loop_knows_no_trainer(mod):
    # the callback and posthoc drive the loop; it never reaches back to a Trainer or to them
    bad = sorted(d for d in GRAPH[mod] if d.split(".")[0] == "transformers"
                 or d in ("transfer_probe.callback", "transfer_probe.posthoc", "transfer_probe.cli"))
    assert not bad, f"{mod} imports {bad}"


@pytest.mark.parametrize("mod", _matching(("transfer_probe.store", "transfer_probe.text")))
def test_the_store_and_the_words_know_no_laws(mod):
    bad = sorted(d for d in _project(GRAPH[mod]) if d.split(".")[1] in
                 ("laws", "diagnose", "frontier", "compare", "transferred", "report", "plugins"))
    assert not bad, f"{mod} imports {bad}"


@pytest.mark.parametrize("mod", _matching(("transfer_probe.sandbox",)))
def test_the_sandbox_stands_alone(mod):
    # the code that runs model-generated programs is read and checked on its own: it uses nothing else
    bad = sorted(d for d in _project(GRAPH[mod]) if not (d == "transfer_probe.sandbox"
                                                          or d.startswith("transfer_probe.sandbox.")))
    assert not bad, f"{mod} imports {bad}"


def test_nothing_below_imports_the_entry_points():
    # the callback is the public facade's; cli/demo/report sit at the top
    allowed = {"transfer_probe.callback": {"transfer_probe", "transfer_probe.demo"},
               "transfer_probe.cli": set(),
               "transfer_probe.loop": {"transfer_probe.callback", "transfer_probe.posthoc"},
               "transfer_probe.demo": {"transfer_probe.cli", "transfer_probe.cli_args"},
               "transfer_probe.report": {"transfer_probe.cli", "transfer_probe.demo"}}
    for target, who in allowed.items():
        # a package's own modules import each other; an allowed importer may be a package (demo/)
        users = {m for m, deps in GRAPH.items() if target in deps and m != target and not m.startswith(target + ".")}
        bad = {u for u in users if not any(u == w or u.startswith(w + ".") for w in who)}
        assert not bad, f"{sorted(bad)} import {target}"


def test_no_two_modules_import_each_other():
    # the package root is the public facade (re-exports); importing from it is not an arrow back
    graph = {m: _project(d) - {m, "transfer_probe"} for m, d in GRAPH.items() if m != "transfer_probe"}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        seen[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if seen.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d in graph and d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)


def test_plugins_use_only_public_names():
    # a plugin importing a private helper breaks on any refactor of the core; the base classes expose
    # what subclasses need (Executor.as_jobs, Executor.skip)
    bad = []
    for path in (ROOT.parent / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transfer_probe"):
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


def test_one_json_conversion_with_its_two_conventions():
    import math

    import numpy as np

    from transfer_probe.diagnose.verdict import jsonable
    from transfer_probe.jsonable import to_json
    from transfer_probe.laws.result import _jsonable
    from transfer_probe.sinks import to_jsonable

    value = {"a": np.float64("nan"), "b": [np.int64(3), math.inf], "c": np.array([1.5, -math.inf])}
    assert jsonable(value) == to_jsonable(value) == {"a": None, "b": [3, None], "c": [1.5, None]}
    assert _jsonable(value) == to_json(value, nonfinite="string") == {"a": "nan", "b": [3, "inf"], "c": [1.5, "-inf"]}
    assert float(_jsonable(math.inf)) == math.inf  # a reader gets the value back
    with pytest.raises(ValueError, match="nonfinite must be"):
        to_json(1.0, nonfinite="nan")
