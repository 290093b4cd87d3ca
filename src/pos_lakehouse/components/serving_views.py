"""ServingViews: the asset that rebuilds the local secure gold views (DuckDB) after any gold change."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from pos_lakehouse.components.loaded_retailers import retailers_in_folder, retailers_path_field
from pos_lakehouse.components.yaml_schema import TakenAsWritten
from pos_lakehouse.layers.gold import GOLD_TABLES
from pos_lakehouse.serving.limits import QueryLimits
from pos_lakehouse.serving.policy import load_policy, policy_hash
from pos_lakehouse.storage.lake import Lake

# Rebuild whenever any retailer's partition of any gold table lands, or the access policy changed
# (the policy's hash is the asset's code version). Unlike `eager()`, missing upstream partitions do
# not block: a retailer that has not delivered yet must not hide the others.
# (Dagster's annotations type `since_last_handled` for asset-or-check conditions only; it is documented for these.)
REFRESH_ON_GOLD_CHANGE = (
    (dg.AutomationCondition.any_deps_updated() | dg.AutomationCondition.code_version_changed()).since_last_handled()  # pyright: ignore[reportAttributeAccessIssue]
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh on any gold update")


class ServingViews(TakenAsWritten, dg.Component, dg.Model, dg.Resolvable):
    """Secure gold views for analysts: one DuckDB view per gold table, filtered and masked by the access policy."""

    retailers_path: str = retailers_path_field("their keys and antitrust settings, and which gold tables are published.")
    access_policy_path: str = Field(
        default="access_policy.yaml",
        description="The access policy YAML: reader groups and users (relative to this file). Retailers' keys and "
        "antitrust settings come from their own YAMLs.",
    )
    tables: list[str] = Field(default_factory=lambda: list(GOLD_TABLES), description="Gold tables to serve.")
    query_limits: QueryLimits = Field(
        default_factory=QueryLimits,
        description="Bounds on one `pos-lakehouse query`: timeout, DuckDB memory and threads, query length and nesting, "
        "result rows. Each answers with one line naming it.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        base = Path(context.path)
        policy_path = (base / self.access_policy_path).resolve()
        specs = retailers_in_folder(context, self.retailers_path)
        # Groups and users from the policy file, retailers from their loaded components; fail at load time, in the UI.
        policy = load_policy(policy_path, specs)
        published = [t for t in self.tables if any(t in s.silver_tables for s in specs)]
        tables = list(self.tables)

        @dg.asset(
            key=dg.AssetKey(["serving", "gold_views"]),
            description="DuckDB secure views over gold (`<data root>/serving/gold.duckdb`): rows by the reader's "
            "secure group keys, recent measures of competition-sensitive retailers antitrust-masked. "
            "Query with `pos-lakehouse query --as USER`.",
            deps=[dg.AssetKey(["gold", t]) for t in published],
            group_name="serving",
            kinds={"duckdb"},
            tags={"layer": "serving"},
            automation_condition=REFRESH_ON_GOLD_CHANGE,
            code_version=policy_hash(policy),
            metadata={"access_policy": str(policy_path)},
        )
        def gold_views(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
            # DuckDB and sqlglot are imported when the views are built, not when the definitions load.
            from pos_lakehouse.serving.duckdb_views import build_views

            # The policy file as it is now (groups and users may change between loads); the retailers as loaded.
            current = load_policy(policy_path, specs)
            build = build_views(lake, current, tables)
            ungranted = current.ungranted_retailers()
            for code, r in ungranted.items():
                context.log.warning(f"{r.name} ({code}, key {r.secure_group_key}) is in no reader group: only all-retailers groups see it")
            for name, snap in build.tables.items():
                context.log.info(f"{name}: Delta version {snap.delta_version}, {len(snap.files)} files, {snap.rows} rows")
            return dg.MaterializeResult(
                metadata={
                    "dagster/uri": str(build.path),
                    "views": ", ".join(build.tables),
                    "policy_hash": build.policy_hash,
                    "users": ", ".join(sorted(current.users)),
                    "retailers_in_no_group": ", ".join(r.name for r in ungranted.values()) or "none",
                    "gold_versions": dg.MetadataValue.json({n: s.delta_version for n, s in build.tables.items()}),
                    "gold_rows": dg.MetadataValue.json({n: s.rows for n, s in build.tables.items()}),
                }
            )

        return dg.Definitions(assets=[gold_views])
