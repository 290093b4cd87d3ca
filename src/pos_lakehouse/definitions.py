"""The code location: every component under `defs/`, plus policies that apply to all of them."""

import os
import sys
import types
import warnings
from pathlib import Path

import dagster as dg

# Silver and gold follow their upstream as soon as it lands and its blocking checks pass.
# Corporate reference data is optional upstream: silver runs without it (and re-enriches when it lands).
_WITHOUT_REFERENCE = dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.groups("reference"))
CARRY_FORWARD = (
    dg.AutomationCondition.eager().replace("any_deps_missing", _WITHOUT_REFERENCE)
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
)
# A gold partition has one real upstream: its own retailer's silver table (the other retailers'
# silver tables map to other partitions), so "all deps" would wait on data that never maps here.
_BLOCKING_CHECKS_PASSED = dg.AutomationCondition.all_checks_match(
    dg.AutomationCondition.check_passed() | dg.AutomationCondition.will_be_requested(), blocking_only=True
).with_label("all_blocking_checks_passed")
CARRY_FORWARD_GOLD = dg.AutomationCondition.eager() & dg.AutomationCondition.any_deps_match(_BLOCKING_CHECKS_PASSED).with_label(
    "own_retailer_blocking_checks_passed"
)


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
        ).map_resolved_asset_specs(
            func=lambda spec: spec.replace_attributes(automation_condition=CARRY_FORWARD_GOLD),
            selection=dg.AssetSelection.tag("layer", "gold"),
        )
    automation = dg.AutomationConditionSensorDefinition(
        "carry_forward_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Materializes silver and gold when their upstream lands and blocking checks pass.",
    )
    from pos_lakehouse.recovery import build_catch_up_sensor

    return dg.Definitions.merge(with_policy, dg.Definitions(sensors=[automation]), build_catch_up_sensor())


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
