"""shax_core's imports form layers: no cycle, lower layers never import upper ones.

The import graph is read from the source (AST), so an import inside a function counts as
much as one at the top of a module. ``import a.b.c`` depends on ``a.b.c`` and on the package
``a.b`` (whose ``__init__`` runs first), unless ``a.b`` contains the importing module (Python
initializes a module's own packages before the module in any case); the root package
``shax_core`` (the public namespace, which imports everything) counts only where a module names
it itself.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import shax_core

ROOT = Path(shax_core.__file__).parent
PACKAGE = "shax_core"

# (module, the only shax_core modules it may import; a trailing "." means "and submodules")
LAYERS = {
    "shax_core.ir": (),
    "shax_core.registry": ("shax_core.ir",),
    "shax_core.core": ("shax_core.ir", "shax_core.registry"),
    "shax_core.primitives.": (
        "shax_core.ir",
        "shax_core.registry",
        "shax_core.core",
        "shax_core.primitives.",
    ),
    "shax_core._verify": ("shax_core.ir", "shax_core.registry"),
    "shax_core.text": ("shax_core.ir", "shax_core.registry"),
    "shax_core.wire": ("shax_core.ir",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, name: str, modules) -> set[str]:
    """Every shax_core module that ``path`` (module ``name``) imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    own = name.split(".")
    ancestors = {".".join(own[:k]) for k in range(1, len(own))}

    def depend(target: str) -> None:
        parts = target.split(".")
        for k in range(2, len(parts)):  # the packages on the way, not the root
            prefix = ".".join(parts[:k])
            if prefix in modules and prefix not in ancestors:
                found.add(prefix)
        found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    found.add(PACKAGE)
                elif alias.name.startswith(PACKAGE + "."):
                    depend(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    depend(sub)
                elif base == PACKAGE:
                    found.add(PACKAGE)
                else:
                    depend(base)  # a name defined in the module (or package) itself
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` in the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"y2"}, "y2": {"y"}}) == ["y", "y2", "y"]


def test_function_local_imports_count(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from shax_core.text import print_program\n")
    assert imports_of(src, "shax_core.ir", all_modules()) == {"shax_core.text"}


def test_shax_core_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 20
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _allowed(target: str, allowed) -> bool:
    return any(target == a or (a.endswith(".") and target.startswith(a)) for a in allowed)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_lower_layers_import_only_below(layer):
    graph = import_graph()
    members = [m for m in graph if m == layer or (layer.endswith(".") and m.startswith(layer))]
    members += [layer[:-1]] if layer.endswith(".") else []
    assert members
    for m in members:
        bad = {t for t in graph[m] if not _allowed(t, LAYERS[layer])}
        assert not bad, f"{m} imports {sorted(bad)}, above its layer"


def test_no_public_name_shadows_a_module():
    """``import shax_core.x as m`` binds the module x for every submodule of every package."""
    for pkg_name in [PACKAGE] + [
        m.name for m in pkgutil.walk_packages(shax_core.__path__, PACKAGE + ".") if m.ispkg
    ]:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            sub = importlib.import_module(f"{pkg_name}.{info.name}")
            assert getattr(pkg, info.name) is sub, (
                f"{pkg_name}.{info.name} is {getattr(pkg, info.name)!r}, not the module"
            )
