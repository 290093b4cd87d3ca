"""The code location: every component under `defs/`, plus policies that apply to all of them."""

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


def build_definitions() -> dg.Definitions:
    """Everything under `defs/` with the global policies applied (also used by the CLI and tests)."""
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
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
