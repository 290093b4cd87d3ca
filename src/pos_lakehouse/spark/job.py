"""The Spark job for big retailers: one entry point, run through Dagster Pipes wherever Spark is.

Locally `SparkJobs` starts it as `python -m pos_lakehouse.spark.job` (a subprocess with local
Spark); on Databricks the same file is the `spark_python_task` of a submitted run. Dagster
sends what to do as Pipes extras:

    {"command": "silver" | "gold", "retailer": <RetailerSpec as dict>, "tables": [...],
     "data_root": "<lake root>", "now": "<ISO timestamp of the run>"}

and the job reports materializations (row counts, dates, MERGE statistics) and check results
back, plus one custom message per table with the engine-neutral result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime

# Spark returns timestamps as naive datetimes in the process time zone: pin it to UTC first.
os.environ["TZ"] = "UTC"
if hasattr(time, "tzset"):
    time.tzset()

TRANSPORTS = ("local", "dbfs", "volumes")


def _pipes(transport: str):
    """The Pipes context for where the job runs (bootstrap from CLI arguments or environment)."""
    import dagster_pipes as dp

    params = dp.PipesCliArgsParamsLoader() if "--dagster-pipes-context" in sys.argv else dp.PipesEnvVarParamsLoader()
    if transport == "dbfs":
        return dp.open_dagster_pipes(
            context_loader=dp.PipesDbfsContextLoader(), message_writer=dp.PipesDbfsMessageWriter(), params_loader=params
        )
    if transport == "volumes":
        return dp.open_dagster_pipes(
            context_loader=dp.PipesUnityCatalogVolumesContextLoader(),
            message_writer=dp.PipesUnityCatalogVolumesMessageWriter(),
            params_loader=params,
        )
    return dp.open_dagster_pipes(params_loader=params)


def _session(on_databricks: bool):
    if on_databricks:  # the cluster's session, with Delta already configured
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
    else:
        from pos_lakehouse.spark.session import local_spark

        spark = local_spark("pos_lakehouse_job")
    # Polars matches column names exactly; so must Spark (`Date` and `date` are two columns).
    spark.conf.set("spark.sql.caseSensitive", "true")
    return spark


def _metadata_value(value):
    """A Dagster metadata value as Pipes carries it."""
    import dagster as dg

    if isinstance(value, dg.MarkdownMetadataValue):
        return {"raw_value": value.md_str or "", "type": "md"}
    if isinstance(value, dg.JsonMetadataValue):
        return {"raw_value": value.data, "type": "json"}
    if isinstance(value, (dg.IntMetadataValue, dg.FloatMetadataValue, dg.BoolMetadataValue)):
        return value.value
    if isinstance(value, dg.MetadataValue):
        return {"raw_value": str(value.value), "type": "text"}
    return value


def _plain(value):
    """JSON-safe (dates as ISO text) for Pipes messages."""
    import json

    return json.loads(json.dumps(value, default=str))


def silver_metadata(result, row_count: int, uri: str) -> dict:
    """The silver asset's metadata, as the Polars path writes it."""
    return {
        "dagster/row_count": row_count,
        "dagster/uri": uri,
        "engine": "spark",
        "rows_read_from_bronze": result.input_rows,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_quarantined": result.quarantined,
        "bronze_rows_read": result.bronze_rows,
        "rows_loaded": result.loaded,
        "rows_superseded": result.superseded,
        "rows_removed_by_restatement": result.removed,
        "quarantine_reasons": {"raw_value": result.quarantine_reasons, "type": "json"},
        "new_versions": result.new_versions,
        "closed_versions": result.closed_versions,
        "corporate_master_matched": result.enrichment_matched,
        "corporate_master_missing": result.enrichment_missing,
        "rows_without_fx_rate": result.fx_missing,
        "dates_from": str(result.min_date) if result.min_date else "-",
        "dates_to": str(result.max_date) if result.max_date else "-",
        "bronze_versions_consumed": {"raw_value": result.bronze_versions, "type": "json"},
    }


class _ArrowLake:
    """The slice of `Lake` the silver checks use, served by Spark (same check code on both engines)."""

    def __init__(self, lake):
        self._lake = lake

    def silver(self, retailer: str, table: str) -> str:
        return self._lake.silver(retailer, table)

    def scan(self, uri, schema=None):
        import polars as pl

        from pos_lakehouse.spark.types import spark_schema

        frame = self._lake.scan(uri, spark_schema(schema) if schema is not None else None)
        table = frame.toArrow()
        return pl.from_arrow(table).lazy().cast(dict(schema)) if schema is not None else pl.from_arrow(table).lazy()


def run_silver(pipes, lake, spec, tables: list[str], now: datetime) -> None:

    from pos_lakehouse.quality.checks import run_silver_checks
    from pos_lakehouse.spark.silver import refresh_silver

    results = refresh_silver(lake, spec, tables, now)
    checks_lake = _ArrowLake(lake)
    for name, r in results.items():
        uri = lake.silver(spec.name, name)
        key = f"silver/{spec.name}/{name}"
        if r.quarantined:
            pipes.log.warning(f"{spec.name}.{name}: {r.quarantined} row(s) quarantined: {r.quarantine_reasons}")
        pipes.report_asset_materialization(asset_key=key, metadata=silver_metadata(r, lake.row_count(uri), uri))
        pipes.report_custom_message({"table": name, "silver": _plain(asdict(r))})
        # The Polars path's checks, on the rows Spark reads (incl. the bronze row accounting).
        for check in run_silver_checks(None, checks_lake, spec, [name], results):
            pipes.report_asset_check(
                asset_key=key,
                check_name=check.check_name,
                passed=check.passed,
                severity=check.severity.value,
                metadata={k: _metadata_value(v) for k, v in check.metadata.items()},
            )


def run_gold(pipes, lake, spec, tables: list[str]) -> None:
    from pos_lakehouse.spark.gold import refresh_gold

    for name in tables:
        r = refresh_gold(lake, spec, name)
        pipes.log.info(f"gold.{name}[{r.data_provider_code}]: merged {r.merged_rows} changed silver rows (spark)")
        pipes.report_asset_materialization(
            asset_key=f"gold/{name}",
            metadata={
                "dagster/row_count": r.partition_rows,
                "engine": "spark",
                "rows_merged": r.merged_rows,
                "rows_inserted": r.inserted,
                "rows_updated": r.updated,
                "dates_from": str(r.min_date) if r.min_date else "-",
                "dates_to": str(r.max_date) if r.max_date else "-",
                "dagster/uri": lake.gold(name),
            },
        )
        pipes.report_custom_message({"table": name, "gold": _plain(asdict(r))})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=TRANSPORTS, default=os.environ.get("POS_LAKEHOUSE_PIPES_TRANSPORT", "local"))
    args, _ = parser.parse_known_args(argv)  # Pipes' own bootstrap arguments pass through
    on_databricks = "DATABRICKS_RUNTIME_VERSION" in os.environ
    with _pipes(args.transport) as pipes:
        from pos_lakehouse.retailer import RetailerSpec
        from pos_lakehouse.spark.lake import SparkLake

        extras = pipes.extras
        spec = RetailerSpec.model_validate(extras["retailer"])
        started = time.monotonic()
        spark = _session(on_databricks)
        pipes.log.info(f"{spec.name}: Spark {spark.version} ready in {time.monotonic() - started:.1f}s ({spark.sparkContext.master})")
        lake = SparkLake(spark, extras["data_root"])
        tables = list(extras["tables"])
        if extras["command"] == "silver":
            run_silver(pipes, lake, spec, tables, datetime.fromisoformat(extras["now"]))
        elif extras["command"] == "gold":
            run_gold(pipes, lake, spec, tables)
        else:
            raise ValueError(f"unknown command {extras['command']!r}")
        if not on_databricks:
            spark.stop()


if __name__ == "__main__":
    main()
