"""GoldTables: one Delta table per object type for all retailers, one Dagster partition per retailer."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from pos_lakehouse.components.asset_keys import column_schema, gold_key, silver_key
from pos_lakehouse.components.gold_publication import GoldLayer
from pos_lakehouse.components.loaded_retailers import retailers_in_folder, retailers_path_field
from pos_lakehouse.components.spark_jobs import SparkJobs
from pos_lakehouse.components.yaml_schema import TakenAsWritten
from pos_lakehouse.layers.gold import GOLD_TABLES, PARTITION_COLUMN
from pos_lakehouse.quality.gold_checks import gold_check_specs
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.serving.policy import load_policy
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical


def retailer_partitions(specs: list[RetailerSpec]) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([s.data_provider_code for s in specs])


class GoldTables(TakenAsWritten, dg.Component, dg.Model, dg.Resolvable):
    """Gold tables unioning every retailer's silver, partitioned (Delta and Dagster) by data provider code."""

    retailers_path: str = retailers_path_field("the retailer partitions derive from the loaded components.")
    tables: list[str] = Field(default_factory=lambda: list(GOLD_TABLES), description="Canonical tables to publish in gold.")
    access_policy_path: str = Field(
        default="../serving/access_policy.yaml",
        description="Access policy YAML (relative to this file); gold checks that every secure_group_key is known to it.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        specs = retailers_in_folder(context, self.retailers_path)
        if not specs:
            return dg.Definitions()
        by_code = {s.data_provider_code: s for s in specs}
        # A broken policy fails at load time, in the UI.
        policy = load_policy((Path(context.path) / self.access_policy_path).resolve(), specs)
        assets = [self._gold_asset(name, specs, by_code) for name in self.tables]
        layer = GoldLayer(tables=tuple(self.tables), policy=policy)
        return dg.Definitions(assets=[a for a in assets if a is not None], resources={"gold": layer})

    @staticmethod
    def _gold_asset(name, specs, by_code):
        table = canonical.TABLES[name]
        feeders = [s for s in specs if name in s.silver_tables]
        if not feeders:
            return None
        # Only retailers that deliver (or derive) this grain get a partition: a weekly-only sender has
        # no day partition that would show as missing forever.
        partitions = retailer_partitions(feeders)
        deps = [
            dg.AssetDep(
                silver_key(s, name),
                partition_mapping=dg.StaticPartitionMapping({s.data_provider_code: s.data_provider_code}),
            )
            for s in feeders
        ]

        @dg.asset(
            key=gold_key(name),
            description=f"{table.description} All retailers; one partition per data provider.",
            deps=deps,
            partitions_def=partitions,
            group_name="gold",
            kinds={"polars", "delta"},
            tags={"layer": "gold"},
            pool=f"gold_{name}",
            metadata={"dagster/column_schema": column_schema(table), "partition_column": PARTITION_COLUMN},
            check_specs=gold_check_specs(gold_key(name)),
        )
        def gold(
            context: dg.AssetExecutionContext, lake: Lake, spark: SparkJobs, gold: dg.ResourceParam[GoldLayer]
        ) -> dg.MaterializeResult:
            (published,) = gold.publish(context, lake, spark, by_code[context.partition_key], [name])
            return dg.MaterializeResult(metadata=published.metadata, check_results=published.checks)

        return gold
