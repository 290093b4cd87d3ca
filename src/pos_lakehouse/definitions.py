"""The code location: every component under `defs/`, plus the sensors that span all of them."""

import gc
import importlib
import os
import sys
import types
from pathlib import Path

import dagster as dg

from pos_lakehouse.quiet import quiet_deliberate_warnings
from pos_lakehouse.settings import defs_dir_override, project_root

# The code server, `dagster dev` and `dg check defs` load the code location through this module.
quiet_deliberate_warnings()


def component_tree(defs_dir: Path | None = None) -> dg.ComponentTree:
    """The components under the package's `defs/`, or under another folder laid out like it
    (`defs_dir`, or `POS_LAKEHOUSE_DEFS_DIR`; `benchmarks/scale.py` loads copies with more retailers).

    Built from the module, not from the project's pyproject.toml: an installed wheel has none beside
    it (and a pyproject.toml above the environment would be another project's).
    """
    if defs_dir is None:
        defs_dir = defs_dir_override()
    if defs_dir is None:
        module = importlib.import_module("pos_lakehouse.defs")
    else:
        # Python files in the folder import as submodules of a package rooted there, as under `pos_lakehouse.defs`.
        module = types.ModuleType(f"pos_lakehouse_defs_{abs(hash(str(defs_dir.resolve())))}")
        module.__file__ = None
        module.__path__ = [str(defs_dir.resolve())]
        sys.modules[module.__name__] = module
    # The checkout (as `dg` would find it), else the current directory: only `{{ context.project_root }}`
    # templates read it, and no component here does.
    return dg.ComponentTree.from_module(module, project_root=project_root())


def build_definitions(defs_dir: Path | None = None, *, tree: dg.ComponentTree | None = None) -> dg.Definitions:
    """Everything under `defs/` and the sensors across it (also used by the CLI and tests).

    `defs_dir` (or `POS_LAKEHOUSE_DEFS_DIR`) loads another folder laid out like `defs/` instead;
    `tree` builds an already loaded `component_tree()` (the CLI reads its retailers from the same one).
    """
    # Loading creates a few hundred thousand long-lived objects and little garbage; Python's cyclic
    # collector would scan all of them at each of its collections while they are being made, and
    # again after (a fifth of the load at 200 retailers). It pauses while they are built. The first
    # definitions of a process are the code location's (a code server, `dg check defs`) and live as
    # long as it: they are frozen out of the collector's view (`gc.freeze`), so no later full
    # collection rescans them. Later builds in the same process (tests) are collected as usual.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build(tree or component_tree(defs_dir))
    finally:
        if not gc.get_freeze_count():
            gc.freeze()
        if collecting:
            gc.enable()


def _build(tree: dg.ComponentTree) -> dg.Definitions:
    from pos_lakehouse.components.loaded_retailers import retailers_in_tree
    from pos_lakehouse.sensors.code_location import code_location_sensors

    loaded = tree.build_defs()
    # Every run's steps in the run's own process (the multiprocess default starts a process per
    # step, each loading the definitions again: more than most steps' work here).
    root = dg.Definitions(executor=dg.in_process_executor)
    # The same retailer components that built the assets (also for another defs folder).
    return dg.Definitions.merge(loaded, root, code_location_sensors(retailers_in_tree(tree), loaded))


def _inputs_stamp() -> tuple:
    """What `defs()` builds from besides the code: every file of the defs folder (path, mtime, size)
    and the environment (data root, secrets' variable names, Spark settings)."""
    root = defs_dir_override() or Path(importlib.import_module("pos_lakehouse.defs").__path__[0])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            st = os.stat(os.path.join(folder, name))
            files.append((os.path.join(folder, name), st.st_mtime_ns, st.st_size))
    return (str(root), tuple(files), tuple(sorted(os.environ.items())))


def retailer_definitions(name: str, tree: dg.ComponentTree | None = None) -> dg.Definitions | None:
    """What a run worker of one retailer's run needs: that retailer's component, the resources and
    the gold layer its silver step publishes with -- not every retailer's components.

    None when the retailer does not live in `retailers/<name>/` of the defs folder: the worker then
    builds the whole code location.
    """
    from pos_lakehouse.components.gold_publication import GoldLayer
    from pos_lakehouse.components.gold_tables import GoldTables
    from pos_lakehouse.components.loaded_retailers import retailers_in_tree
    from pos_lakehouse.components.retailer_pipeline import RetailerPipeline
    from pos_lakehouse.serving.policy import load_policy

    tree = tree or component_tree()
    root = Path(tree.defs_module_path)
    folder, gold_folder = Path("retailers") / name, Path("gold")
    if not name or not (root / folder / "defs.yaml").is_file() or not (root / gold_folder / "defs.yaml").is_file():
        return None
    component = tree.load_component(folder)
    gold = tree.load_component(gold_folder)
    if not isinstance(component, RetailerPipeline) or component.name != name or not isinstance(gold, GoldTables):
        return None
    # The policy is validated against every retailer, as the full build does (reading the retailer
    # components, not building their assets, is the small part of a load).
    policy = load_policy((root / gold_folder / gold.access_policy_path).resolve(), retailers_in_tree(tree))
    return dg.Definitions.merge(
        tree.build_defs_at_path(folder),
        tree.build_defs_at_path(Path("resources.py")),
        # The run is of the asset job, whose executor is the code location's (`_build`).
        dg.Definitions(resources={"gold": GoldLayer(tables=tuple(gold.tables), policy=policy)}, executor=dg.in_process_executor),
    )


def serving_definitions(tree: dg.ComponentTree | None = None) -> dg.Definitions | None:
    """What a run worker of a serving views run needs: the serving component and the resources --
    not every retailer's assets (it reads the retailers' YAMLs for the policy, as the full build does).

    None when the defs folder has no `serving/` component: the worker then builds the whole code location.
    """
    tree = tree or component_tree()
    if not (Path(tree.defs_module_path) / "serving" / "defs.yaml").is_file():
        return None
    return dg.Definitions.merge(
        tree.build_defs_at_path(Path("serving")),
        tree.build_defs_at_path(Path("resources.py")),
        dg.Definitions(executor=dg.in_process_executor),
    )


def _run_worker_definitions() -> dg.Definitions | None:
    """The part of the code location a run worker started by `pos_lakehouse.launcher` was told to
    build (a retailer's, or the serving views'); None elsewhere, or when that part is not found."""
    retailer = os.environ.get("POS_LAKEHOUSE_RUN_RETAILER")
    if retailer:
        return retailer_definitions(retailer)
    if os.environ.get("POS_LAKEHOUSE_RUN_SERVING"):
        return serving_definitions()
    return None


_last_built: tuple[tuple, dg.Definitions] | None = None


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster calls this twice when it loads the code location (once to find the loadable targets,
    # once to build the repository: the code server, `dg check defs`). The second call gets the
    # first one's definitions when no defs file and no environment variable changed in between.
    global _last_built
    stamp = _inputs_stamp()
    if _last_built is None or _last_built[0] != stamp:
        # A run worker started by `pos_lakehouse.launcher` for a retailer's run builds only that
        # retailer, for a serving views run only the views.
        _last_built = (stamp, _run_worker_definitions() or build_definitions())
    return _last_built[1]
