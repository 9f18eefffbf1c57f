"""The house: one-way imports, no import circle, torch and matplotlib only where they belong,
and a thin CLI (the engine's contract is in test_engine_contract.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "costsim"


def _imports() -> dict[str, set[str]]:
    """Every costsim module -> the modules it imports anywhere (top level or inside functions)."""
    graph = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = deps
    return {m: {d for d in deps if d in graph or not d.startswith("costsim")} - {m} for m, deps in graph.items()}


GRAPH = _imports()


def test_no_import_circle_among_costsim_modules():
    inner = {m: {d for d in deps if d in GRAPH} for m, deps in GRAPH.items()}
    # a package's __init__ importing its own submodules is registration, not a dependency
    inner = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in inner.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in inner[m]:
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in inner:
        if m not in state:
            visit(m, [m])


def test_the_engine_imports_nothing_above_it():
    allowed_costsim = {"costsim.specs", "costsim.units", "costsim.errors"}
    banned = ("torch", "matplotlib", "typer", "rich", "yaml", "pandas", "json", "pathlib", "costsim.cli",
              "costsim.reports", "costsim.registry", "costsim.calibration", "costsim.hf", "costsim.files")
    for m, deps in GRAPH.items():
        if not m.startswith("costsim.simulator"):
            continue
        for d in deps:
            assert not d.startswith(banned), f"{m} imports {d}"
            if d.startswith("costsim"):
                assert d.startswith("costsim.simulator") or d in allowed_costsim, f"{m} imports {d}"


def test_only_calibration_imports_torch_and_only_reports_matplotlib():
    for m, deps in GRAPH.items():
        if any(d.split(".")[0] == "torch" for d in deps):
            assert m.startswith("costsim.calibration"), m
        if any(d.split(".")[0] == "matplotlib" for d in deps):
            assert m == "costsim.reports.plots", m


def test_cli_modules_are_small_and_model_free():
    for f in (PKG / "cli").glob("*.py"):
        lines = f.read_text().splitlines()
        assert len(lines) < 300, f"{f.name}: {len(lines)} lines"
        deps = GRAPH[f"costsim.cli.{f.stem}" if f.stem != "__init__" else "costsim.cli"]
        # the CLI asks the engine's entries (scenario, layout) and formatters, never the formulas
        formulas = {"operators", "roofline", "parallel", "memory", "serving", "params", "flops", "deployment", "training"}
        used = {d.split(".")[2] for d in deps if d.startswith("costsim.simulator.")}
        assert not used & formulas, f"{f.name} reaches into {used & formulas}"
