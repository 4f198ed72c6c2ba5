"""The package layout: every module imports on its own, no import cycles, layers import down.

The import graph is read from the AST of every module under ``scoregen/`` and includes
imports inside functions (a lazy import hides a cycle from Python, not from a reader).
An edge ``a -> b`` means module ``a`` names module ``b`` in an import statement; the implicit
import of a parent package is not an edge (as in Python's own semantics and import linters).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import scoregen

ROOT = Path(scoregen.__file__).parent
# layers, lowest first: a module imports only modules of its own layer or below
LAYERS = (
    ("scoregen.infra",),
    ("scoregen.sde", "scoregen.models", "scoregen.data", "scoregen.samplers",
     "scoregen.adapters"),
    ("scoregen.sampling",),
    ("scoregen.training",),
    ("scoregen.evaluation",),
    ("scoregen.cli", "scoregen.commands", "scoregen.__main__", "scoregen"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(name: str, current: str, level: int) -> str:
    if level == 0:
        return name
    base = current.split(".") if _is_package(current) else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _imports(name: str) -> set[str]:
    """The ``scoregen`` modules that module ``name`` imports (anywhere in its body)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", name, node.level)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES and target.startswith("scoregen"):
                target = target.rpartition(".")[0]  # `import a.b.c` of a non-module attribute
            if target in MODULES and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    return {name: _imports(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of a directed graph, or ``None`` (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _layer(name: str) -> int:
    """The index in :data:`LAYERS` of the package ``name`` belongs to (the longest match)."""
    matches = [(len(p), rank) for rank, packages in enumerate(LAYERS) for p in packages
               if name == p or name.startswith(p + ".")]
    assert matches, f"{name} belongs to no layer: add its package to LAYERS"
    return max(matches)[1]


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # a function-level import (the sample previews of the trainer)
    assert "scoregen.sampling.api" in graph["scoregen.training.build"]
    assert "scoregen.training.trainer" in graph["scoregen.training"]
    assert "scoregen.evaluation.metrics" in graph["scoregen.evaluation.digits_classifier"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_downward():
    """infra < core (sde, models, data, samplers, adapters) < sampling < training < evaluation
    < command line: no module imports a higher layer."""
    bad = [f"{a} -> {b}" for a, deps in import_graph().items() for b in deps
           if _layer(b) > _layer(a)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_package_root_is_only_the_face_and_the_command_line():
    """Every module below the root lives in a sub-package of one job."""
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py"]


def test_every_module_imports_on_its_own():
    """Each module is imported with no other ``scoregen`` module loaded before it."""
    code = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for key in [k for k in sys.modules if k == 'scoregen' or k.startswith('scoregen.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {type(err).__name__}: {err}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_documented_names_import():
    """The names README and docs show."""
    from scoregen.evaluation.metrics import METRICS
    from scoregen.training import build_trainer

    assert "fd_digits" in METRICS.list()
    assert callable(build_trainer) and callable(scoregen.sample)
    assert scoregen.analytic.preset("ring8").shape == (2,)
