"""The code location: every component under `defs/`, plus the sensors that span all of them."""

import os
import sys
import types
from pathlib import Path

import dagster as dg


def _load_defs_folder(defs_dir: Path | None) -> dg.Definitions:
    """The project's `defs/`, or another folder laid out like it (`benchmarks/scale.py` loads copies with more retailers)."""
    if defs_dir is None:
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # Python files in the folder import as submodules of a package rooted there, as under `pos_lakehouse.defs`.
    module = types.ModuleType(f"pos_lakehouse_defs_{abs(hash(str(defs_dir.resolve())))}")
    module.__file__ = None
    module.__path__ = [str(defs_dir.resolve())]
    sys.modules[module.__name__] = module
    return dg.ComponentTree.from_module(module, project_root=Path(__file__).parents[2]).build_defs()


def build_definitions(defs_dir: Path | None = None) -> dg.Definitions:
    """Everything under `defs/` with the global policies applied (also used by the CLI and tests).

    `defs_dir` (or `POS_LAKEHOUSE_DEFS_DIR`) loads another folder laid out like `defs/` instead.
    """
    if defs_dir is None and os.environ.get("POS_LAKEHOUSE_DEFS_DIR"):
        defs_dir = Path(os.environ["POS_LAKEHOUSE_DEFS_DIR"])
    loaded = _load_defs_folder(defs_dir)
    # A delivery's own run carries it from bronze to its gold partitions, and two sensors cover what
    # reaches silver from elsewhere (reference data, runs that stopped early): declarative
    # automation is left with the one asset that depends on every gold table, the serving views.
    automation = dg.AutomationConditionSensorDefinition(
        "serving_automation",
        target=dg.AssetSelection.tag("layer", "serving"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Rebuilds the secure serving views when any gold table or the access policy changed.",
    )
    from pos_lakehouse.recovery import build_catch_up_sensor

    return dg.Definitions.merge(loaded, dg.Definitions(sensors=[automation]), build_catch_up_sensor())


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
