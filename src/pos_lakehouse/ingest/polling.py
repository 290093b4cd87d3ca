"""Pulled retailers (API, database) in Dagster: the bronze pull step and the sensor that polls the source.

The sensor asks the source a cheap question ("anything changed after our durable position?")
and turns news into a run whose key is derived from the position and the answer: the same
source state never starts two runs, and a run that failed for a position is retried a few
times under derived keys (`-retry1`, ...) before the sensor gives up and says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import dagster as dg

from pos_lakehouse.ingest.pulled import PullOutcome
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import only_retailers, sensor_interval
from pos_lakehouse.storage.lake import Lake

PULLED_CHANNELS = ("api", "database")
MAX_ATTEMPTS_PER_POSITION = 3


def is_pulled(spec: RetailerSpec) -> bool:
    return spec.delivery.channel in PULLED_CHANNELS


def pull(lake: Lake, spec: RetailerSpec, tables: list[str] | None, log: Callable[[str], None] | None = None) -> list[PullOutcome]:
    """Pull the retailer's source into bronze (all tables, or the named ones)."""
    if spec.delivery.channel == "api":
        from pos_lakehouse.ingest.api import pull_api

        return pull_api(lake, spec, tables, log=log)
    from pos_lakehouse.ingest.database import pull_database

    return pull_database(lake, spec, tables, log=log)


def probe(lake: Lake, spec: RetailerSpec) -> dict:
    if spec.delivery.channel == "api":
        from pos_lakehouse.ingest.api import probe_api

        return probe_api(lake, spec)
    from pos_lakehouse.ingest.database import probe_database

    return probe_database(lake, spec)


def pulled_bronze_results(
    context: dg.AssetExecutionContext, lake: Lake, spec: RetailerSpec, tables: list[str], key_for: Callable[[str], dg.AssetKey]
) -> Iterator[dg.MaterializeResult]:
    """The bronze step of an api/database retailer: pull, then one materialization per selected table."""
    selected = [f.name for f in spec.delivery.files if key_for(f.name) in context.selected_asset_keys]
    wanted = [t for t in (tables or selected) if t in selected]
    outcomes = pull(lake, spec, wanted, log=context.log.info)
    for o in outcomes:
        yield dg.MaterializeResult(
            asset_key=key_for(o.table),
            metadata={
                "source": o.source,
                "deliveries_appended": o.deliveries,
                "rows_appended": o.rows,
                "skipped_already_in_bronze": o.duplicates_skipped,
                "source_requests": o.requests,
                "position_before": dg.MetadataValue.json(o.state_before),
                "position_after": dg.MetadataValue.json(o.state_after),
                "dagster/uri": lake.bronze(spec.name, o.table),
            },
        )


def _key_for_attempt(context: dg.SensorEvaluationContext, base: str) -> str | None:
    """The base key, or `-retryN` after failed runs with the earlier keys; None after too many failures."""
    for attempt in range(MAX_ATTEMPTS_PER_POSITION):
        key = base if attempt == 0 else f"{base}-retry{attempt}"
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
        if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
            return key
    return None


def build_poll_sensor(spec: RetailerSpec, job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{spec.name}_poll_sensor",
        job_name=job_name,
        minimum_interval_seconds=sensor_interval(spec.delivery.poll_seconds),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Asks {spec.name}'s {spec.delivery.channel} whether anything changed after the position stored "
        "with bronze; news becomes a pull run (run key derived from position and news).",
    )
    def poll_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult | dg.SkipReason:
        chosen = only_retailers()
        if chosen is not None and spec.name not in chosen:  # `pos-lakehouse run --retailer ...` chose others
            return dg.SkipReason(f"{spec.name} is not among the retailers chosen for this run")
        try:
            news = probe(lake, spec)
        except Exception as exc:  # unreachable source or missing settings: say so on the tick, try again next time
            return dg.SkipReason(f"{spec.name}: cannot ask the {spec.delivery.channel} source: {exc}")
        fresh = {k: v for k, v in news.items() if v}
        if not fresh:
            return dg.SkipReason(f"{spec.name}: nothing changed since the stored position")
        digest = hashlib.sha256(json.dumps(fresh, sort_keys=True).encode()).hexdigest()[:24]
        key = _key_for_attempt(context, f"{spec.name}-pull-{digest}")
        if key is None:
            return dg.SkipReason(
                f"{spec.name}: {MAX_ATTEMPTS_PER_POSITION} pull runs failed for the same position; see their logs "
                "(the next change at the source starts a new attempt)"
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=key,
                    partition_key=spec.data_provider_code,
                    tags={"retailer": spec.name, "pos_lakehouse/pull": ",".join(sorted(fresh))},
                )
            ]
        )

    return poll_sensor
