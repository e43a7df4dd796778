"""The package's structure, read from the source with ast (no import runs): no import circles,
no arrow from a lower layer to a higher one, no reach into another object's underscore
attributes, and no monkey-patching in the server. CONTRIBUTING.md draws the same layers.

Lazy imports (inside a function) count: an import moved into a function to dodge a circle is
still a circle, and still an arrow. Imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

# The folders installed as orchestra.* (pyproject's package-dir).
ROOTS = {"orchestra": "orchestra", "retrievers": "orchestra.retrievers",
         "agents": "orchestra.agents", "routers": "orchestra.routers"}

# Lowest first. A module may import its own layer and the ones below, never one above. Every
# module is in one layer (the longest prefix that names it); a new top-level module is placed
# here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Plain values, rules and readers every layer uses; nothing here builds a component.
    ("base", ("orchestra", "orchestra.errors", "orchestra.types", "orchestra.observe",
              "orchestra.telemetry", "orchestra.files", "orchestra.yaml_lines", "orchestra.cache",
              "orchestra.checks", "orchestra.registry", "orchestra.spec", "orchestra.extras",
              "orchestra.prompts", "orchestra.short_answer", "orchestra.declines",
              "orchestra.signals", "orchestra.eval.metrics", "orchestra.eval.results",
              "orchestra.eval.needles")),
    ("backends", ("orchestra.backends", "orchestra.kv")),
    ("corpus", ("orchestra.corpus", "orchestra.citations", "orchestra.streaming",
                "orchestra.retrievers")),
    ("strategies", ("orchestra.strategies", "orchestra.agents", "orchestra.explain")),
    ("routers", ("orchestra.routers",)),
    ("pipeline", ("orchestra.config", "orchestra.profiles", "orchestra.pipeline",
                  "orchestra.eval")),
    ("front ends", ("orchestra.api", "orchestra.server", "orchestra.cluster", "orchestra.tune",
                    "orchestra.integrations")),
    ("cli", ("orchestra.cli",)),
]

# The server's own layers (CONTRIBUTING.md's diagram): a module imports only those below it.
SERVER_LAYERS: list[tuple[str, ...]] = [
    ("errors", "metrics"),
    ("schemas", "batcher", "corpora"),
    ("service",),
    ("http",),
    ("routes_pipeline", "routes_openai", "routes_model"),
    ("app",),
    ("runner",),  # uvicorn over create_app's app
]

# Reaches into another object's underscore attribute, each with its reason. Keep this short.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {
    ("orchestra.spec", "_spec_args"):
        "Component.__new__ records the constructor's arguments on the object it creates",
    ("orchestra.tune.study", "_storage"):
        "Optuna has no public call to fail a trial a killed run left RUNNING",
    ("orchestra.tune.study", "_trial_id"):
        "the storage's calls take Optuna's internal trial id",
}


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = modules()


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST):
    """Every node below ``node``, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        yield child
        yield from _walk(child)


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def imports(module: str) -> dict[str, int]:
    """orchestra modules ``module`` imports (lazily or not) -> the line of the first import."""
    out: dict[str, int] = {}
    for node in _walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package(module).split(".")
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        for t in targets:
            if t in MODULES and t != module:
                out.setdefault(t, node.lineno)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def layer_of(module: str) -> int:
    best, found = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    assert found is not None, f"{module} is in no layer: place it in tests/test_layers.py"
    return found


def where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(REPO)}:{line}"


def test_every_module_is_in_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_import_circles():
    # Tarjan's strongly connected components over the import graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
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
                circles.append(sorted(comp))

    for m in MODULES:
        if m not in index:
            visit(m)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_no_arrow_from_a_lower_layer_to_a_higher_one():
    bad = [f"{where(a, line)}: {a} ({LAYERS[layer_of(a)][0]}) imports {b} "
           f"({LAYERS[layer_of(b)][0]})"
           for a, targets in GRAPH.items() for b, line in targets.items()
           if layer_of(b) > layer_of(a)]
    assert not bad, "\n".join(bad)


def test_the_server_modules_import_only_the_ones_below_them():
    level = {f"orchestra.server.{name}": i for i, names in enumerate(SERVER_LAYERS)
             for name in names}
    server = [m for m in MODULES if m.startswith("orchestra.server.")]
    assert set(server) == set(level), "place every server module in SERVER_LAYERS"
    bad = [f"{where(a, line)}: {a} imports {b}" for a in server
           for b, line in GRAPH[a].items() if b in level and level[b] >= level[a]
           and not (level[b] == level[a] and b == a)]
    # Modules of one level (the route modules) do not import each other either.
    assert not bad, "\n".join(bad)


def _own_private(tree: ast.AST) -> set[str]:
    """Underscore names a class of this module owns: its methods, and attributes it sets on
    ``self`` or ``cls``."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            own.add(node.attr)
    return {n for n in own if n.startswith("_")}


def _private_reaches(module: str, source: str | None = None) -> list[tuple[str, int]]:
    """``obj._x`` where obj is not self, cls or super() and no class of this module owns
    ``_x`` (a classmethod filling in the instance it built is its own class's business), and
    ``from m import _x`` from a module of another package."""
    out = []
    tree = ast.parse(source if source is not None else MODULES[module].read_text("utf-8"))
    own = _own_private(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and node.attr not in own:
            v = node.value
            if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                continue
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super":
                continue
            out.append((node.attr, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            src = node.module
            if src in MODULES and _package(src) == _package(module):
                continue  # a package's own private helpers
            out += [(a.name, node.lineno) for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_reach_into_another_objects_underscore_attributes():
    bad = [f"{where(m, line)}: {name}" for m in MODULES
           for name, line in _private_reaches(m) if (m, name) not in ALLOWED_PRIVATE]
    assert not bad, "\n".join(bad)


def test_the_server_patches_nothing():
    """No function put on another object (``obj.method = wrapper``, a lambda, setattr) in
    orchestra/server: the server counts work through observe's listeners and wraps through
    its service object."""
    bad = []
    for m in MODULES:
        if not m.startswith("orchestra.server"):
            continue
        tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
        functions = {n.name for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "setattr":
                bad.append(where(m, node.lineno) + ": setattr")
            if not isinstance(node, ast.Assign):
                continue
            v = node.value
            is_function = isinstance(v, ast.Lambda) or (
                isinstance(v, ast.Name) and v.id in functions)
            for t in node.targets:
                if is_function and isinstance(t, ast.Attribute) and not (
                        isinstance(t.value, ast.Name) and t.value.id == "self"):
                    bad.append(f"{where(m, node.lineno)}: assigns {ast.unparse(t)}")
    assert not bad, "\n".join(bad)


def test_the_checks_find_what_they_look_for():
    """The rules above are not vacuous: a reach-in and a private import are found, a class's
    own attribute is not."""
    src = ("from orchestra.server.corpora import _kv_strategies\n"
           "class A:\n    def __init__(self):\n        self._mine = 1\n"
           "def f(o, a):\n    a._mine = 2\n    return o._theirs\n")
    assert sorted(n for n, _ in _private_reaches("orchestra.cluster.index", src)) == \
        ["_kv_strategies", "_theirs"]
    assert layer_of("orchestra.server.app") > layer_of("orchestra.pipeline") \
        > layer_of("orchestra.routers.base") > layer_of("orchestra.strategies.rag") \
        > layer_of("orchestra.retrievers.dense") > layer_of("orchestra.backends.hf") \
        > layer_of("orchestra.types")
