"""The package's structure, measured on its source: no import circle and no module-level
mutable state but registries. These are checks on the code as it stands; each fails when someone
adds the thing it forbids. The size of a class or function is left to the reader's judgement
(docs/architecture.md): no test counts its lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "horkd"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _runtime_imports(tree: ast.Module, module: str, known: set[str]) -> set[str]:
    """Modules of the package this one imports anywhere (function-level imports and imports for
    type checking included): ``from a.b import c`` counts as ``a.b.c`` when that is a module,
    else ``a.b``."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: resolve against this module's package
                base = ".".join(module.split(".")[: -node.level] + [node.module])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m in known and m != module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _runtime_imports(tree, name, known) for name, tree in modules.items()}
    # a package's __init__ imports its submodules to re-export them: that edge is the package
    # itself, not a dependency of the package on its children, so parent -> child edges go
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}


def test_no_import_circle_among_the_packages_modules():
    graph = _import_graph()
    # the graph sees lazy (function-level) imports too: config validates names this way
    assert {"horkd.methods", "horkd.tasks"} <= graph["horkd.config"]
    assert "horkd.experiment.context" in graph["horkd.experiment.run"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_config_imports_no_plugin_module_at_import_time():
    """config validates names through the registries, looked up when a config is validated;
    importing config itself must not pull in methods, tasks, models or data."""
    graph = _import_graph()
    tree = _modules()["horkd.config"]
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("horkd"):
            top_level.add(node.module)
    assert top_level <= {"horkd"}, top_level
    assert "horkd.config" not in set().union(*(graph[m] for m in ("horkd.methods.registry",
                                                                  "horkd.methods.presets")))


# What may live at module level besides constants: registries (filled by decorators at import),
# synchronisation primitives and context variables (scoped per thread/task, not shared data).
ALLOWED_CALLS = {"Registry", "TypeVar", "Lock", "ContextVar", "MappingProxyType", "Path",
                 "frozenset", "tuple"}


def _frozen_dataclasses() -> set[str]:
    """Classes of the package declared ``@dataclass(frozen=True)``: their instances are values."""
    names = set()
    for tree in _modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                "frozen=True" in ast.unparse(d) for d in node.decorator_list
            ):
                names.add(node.name)
    return names


def _mutable_value(node: ast.expr, values: set[str]) -> bool:
    if isinstance(node, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name not in ALLOWED_CALLS | values
    return False


def test_no_module_level_mutable_state_except_registries():
    values = _frozen_dataclasses()
    found = []
    for name, tree in _modules().items():
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                if isinstance(node, ast.FunctionDef) and any(
                    isinstance(n, ast.Global) for n in ast.walk(node)
                ):
                    found.append(f"{name}.{node.name} assigns a global")
                continue
            names = [ast.unparse(t) for t in targets]
            if names == ["__all__"]:
                continue
            if _mutable_value(value, values):
                found.append(f"{name}: {', '.join(names)} = {ast.unparse(value)[:40]}")
    assert not found, found
