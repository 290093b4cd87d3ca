"""What the sensors ask of the runs: which states count as finished or in flight, which assets a queued or
running run may still write, and which retailers this process's sensors act for."""

from __future__ import annotations

import dagster as dg

from pos_lakehouse.layers.gold import GOLD_TABLES
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.targets import INGEST_TAG
from pos_lakehouse.settings import only_retailers

# Run states from the public enum (the same sets Dagster keeps internally).
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
IN_PROGRESS_RUN_STATUSES = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
]


def busy_assets(instance: dg.DagsterInstance, specs: list[RetailerSpec]) -> set[tuple[dg.AssetKey, str | None]]:
    """(asset, partition) pairs a queued or in-progress run may still write.

    A run that writes a retailer's silver (its delivery run, a catch-up or reference refresh of its
    silver) also publishes its partitions of every gold table from the silver step: read from the
    retailer its tag or selection names.
    Queued runs count too: a catch-up requested beside one would only do its work twice.
    """
    by_name = {s.name: s for s in specs}
    busy: set[tuple[dg.AssetKey, str | None]] = set()
    statuses = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, *IN_PROGRESS_RUN_STATUSES]
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=statuses)):
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        keys = set(run.asset_selection or [])
        writers = {run.tags.get(INGEST_TAG, "")}
        writers |= {k.path[1] for k in keys if k.path[0] == "silver" and len(k.path) > 2}
        for spec in (by_name[n] for n in sorted(writers) if n in by_name):
            partition = partition or spec.data_provider_code
            keys |= {dg.AssetKey(["silver", spec.name, t]) for t in spec.silver_tables}
            keys |= {dg.AssetKey(["gold", t]) for t in spec.silver_tables if t in GOLD_TABLES}
        busy |= {(k, partition) for k in keys}
    return busy


def chosen(specs: list[RetailerSpec]) -> list[RetailerSpec]:
    """The retailers this process tree's sensors act for (all, unless `pos-lakehouse run --retailer` chose some)."""
    chosen = only_retailers()
    return specs if chosen is None else [s for s in specs if s.name in chosen]


def silver_keys(spec: RetailerSpec) -> list[dg.AssetKey]:
    return [dg.AssetKey(["silver", spec.name, t]) for t in spec.silver_tables]
