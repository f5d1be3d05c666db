"""The package's layers point down and have no cycle, function-level imports included.

The import graph is read from the source (every ``import`` and ``from ... import`` statement,
wherever it stands, lazy export tables included), between the package's units: the ground-floor
modules, each general subpackage, the evaluation and analysis layers, the built-in offline world,
the study pipeline and the commands.
"""

import ast
import pathlib

import pytest

import sk_braintune

PACKAGE = pathlib.Path(sk_braintune.__file__).parent

# unit -> level; a unit may import units of a lower level, and units of its own level only where
# listed in SIDEWAYS. The ground floor is every top-level module.
LEVELS = {
    "ground": 0,
    "models": 1, "datasets": 1,
    "features": 2, "encoding": 2,
    "tuning": 3,
    "evaluation": 4, "plotting": 4,
    "analysis": 5,
    "builtin": 6,
    "testing": 6,
    "study": 7,
    "commands": 8,
}
SIDEWAYS = {("features", "encoding"), ("encoding", "features")}
GENERAL = {"ground", "models", "datasets", "features", "encoding", "tuning", "evaluation",
           "plotting"}


def _unit(module):
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in LEVELS or parts[1] == "ground":
        # sk_braintune.<top-level module> (or the package itself): the ground floor
        return "ground" if len(parts) <= 2 or parts[1] not in LEVELS else parts[1]
    return parts[1]


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """Absolute names of the package's modules that ``path`` imports, anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sk_braintune"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("sk_braintune"):
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # lazy export tables name modules as strings
            if node.value.startswith("sk_braintune.") and " " not in node.value:
                found.add(node.value)
    return found


def _edges():
    """(file, unit, imported unit) once each; ``__main__`` is the entry point and may import all."""
    edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        source = _unit(_module_name(path))
        for target in _imports(path):
            edges.add((path.relative_to(PACKAGE.parent), source, _unit(target)))
    return sorted(edges)


def test_every_unit_has_a_level():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LEVELS), f"units without a level: {units - set(LEVELS)}"


def test_layers_point_down():
    up = [f"{path}: {source} -> {target}" for path, source, target in _edges()
          if source != target and LEVELS[target] >= LEVELS[source]
          and (source, target) not in SIDEWAYS]
    assert not up, "imports that point up or sideways:\n" + "\n".join(up)


def test_general_layers_never_import_the_builtin_world():
    bad = [f"{path}: {source} -> builtin" for path, source, target in _edges()
           if source in GENERAL and target == "builtin"]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pair", [("models", "datasets"), ("evaluation", "analysis")])
def test_forbidden_arrows(pair):
    bad = [str(path) for path, source, target in _edges() if (source, target) == pair]
    assert not bad, f"{pair[0]} imports {pair[1]}: {bad}"


def test_no_module_cycle():
    """No cycle between modules, counting imports inside functions."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(path):
            # a name imported from a package resolves to its module where one exists
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not modules[target].name == "__init__.py":
                targets.add(target)
        graph[name] = targets
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    assert not cycles, "module cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])
