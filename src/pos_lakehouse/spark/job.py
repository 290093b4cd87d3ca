"""The Spark job for big retailers: one entry point, run through Dagster Pipes wherever Spark is.

Locally `SparkJobs` starts it as `python -m pos_lakehouse.spark.job` (a subprocess with local
Spark); on Databricks the same file is the `spark_python_task` of a submitted run. Dagster
sends what to do as Pipes extras:

    {"command": "silver" | "gold", "retailer": <RetailerSpec as dict>, "tables": [...],
     "data_root": "<lake root>", "now": "<ISO timestamp of the run>"}

It runs the same `layers/silver.py` / `layers/gold.py` code as the Dagster process, on a
`SparkLake`, and reports materializations (the metadata both engines build alike) plus one custom
message per table with the engine-neutral result, from which the asset evaluates its checks. It
needs `dagster-pipes`, not `dagster` or `pandera`.
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


def _pipes_metadata(metadata: dict) -> dict:
    """Plain metadata (see `layers.silver.silver_metadata`) as Pipes carries it: dicts as JSON."""
    return {k: {"raw_value": v, "type": "json"} if isinstance(v, dict) else v for k, v in metadata.items()}


def _plain(value):
    """JSON-safe (dates as ISO text) for Pipes messages."""
    import json

    return json.loads(json.dumps(value, default=str))


def run_silver(pipes, lake, spec, tables: list[str], now: datetime) -> None:
    """Silver on Spark: the same `refresh_silver` as in the Dagster process, on a `SparkLake`.

    Checks are not run here: the asset evaluates them on the written tables from the report
    (so the cluster needs no Dagster and no pandera).
    """
    from pos_lakehouse.layers.silver import refresh_silver, silver_metadata

    results = refresh_silver(lake, spec, tables, now)
    for name, r in results.items():
        uri = lake.silver(spec.name, name)
        if r.quarantined:
            pipes.log.warning(f"{spec.name}.{name}: {r.quarantined} row(s) quarantined: {r.quarantine_reasons}")
        metadata = _plain(silver_metadata(r, lake.row_count(uri), uri, "spark"))
        pipes.report_asset_materialization(asset_key=f"silver/{spec.name}/{name}", metadata=_pipes_metadata(metadata))
        pipes.report_custom_message({"table": name, "silver": _plain(asdict(r))})


def run_gold(pipes, lake, spec, tables: list[str]) -> None:
    from pos_lakehouse.layers.gold import gold_metadata, refresh_gold

    for name in tables:
        r = refresh_gold(lake, spec, name)
        pipes.log.info(f"gold.{name}[{r.data_provider_code}]: merged {r.merged_rows} changed silver rows (spark)")
        metadata = _plain(gold_metadata(r, lake.gold(name), "spark"))
        pipes.report_asset_materialization(asset_key=f"gold/{name}", metadata=_pipes_metadata(metadata))
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
