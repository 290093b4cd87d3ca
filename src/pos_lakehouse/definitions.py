"""The code location: every component under `defs/`, plus policies that apply to all of them."""

import os
import sys
import types
import warnings
from pathlib import Path

import dagster as dg

# A delivery's own run carries it from bronze through silver to its gold partitions (the silver
# step publishes them). Automation only covers what reaches silver from elsewhere: corporate
# reference data landing (re-enrich every retailer that uses it) or bronze updated by a run that
# stopped before silver. A handful of condition nodes per silver asset, none on gold: a tick costs
# what changed, not what every retailer has.
CARRY_FORWARD = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("upstream updated outside this silver's own run")


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
    with warnings.catch_warnings():
        # The spec-mapping API is marked preview; it is still the supported way to apply a root policy.
        warnings.simplefilter("ignore", category=dg.PreviewWarning)
        warnings.simplefilter("ignore", category=dg.BetaWarning)
        with_policy = loaded.map_resolved_asset_specs(
            func=lambda spec: spec.replace_attributes(automation_condition=CARRY_FORWARD),
            selection=dg.AssetSelection.tag("layer", "silver"),
        )
    automation = dg.AutomationConditionSensorDefinition(
        "carry_forward_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Re-runs silver (and so gold) when reference data or bronze changed outside a delivery run; refreshes the serving views.",
    )
    from pos_lakehouse.recovery import build_catch_up_sensor

    return dg.Definitions.merge(with_policy, dg.Definitions(sensors=[automation]), build_catch_up_sensor())


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
