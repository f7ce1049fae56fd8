"""The architecture as a test: pigcli's packages form layers, and imports only point down.

Read statically from the source (every import, the lazy ones inside functions included), so a new
upward import or cycle fails here before anyone has to notice it in a traceback.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pigcli"

# Bottom first. A module may import from its own unit (a top-level module, or a subpackage) and from
# the units of lower layers; units in the same layer do not import each other.
LAYERS = [
    {"errors"},                 # the exceptions every layer raises
    {"console"},                # the one place that writes to the terminal (stderr)
    {"choices"},                # the accepted values of every option: no dependencies, so --help is fast
    {"safe_write"},             # the one rule for every path pig writes (temporaries, locks, what it replaces)
    {"core"},                   # the maths: arrays and tensors in and out, no files, no CLI
    {"inputs"},                 # video files, decoder workers, video sources, caption files
    {"store"},                  # the HDF5 stage-file format: provenance, crash-safe writing, checked opening
    {"stagefiles"},             # what each stage file is, how it is made, how files chain
    {"model", "toy"},           # model folders and the networks; the toy corpora
    {"stages", "train"},        # the offline stages; training (which reads stage files, never runs stages)
    {"query"},                  # ranking, scoring, rerank, evaluation, and the pictures/pages of results
    {"serve", "tools"},         # the HTTP server; the demo and inspect
    {"cli"},                    # the command line, the only writer to stdout
    {"__main__"},               # python -m pigcli
]
ROOT_NAMES = {"__version__"}    # what lower layers may take from pigcli/__init__.py (the lazy library face)


def unit_of(module: str) -> str:
    """'pigcli.query.rank' -> 'query'; 'pigcli' -> '' (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: names for type checkers, never imported at run time."""
    return {id(inner) for node in ast.walk(tree)
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for statement in node.body for inner in ast.walk(statement)}


def imports_of(path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """(imported pigcli module, line, names taken) for every import in the file that runs."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    tree = ast.parse(path.read_text(), str(path))
    skipped = type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = tuple(a.name for a in node.names)
            if target == "pigcli" or target.startswith("pigcli."):
                # `from . import x` names a submodule when x is one
                subs = [n for n in names if module_exists(f"{target}.{n}")]
                found += [(f"{target}.{n}", node.lineno, ()) for n in subs]
                if len(subs) < len(names):
                    found.append((target, node.lineno, tuple(n for n in names if n not in subs)))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, ()) for a in node.names if a.name.startswith("pigcli")]
    return found


def module_exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(unit: str) -> int:
    for number, layer in enumerate(LAYERS):
        if unit in layer:
            return number
    raise KeyError(unit)


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def import_problems() -> list[str]:
    problems = []
    for path in all_modules():
        source = module_name(path)
        for target, line, names in imports_of(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            problem = _problem(source, target, names)
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


def _problem(source: str, target: str, names: tuple[str, ...]) -> str | None:
    source_unit, target_unit = unit_of(source), unit_of(target)
    if not target_unit:  # the package root: only its version, which needs nothing
        extra = set(names) - ROOT_NAMES
        return f"takes {sorted(extra)} from the package root (only {sorted(ROOT_NAMES)})" if extra else None
    if not source_unit or source_unit == target_unit:  # the root face is lazy; a unit may use itself
        return None
    if layer_of(target_unit) >= layer_of(source_unit):
        return f"{source} imports {target}: '{target_unit}' is not below '{source_unit}'"
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in all_modules():
        edges[module_name(path)] = {target for target, _, _ in imports_of(path) if module_exists(target)}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in all_modules()} - {""}
    missing = sorted(u for u in units if not any(u in layer for layer in LAYERS))
    assert not missing, f"give these a layer in LAYERS: {missing}"


def test_imports_only_point_down():
    problems = import_problems()
    assert not problems, "upward or sideways imports:\n" + "\n".join(problems)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("source, target, names, bad", [
    ("pigcli.train.data", "pigcli.stages.frames", (), True),    # training must not reach into the stages
    ("pigcli.core.search", "pigcli.store", (), True),           # core knows no files
    ("pigcli.query.rank", "pigcli.query.media", (), False),     # inside a unit
    ("pigcli.serve.app", "pigcli.tools.demo", (), True),        # same layer, sideways
    ("pigcli.store", "pigcli", ("__version__",), False),
    ("pigcli.store", "pigcli", ("rank",), True),
])
def test_the_rule_itself(source, target, names, bad):
    assert (_problem(source, target, names) is not None) == bad


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
