"""Imports between the parts of `pos_lakehouse` run one way: no cycle between its top-level subpackages and modules.

The graph is read statically (`ast`), counting every `import`, also those inside functions: a
deferred import still ties the two parts together, it only hides the cycle until run time.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pos_lakehouse"


def _part_of(module: str, root: str) -> str | None:
    """The top-level part (`ingest`, `layers`, `cli`, ...) a `root.<part>...` module belongs to."""
    parts = module.split(".")
    return parts[1] if parts[0] == root and len(parts) > 1 else None


def import_graph(package: Path) -> dict[str, dict[str, list[str]]]:
    """part -> {imported part -> ["file:line", ...]} for every import between two top-level parts."""
    root = package.name
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module_parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        me = module_parts[1] if len(module_parts) > 1 else None
        if me is None:  # the package's own __init__
            continue
        # The package a relative import starts from: the module's own package (itself for an __init__).
        anchor = module_parts if rel.name == "__init__" else module_parts[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(anchor[: len(anchor) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                # `from pos_lakehouse import demo` names a part in the imported names.
                targets = [f"{module}.{alias.name}" for alias in node.names] if module == root else [module]
            else:
                continue
            for target in targets:
                other = _part_of(target, root)
                if other and other != me:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"
                    graph.setdefault(me, {}).setdefault(other, []).append(where)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph has none."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            found = visit(nxt)
            if found:
                return found
        stack.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def _describe(graph, cycle: list[str]) -> str:
    return "; ".join(f"{a} -> {b} ({', '.join(graph[a][b])})" for a, b in zip(cycle, cycle[1:]))


def test_no_import_cycle_between_top_level_parts():
    graph = import_graph(PACKAGE)
    # The graph is real: the known one-way dependencies are found.
    assert "ingest" in graph["layers"] and "engines" in graph["transform"] and "layers" in graph["components"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle {' -> '.join(cycle)}: {_describe(graph, cycle)}"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "shop"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_cycle_through_a_deferred_or_relative_import_is_found(tmp_path):
    package = _package(
        tmp_path,
        {
            "ingest/__init__.py": "",
            "ingest/pulled.py": "def pull():\n    from ..layers.bronze import stamp\n    return stamp\n",
            "layers/__init__.py": "",
            "layers/bronze.py": "from shop.ingest import pulled\n\nstamp = 1\n",
            "cli.py": "import shop.layers.bronze\n",
        },
    )
    graph = import_graph(package)
    assert graph["cli"] == {"layers": ["shop/cli.py:1"]}
    assert graph["ingest"] == {"layers": ["shop/ingest/pulled.py:2"]}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"ingest", "layers"}


def test_one_way_imports_and_imports_inside_one_part_are_no_cycle(tmp_path):
    package = _package(
        tmp_path,
        {
            "ingest/__init__.py": "from . import readers\n",
            "ingest/readers.py": "from shop.ingest import __name__ as _n\n",
            "layers/__init__.py": "",
            "layers/bronze.py": "from shop.ingest.readers import _n\nfrom shop import settings\n",
            "settings.py": "",
        },
    )
    graph = import_graph(package)
    assert graph == {"layers": {"ingest": ["shop/layers/bronze.py:1"], "settings": ["shop/layers/bronze.py:2"]}}
    assert find_cycle(graph) is None


def test_run_and_the_runner_never_import_the_demo():
    """`pos-lakehouse run` is the product: only the demo command group (`demo`, `reconcile` -- the
    generator's totals -- and the loopback sources `dev` starts) may import `pos_lakehouse.demo`,
    inside its own functions."""
    graph = import_graph(PACKAGE)
    assert "runner" in graph.get("cli", {}) and "demo" not in graph.get("runner", {})
    importing_demo = set()
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        tree = ast.parse(path.read_text())
        for function in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pos_lakehouse.demo"):
                    importing_demo.add(f"{path.name}:{function.name}")
        top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not [n for n in top_level if "pos_lakehouse.demo" in ast.unparse(n)], path
    assert importing_demo == {"demo.py:cmd_demo", "demo.py:cmd_reconcile", "demo.py:demo_sources"}


# ---- file level: no module imports itself back through others -----------------------------------
def _module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _under_type_checking(tree: ast.Module) -> set[int]:
    """Ids of import nodes inside `if TYPE_CHECKING:` blocks (never run, so no cycle at run time)."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return hidden


def module_import_graph(package: Path) -> dict[str, dict[str, list[str]]]:
    """module -> {imported module of the package -> ["file:line", ...]}, every import counted (also deferred ones).

    `from a.b import c` is an edge to `a.b.c` when that is a module of the package, else to `a.b`.
    """
    root = package.name
    files = {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, dict[str, list[str]]] = {}
    for me, path in files.items():
        is_package = path.name == "__init__.py"
        anchor = me.split(".") if is_package else me.split(".")[:-1]
        tree = ast.parse(path.read_text(), filename=str(path))
        hidden = _under_type_checking(tree)
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(anchor[: len(anchor) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            else:
                continue
            for target in targets:
                # `import a.b.c` of a name that is not a file: the nearest enclosing module that is.
                while target and target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != me and target.split(".")[0] == root:
                    graph.setdefault(me, {}).setdefault(target, []).append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return graph


def test_no_import_cycle_between_files():
    graph = module_import_graph(PACKAGE)
    # The graph is real: known file-to-file imports are found.
    assert "pos_lakehouse.sensors.catch_up" in graph["pos_lakehouse.sensors.code_location"]
    assert "pos_lakehouse.cli.common" in graph["pos_lakehouse.cli.run"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle {' -> '.join(cycle)}: {_describe(graph, cycle)}"


def test_a_cycle_between_files_of_one_part_is_found(tmp_path):
    package = _package(
        tmp_path,
        {
            "storage/__init__.py": "",
            "storage/files.py": "from .lake import Lake\n",
            "storage/lake.py": "def append():\n    from shop.storage.appends import once\n",
            "storage/appends.py": "from shop.storage import files\n",
            "storage/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shop.storage.files import Lake\n",
            "layers/__init__.py": "",
            "layers/bronze.py": "import shop.storage.lake\nfrom shop.storage.files import Lake\n",
        },
    )
    graph = module_import_graph(package)
    # One part (`storage`) has no cycle with another, so only the file-level graph sees it.
    assert find_cycle(import_graph(package)) is None
    assert graph["shop.storage.appends"] == {"shop.storage.files": ["shop/storage/appends.py:1"]}
    assert graph["shop.layers.bronze"] == {
        "shop.storage.lake": ["shop/layers/bronze.py:1"],
        "shop.storage.files": ["shop/layers/bronze.py:2"],
    }
    assert "shop.storage.typed" not in graph  # an import for type checkers only runs never
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and set(cycle) == {"shop.storage.files", "shop.storage.lake", "shop.storage.appends"}
    message = _describe(graph, cycle)
    assert "shop/storage/lake.py:2" in message and "shop/storage/files.py:1" in message


def test_only_the_demo_command_imports_the_demo():
    """Outside `demo/` itself, only the CLI's demo command group imports `pos_lakehouse.demo`."""
    graph = module_import_graph(PACKAGE)
    importers = {me for me, targets in graph.items() for t in targets if t.startswith("pos_lakehouse.demo")}
    assert {m for m in importers if not m.startswith("pos_lakehouse.demo")} == {"pos_lakehouse.cli.demo"}
