"""The code location: every component under `defs/`, plus policies that apply to all of them."""

import importlib
import os
import sys
import types
import warnings
from pathlib import Path

import dagster as dg

from pos_lakehouse.settings import project_root

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


def component_tree(defs_dir: Path | None = None) -> dg.ComponentTree:
    """The components under the package's `defs/`, or under another folder laid out like it
    (`defs_dir`, or `POS_LAKEHOUSE_DEFS_DIR`; `benchmarks/scale.py` loads copies with more retailers).

    Built from the module, not from the project's pyproject.toml: an installed wheel has none beside
    it (and a pyproject.toml above the environment would be another project's).
    """
    if defs_dir is None and os.environ.get("POS_LAKEHOUSE_DEFS_DIR"):
        defs_dir = Path(os.environ["POS_LAKEHOUSE_DEFS_DIR"])
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
    """Everything under `defs/` with the global policies applied (also used by the CLI and tests).

    `defs_dir` (or `POS_LAKEHOUSE_DEFS_DIR`) loads another folder laid out like `defs/` instead;
    `tree` builds an already loaded `component_tree()` (the CLI reads its retailers from the same one).
    """
    tree = tree or component_tree(defs_dir)
    loaded = tree.build_defs()
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
    from pos_lakehouse.components.loaded_retailers import retailers_in_tree
    from pos_lakehouse.recovery import build_catch_up_sensor

    # The same retailer components that built the assets (also for another defs folder).
    catch_up = build_catch_up_sensor(retailers_in_tree(tree))
    return dg.Definitions.merge(with_policy, dg.Definitions(sensors=[automation]), catch_up)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
