"""Reference-data sensors: corporate reference files landing, and retailers' silver refreshed after them.

`corporate_reference_landing_sensor` turns new reference files into a run of the reference
component's refresh job; `reference_refresh_sensor` re-runs a retailer's silver when reference data
it is enriched from lands after it.
"""

from __future__ import annotations

import json

import dagster as dg

from pos_lakehouse.ingest.landing import LandingZone
from pos_lakehouse.layers.reference import ReferenceSource, source_for
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.sensors.instance import instance_of, resource_of
from pos_lakehouse.sensors.landing import batch_digest
from pos_lakehouse.sensors.running import running_sensor
from pos_lakehouse.sensors.runs import IN_PROGRESS_RUN_STATUSES, busy_assets, chosen, silver_keys
from pos_lakehouse.sensors.targets import ingest_request

# The reference component's op, job and sensor (the refresh sensor waits while that job runs).
OP_NAME = "corporate_reference"
JOB_NAME = "corporate_reference_refresh"
SENSOR_NAME = "corporate_reference_landing_sensor"

# The corporate reference table each silver table is enriched from (defs/reference/).
REFERENCE_KEYS = {
    "prod_dim": dg.AssetKey(["reference", "product_master"]),
    "site_dim": dg.AssetKey(["reference", "site_master"]),
    "store_day_fact": dg.AssetKey(["reference", "fx_rates"]),
    "store_week_fact": dg.AssetKey(["reference", "fx_rates"]),
}


def build_reference_landing_sensor(
    folder: str, sources: dict[str, ReferenceSource], job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    """New or changed corporate reference files in landing `folder/` become one run of the refresh `job`."""

    @running_sensor(
        SENSOR_NAME,
        60,
        f"New or changed corporate reference files in landing `{folder}/` become a reference refresh run.",
        job=job,
    )
    def corporate_reference_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        landing: LandingZone = resource_of(context, "landing")  # built once per process (`sensors.instance`)
        cursor = json.loads(context.cursor) if context.cursor else {}
        files = [f for f in landing.list_files(folder) if source_for(sources, f.name)]
        new = [f for f in files if cursor.get(f.name) != f.identity]
        # As the retailers' landing sensors: the cursor holds only what is listed now, so it
        # does not grow with files taken away.
        cursor = {f.name: f.identity for f in files}
        if not new:
            return dg.SensorResult(skip_reason="no new reference files", cursor=json.dumps(cursor))
        tables = sorted({t for f in new if (t := source_for(sources, f.name))})
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"reference-{batch_digest(new)}",
                    run_config={"ops": {OP_NAME: {"config": {"files": [f.name for f in new]}}}},
                    asset_selection=[dg.AssetKey(["reference", t]) for t in tables],
                    # Launched before queued retailer runs: those that start after it enrich with
                    # the new data instead of being refreshed again by `reference_refresh_sensor`.
                    tags={"dagster/priority": "1"},
                )
            ],
            cursor=json.dumps(cursor),
        )

    return corporate_reference_sensor


def reference_refresh_requests(
    instance: dg.DagsterInstance, specs: list[RetailerSpec], reference_keys: dict[str, dg.AssetKey]
) -> list[tuple[RetailerSpec, int]]:
    """Retailers whose silver was built before the latest corporate reference data it is enriched from.

    Read from the event log (one query for all assets): a retailer is due when a reference table it
    uses was materialized after its silver tables last were. A retailer whose silver does not exist
    yet is not: its first delivery run enriches with what is there.
    """
    used = {s.name: {t: reference_keys[t] for t in s.silver_tables if t in reference_keys and t not in s.derived_tables} for s in specs}
    silver_keys = {dg.AssetKey(["silver", s.name, t]) for s in specs for t in used[s.name]}
    records = {
        r.asset_entry.asset_key: r.asset_entry
        for r in instance.get_asset_records(sorted({*reference_keys.values(), *silver_keys}, key=str))
    }

    def last(key: dg.AssetKey) -> int | None:
        entry = records.get(key)
        return entry.last_materialization_record.storage_id if entry and entry.last_materialization_record else None

    due = []
    for spec in specs:
        behind = [
            ref_id
            for table, ref in used[spec.name].items()
            if (ref_id := last(ref)) is not None
            and (silver_id := last(dg.AssetKey(["silver", spec.name, table]))) is not None
            and silver_id < ref_id
        ]
        if behind:
            due.append((spec, max(behind)))
    return due


def build_reference_refresh_sensor(specs: list[RetailerSpec]) -> dg.SensorDefinition:
    """Re-runs a retailer's silver (which then publishes its gold partitions) when corporate
    reference data it uses lands after it: late FX rates fill `*_usd`, a corrected master re-enriches.

    A sensor over the event log, not an automation condition on every silver asset: its cost is one
    query per tick whatever the number of retailers.
    """

    @running_sensor(
        "reference_refresh_sensor",
        30,
        "Re-enriches retailers' silver (and so their gold) when product master, site master or FX rates land after it.",
        asset_selection=dg.AssetSelection.assets(*(k for spec in specs for k in silver_keys(spec))),
    )
    def reference_refresh_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        loading = dg.RunsFilter(job_name=JOB_NAME, statuses=[dg.DagsterRunStatus.QUEUED, *IN_PROGRESS_RUN_STATUSES])
        instance = instance_of(context)  # one per process (`sensors.instance`)
        if instance.get_run_records(filters=loading, limit=1):
            # One refresh per retailer once every reference table of the load is in, not one per table.
            return dg.SensorResult(skip_reason="corporate reference data is being loaded; retailers are refreshed once it is in")
        due = reference_refresh_requests(instance, chosen(specs), REFERENCE_KEYS)
        busy = busy_assets(instance, specs)
        requests = [
            ingest_request(
                spec,
                keys=silver_keys(spec),
                # One run per retailer and reference event: a later tick does not launch it again.
                run_key=f"{spec.name}-reference-{storage_id}",
                tags={"pos_lakehouse/reference_refresh": "true"},
            )
            for spec, storage_id in due
            if not any((dg.AssetKey(["silver", spec.name, t]), spec.data_provider_code) in busy for t in spec.silver_tables)
        ]
        if not requests:
            return dg.SensorResult(skip_reason="every retailer's silver is newer than the reference data it uses")
        return dg.SensorResult(run_requests=requests)

    return reference_refresh_sensor
