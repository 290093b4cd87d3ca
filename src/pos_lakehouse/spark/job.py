"""The Spark job for big retailers: one entry point, run through Dagster Pipes wherever Spark is.

Locally `SparkJobs` runs it as `python -m pos_lakehouse.spark.job`, a client of the step's local
Spark Connect server (`POS_LAKEHOUSE_SPARK_REMOTE`) or with a Spark of its own; on Databricks the
same file is the `spark_python_task` of a submitted run. The Pipes extras say what to do:
`{"command": "silver" | "gold", "retailer": <RetailerSpec>, "tables": [...], "data_root": ..., "now": ...}`.
It runs the `layers/` code on a `SparkLake` and reports per table a materialization and the engine-neutral
result (from which the asset evaluates its checks). It needs `dagster-pipes`, not `dagster` or `pandera`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime

# Spark returns timestamps as naive datetimes in the process time zone: pin it to UTC first.
os.environ["TZ"] = "UTC"
if hasattr(time, "tzset"):
    time.tzset()

TRANSPORTS = ("local", "dbfs", "volumes")
REMOTE_ENV = "POS_LAKEHOUSE_SPARK_REMOTE"


def _pipes(transport: str):
    """The Pipes context for where the job runs (bootstrap from CLI arguments or environment)."""
    import dagster_pipes as dp

    params = dp.PipesCliArgsParamsLoader() if "--dagster-pipes-context" in sys.argv else dp.PipesEnvVarParamsLoader()
    if transport == "dbfs":
        return dp.open_dagster_pipes(
            context_loader=dp.PipesDbfsContextLoader(), message_writer=dp.PipesDbfsMessageWriter(), params_loader=params
        )
    if transport == "volumes":
        loader, writer = dp.PipesUnityCatalogVolumesContextLoader(), dp.PipesUnityCatalogVolumesMessageWriter()
        return dp.open_dagster_pipes(context_loader=loader, message_writer=writer, params_loader=params)
    return dp.open_dagster_pipes(params_loader=params)


def _session(pipes, spec, extras: Mapping):
    """A Spark Connect server's session (the step's own, or one `POS_LAKEHOUSE_SPARK_REMOTE` names),
    the Databricks cluster's, or a Spark of its own on `extras["master"]`; with the job's settings."""
    from pyspark.sql import SparkSession

    from pos_lakehouse.spark.session_conf import apply_job_settings

    if os.environ.get(REMOTE_ENV):  # its token comes from SPARK_CONNECT_AUTHENTICATE_TOKEN
        spark = SparkSession.builder.remote(os.environ[REMOTE_ENV]).getOrCreate()
    elif "DATABRICKS_RUNTIME_VERSION" in os.environ:
        spark = SparkSession.builder.getOrCreate()
    else:
        from pos_lakehouse.spark.session import local_spark

        spark = local_spark("pos_lakehouse_job", master=extras.get("master", "local"), job_settings=False)
    partitions = int(extras.get("shuffle_partitions") or 2)
    apply_job_settings(spark, shuffle_partitions=partitions, spec=spec, warn=pipes.log.warning)
    return spark


def _report(pipes, asset_key: str | None, metadata: dict, message: dict) -> None:
    """Metadata and message as Pipes carries them: JSON-safe (dates as ISO text), dicts as JSON values.

    Without an asset key only the message goes: gold is published from a retailer's silver step,
    whose Pipes context knows only the silver keys; the step records the gold materializations.
    """
    metadata, message = json.loads(json.dumps([metadata, message], default=str))
    if asset_key is not None:
        metadata = {
            k: {"raw_value": v, "type": "table_schema" if k == "dagster/column_schema" else "json"} if isinstance(v, dict) else v
            for k, v in metadata.items()
        }
        pipes.report_asset_materialization(asset_key=asset_key, metadata=metadata)
    pipes.report_custom_message({**message, "metadata": metadata})


def run_silver(pipes, lake, spec, tables: list[str], now: datetime) -> None:
    """`refresh_silver` on a `SparkLake`; the asset evaluates the checks on the written tables."""
    from pos_lakehouse.layers.silver import CALENDAR, refresh_silver, silver_metadata

    # The delivery calendar (days x stores) is built in the Dagster process, from what this job wrote.
    for name, r in refresh_silver(lake, spec, [t for t in tables if t != CALENDAR], now).items():
        uri = lake.silver(spec.name, name)
        if r.quarantined:
            pipes.log.warning(f"{spec.name}.{name}: {r.quarantined} row(s) quarantined: {r.quarantine_reasons}")
        metadata = silver_metadata(r, lake.row_count(uri), uri, "spark")
        _report(pipes, f"silver/{spec.name}/{name}", metadata, {"table": name, "silver": asdict(r)})


def run_gold(pipes, lake, spec, tables: list[str]) -> None:
    from pos_lakehouse.layers.gold import gold_metadata, refresh_gold

    for name in tables:
        r = refresh_gold(lake, spec, name)
        pipes.log.info(f"gold.{name}[{r.data_provider_code}]: merged {r.merged_rows} changed silver rows (spark)")
        _report(pipes, None, gold_metadata(r, lake.gold(name), "spark"), {"table": name, "gold": asdict(r)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--transport", choices=TRANSPORTS, default=os.environ.get("POS_LAKEHOUSE_PIPES_TRANSPORT", "local"))
    args, _ = parser.parse_known_args(argv)  # Pipes' own bootstrap arguments pass through
    with _pipes(args.transport) as pipes:
        from pos_lakehouse.retailer import RetailerSpec
        from pos_lakehouse.spark.lake import SparkLake

        extras = pipes.extras
        spec = RetailerSpec.model_validate(extras["retailer"])
        started = time.monotonic()
        spark = _session(pipes, spec, extras)
        via = "Spark Connect" if os.environ.get(REMOTE_ENV) else spark.conf.get("spark.master", "?")
        pipes.log.info(f"{spec.name}: Spark {spark.version} ready in {time.monotonic() - started:.1f}s ({via})")
        lake = SparkLake(spark, extras["data_root"], bookmarks_in=extras.get("bookmarks_in", "auto"))
        tables = list(extras["tables"])
        if extras["command"] == "silver":
            run_silver(pipes, lake, spec, tables, datetime.fromisoformat(extras["now"]))
        elif extras["command"] == "gold":
            run_gold(pipes, lake, spec, tables)
        else:
            raise ValueError(f"unknown command {extras['command']!r}")
        if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
            spark.stop()  # a Connect client releases its server-side session; the server stays


if __name__ == "__main__":
    main()
