"""Publishing a retailer's gold partitions: shared by the gold assets and a retailer's own delivery run."""

from dataclasses import dataclass

import dagster as dg

from pos_lakehouse.components.asset_keys import dagster_metadata, gold_key
from pos_lakehouse.components.spark_jobs import SparkJobs
from pos_lakehouse.layers.gold import gold_metadata, refresh_gold_tables
from pos_lakehouse.quality.gold_checks import run_gold_checks
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.serving.policy import AccessPolicy
from pos_lakehouse.storage.lake import Lake


def table_row_count(lake: Lake, name: str) -> int:
    return lake.row_count(lake.gold(name))


# Gold checks that stop the run when they fail (the others only warn).
BLOCKING_GOLD_CHECKS = {"rows_match_silver", "unique_keys"}


@dataclass(frozen=True)
class GoldPublication:
    """One gold table's partition after a publish: its materialization metadata and check results."""

    table: str
    metadata: dict
    checks: list[dg.AssetCheckResult]

    @property
    def failed_blocking_checks(self) -> list[str]:
        return [c.check_name for c in self.checks if not c.passed and c.check_name in BLOCKING_GOLD_CHECKS]


def publish_gold(context, lake: Lake, spark: SparkJobs, spec: RetailerSpec, tables: list[str], policy) -> list[GoldPublication]:
    """MERGE a retailer's silver into its partition of each gold table, then check the partitions.

    Spark retailers publish every table in one Spark job; a table the retailer does not deliver is
    published as an empty partition (checked, nothing merged).
    """
    delivered = [t for t in tables if t in spec.silver_tables]
    from_spark: dict[str, dict] = {}
    if spec.engine == "spark" and delivered:
        invocation = spark.run(context, spec, "gold", delivered, lake.root)
        for message in invocation.get_custom_messages():
            if isinstance(message, dict) and "gold" in message:
                from_spark[message["table"]] = dagster_metadata(message["metadata"])
    refreshed = refresh_gold_tables(lake, spec, delivered) if spec.engine != "spark" else {}
    published = []
    for name in tables:
        if name not in delivered:
            context.log.info(f"{spec.name} does not deliver {name}; nothing to publish")
            metadata: dict = {"partition_rows": 0}
        elif spec.engine == "spark":
            metadata = from_spark[name]
        else:
            r = refreshed[name]
            context.log.info(f"gold.{name}[{r.data_provider_code}]: merged {r.merged_rows} changed silver rows")
            metadata = dagster_metadata(gold_metadata(r, lake.gold(name), "polars"))
        # The asset's row count is the table's (all retailers); this retailer's share is `partition_rows`.
        metadata["dagster/row_count"] = table_row_count(lake, name)
        published.append(GoldPublication(name, metadata, run_gold_checks(lake, spec, name, policy, gold_key(name))))
    return published


@dataclass(frozen=True)
class GoldLayer:
    """Where gold is published and checked: its tables and the access policy its checks read.

    `GoldTables` provides it (resource key `gold`), so the gold assets and a retailer's own run
    (which publishes its partitions from the silver step) publish the same tables under the same
    policy, built once from the loaded retailer components.
    """

    tables: tuple[str, ...] = ()
    policy: AccessPolicy | None = None

    def tables_for(self, spec: RetailerSpec) -> list[str]:
        """The gold tables that have a partition for this retailer (the grains it delivers or derives)."""
        return [t for t in self.tables if t in spec.silver_tables]

    def publish(self, context, lake: Lake, spark: SparkJobs, spec: RetailerSpec, tables: list[str]) -> list[GoldPublication]:
        return publish_gold(context, lake, spark, spec, tables, self.policy) if tables else []


def log_gold_publications(context, spec: RetailerSpec, published: list[GoldPublication]) -> None:
    """Record gold partitions published inside another asset's step (a delivery's own run).

    The gold assets are partitioned by retailer across all retailers, so a retailer's run cannot
    select them next to its own bronze and silver; the step records the same materialization and
    check events the gold asset would, against the gold asset and this retailer's partition.
    """
    code = spec.data_provider_code
    for p in published:
        context.log_event(dg.AssetMaterialization(asset_key=gold_key(p.table), partition=code, metadata=p.metadata))
        for c in p.checks:
            assert c.check_name is not None  # every gold check is built with its name
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=gold_key(p.table),
                    check_name=c.check_name,
                    passed=c.passed,
                    metadata=c.metadata,
                    severity=c.severity,
                    description=c.description,
                    blocking=c.check_name in BLOCKING_GOLD_CHECKS,
                    partition=code,
                )
            )
