"""The settings the Spark job sets on whatever session it gets: its own, a shared local server's, a
cluster's, a Spark Connect server's or Databricks serverless'.

A server's defaults are not the job's: Spark Connect and Databricks serverless say `Etc/UTC` where
the rules write `UTC` timestamps (narwhals refuses a time zone other than the session's), a cluster
keeps Spark's 200 shuffle partitions, and Databricks serverless refuses most settings. So the job
sets each one itself, in three kinds:

- required: what the rules' results depend on, and which every Spark (serverless included) lets a
  session set. The job stops at start with one line naming a setting the session refuses;
- tuning: sized for the job's batches; serverless allows it, a refusal only costs speed;
- best effort: what serverless refuses and the job can do without there (a refusal is logged);
  `spark.sql.caseSensitive` is required only for a retailer whose files hold two column names
  that differ by case alone (`case_sensitivity_needed`).
"""

from __future__ import annotations

from collections.abc import Callable

from pos_lakehouse.retailer import RetailerSpec

# The rules write timestamps as UTC (`transform.canonical`); narwhals' Spark backend accepts only the
# session's own zone name, so the session must say `UTC` too (Spark Connect's default is `Etc/UTC`).
REQUIRED = {"spark.sql.session.timeZone": "UTC"}
CASE_SENSITIVE = "spark.sql.caseSensitive"
BEST_EFFORT = {
    # Polars matches column names exactly; Spark must too (`Date` and `date` are two columns).
    CASE_SENSITIVE: "true",
    # Whole-stage code generation compiles each query: on a delivery's batches it costs more than it saves.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.autoBroadcastJoinThreshold": str(64 * 1024 * 1024),
    # Readable by every Delta reader (delta-rs included): micro-second timestamps, no INT96.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Tables stay at the protocol delta-rs writes too, so Polars retailers can share gold (tables
    # this engine creates also say so in their properties, which needs no session setting).
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.databricks.delta.schema.autoMerge.enabled": "true",
    "spark.databricks.delta.snapshotPartitions": "2",  # log replay uses 50 partitions otherwise
}


class SessionSettingError(RuntimeError):
    """The session refuses a setting the job's results depend on."""


def tuning(shuffle_partitions: int) -> dict[str, str]:
    partitions = str(max(1, shuffle_partitions))
    return {"spark.sql.shuffle.partitions": partitions, "spark.sql.adaptive.coalescePartitions.initialPartitionNum": partitions}


def case_sensitivity_needed(spec: RetailerSpec) -> bool:
    """Whether a file kind of the retailer maps two source columns whose names differ only by case."""
    for mapping in spec.columns.values():
        lowered = [name.lower() for name in mapping]
        if len(lowered) != len(set(lowered)):
            return True
    return False


def apply_job_settings(
    spark, *, shuffle_partitions: int, spec: RetailerSpec | None = None, warn: Callable[[str], None] = lambda _: None
) -> list[str]:
    """Set the job's settings on `spark`; the best-effort ones it refused, by name (each also `warn`ed).

    Raises `SessionSettingError` (one line, naming the setting) when a required one is refused, or
    does not read back as set (a server may ignore a session's change of a static setting)."""
    required = dict(REQUIRED)
    if spec is not None and case_sensitivity_needed(spec):
        required[CASE_SENSITIVE] = "true"
    for key, value in required.items():
        error = _set(spark, key, value)
        if error is None and str(spark.conf.get(key)).lower() != value.lower():
            error = f"it reads back as {spark.conf.get(key)!r}"
        if error is not None:
            raise SessionSettingError(f"the Spark session refuses the setting the job needs: {key}={value} ({error})")
    refused = []
    for key, value in {**tuning(shuffle_partitions), **{k: v for k, v in BEST_EFFORT.items() if k not in required}}.items():
        error = _set(spark, key, value)
        if error is not None:
            refused.append(key)
            warn(f"the Spark session refuses {key}={value}; carrying on without it ({error})")
    return refused


def _set(spark, key: str, value: str) -> str | None:
    try:
        spark.conf.set(key, value)
    except Exception as exc:  # noqa: BLE001 - classic and Connect sessions raise different types for a refused setting
        return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return None
