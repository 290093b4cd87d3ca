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
