"""Imports point down, with no circles: the layering docs/architecture.md describes, checked on the
source (every import, including the ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("fer_cli", "pipelines", "components", "fer_core")   # top to bottom


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources(package: str) -> list[Path]:
    return [path for path in (ROOT / package).rglob("*.py") if "tests" not in path.relative_to(ROOT).parts
            and path.name != "conftest.py"]


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for index, layer in enumerate(LAYERS):
        above = LAYERS[:index]
        for path in _sources(layer):
            for name in _imports(path):
                if name.split(".")[0] in above:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def _node(module: str) -> str:
    """fer_core.training.engine -> fer_core.training; fer_cli.demo -> fer_cli.demo (modules of the CLI)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_circles_between_the_parts_of_a_layer():
    graph: dict[str, set[str]] = {}
    for layer in ("fer_core", "fer_cli", "pipelines"):
        for path in _sources(layer):
            relative = path.relative_to(ROOT).with_suffix("")
            source = _node(".".join(part for part in relative.parts if part != "__init__"))
            for name in _imports(path):
                target = _node(name)
                where = ROOT / Path(*target.split("."))
                if name.split(".")[0] == layer and target != source and (where.is_dir() or where.with_suffix(".py").is_file()):
                    graph.setdefault(source, set()).add(target)
    assert {"fer_core.data", "fer_core.metrics"} <= graph["fer_core.training"]  # the graph sees real edges
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in trail:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif len(trail) < 12:
                visit(target, trail + [target])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "\n".join(sorted(set(cycles)))


# Servers, proxies and auth are adopted (TorchServe, nginx, the mesh), never written: no module of
# ours may import what it takes to implement an HTTP server.
SERVER_MODULES = ("http.server", "socketserver", "wsgiref.simple_server", "aiohttp.web", "flask", "fastapi",
                  "uvicorn", "tornado.web", "twisted.web")


def test_no_module_implements_an_http_server():
    found = [f"{path.relative_to(ROOT)} imports {name}" for layer in LAYERS for path in _sources(layer)
             for name in _imports(path) if any(name == module or name.startswith(module + ".")
                                               for module in SERVER_MODULES)]
    assert not found, "\n".join(found)
