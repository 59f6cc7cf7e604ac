"""Layers import only downward, with no cycles (read from the source with ``ast``, not run).

Every module under ``captioning/`` is parsed; each ``import a.b`` / ``from a import b`` /
relative import anywhere in it (in functions and ``TYPE_CHECKING`` blocks too) is an edge to
the module it names. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` when the
importer is outside ``a.b``, so that is an edge as well: a cycle through a package's
re-exports is a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "captioning"

# Among our modules, what a layer may import besides itself (a prefix covers its submodules).
ONLY = {
    "captioning.files": set(),  # strict/atomic writing: a leaf
    "captioning.text": set(),  # tokenizer, vocabulary, word forms
    "captioning.data": {"captioning.text", "captioning.files"},
    "captioning.metrics": {"captioning.text", "captioning.files"},
    "captioning.decoding": {"captioning.models.state"},  # the step contract's state helpers
}
# What a layer must never import.
NEVER = {
    "captioning.models": {"captioning.data", "captioning.metrics", "captioning.extract"},
    # region extraction wires data and models (images and encoders in, files out) and sits
    # below the entry points that caption with it: caption.py imports it, never the reverse
    "captioning.extract": {
        "captioning.metrics",
        "captioning.objectives",
        "captioning.decoding",
        "captioning.module",
        "captioning.wiring",
        "captioning.scst",
        "captioning.train",
        "captioning.eval",
        "captioning.caption",
        "captioning.report",
    },
    "captioning": {"benchmarks", "tests"},  # a library: no repository folders
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (ours resolved to a module, others by their top name)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    resolved = set()
    for target in found:
        while target not in known and "." in target and within(target, "captioning"):
            target = target.rsplit(".", 1)[0]  # `import a.b.attr`: the module is a.b
        resolved.add(target)
    return resolved


def import_graph(packages: bool = True) -> dict[str, set[str]]:
    """Module -> the modules it imports (other than ours, by name: ``benchmarks``, ``torch``);
    with ``packages``, also the package ``__init__`` s those imports run."""
    paths = modules()
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        edges = set()
        for target in imported_names(name, path, known):
            edges.add(target)
            parts = target.split(".")
            for cut in range(1, len(parts) if packages else 1):  # unless already running
                package = ".".join(parts[:cut])
                if package in known and not within(name, package):
                    edges.add(package)
        graph[name] = {t for t in edges if t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own nodes, as a path that ends where it starts."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node] & graph.keys()):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    violations = []
    for name, targets in sorted(graph.items()):
        for layer, allowed in ONLY.items():
            if within(name, layer):
                violations += [
                    f"{name} imports {t} ({layer} may import only {sorted(allowed) or 'itself'})"
                    for t in sorted(targets)
                    if within(t, "captioning")
                    and not within(t, layer)
                    and not any(within(t, a) for a in allowed)
                ]
        for layer, banned in NEVER.items():
            if within(name, layer):
                violations += [
                    f"{name} imports {t} ({layer} must not import {b})"
                    for t in sorted(targets)
                    for b in sorted(banned)
                    if within(t, b)
                ]
    return violations


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert {"captioning.text", "captioning.data", "captioning.metrics", "captioning.models"} <= set(
        graph
    )
    assert "captioning.models.state" in graph["captioning.decoding"]
    assert "captioning.metrics" in graph["captioning.module"]  # a package's re-exports
    # importing captioning.models.state runs the captioning.models package first
    assert "captioning.models" in graph["captioning.decoding"]
    assert "captioning.models" not in import_graph(packages=False)["captioning.decoding"]


def test_a_cycle_and_a_violation_are_reported(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    bad = {
        "captioning.data.x": {"captioning.metrics.y"},
        "captioning.models.z": {"captioning.data"},
    }
    assert layer_violations(bad) == [
        "captioning.data.x imports captioning.metrics.y (captioning.data may import only "
        "['captioning.files', 'captioning.text'])",
        "captioning.models.z imports captioning.data (captioning.models must not import "
        "captioning.data)",
    ]


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_import_only_downward() -> None:
    # what a module names itself: importing captioning.models.state runs captioning.models,
    # which decoding cannot help
    violations = layer_violations(import_graph(packages=False))
    assert not violations, "\n".join(violations)
