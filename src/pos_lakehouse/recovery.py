"""Recovery without a person: tables left behind their upstream, and pool claims left waiting.

Two things go wrong when a run is killed (kill -9, OOM, a reboot):

- its run record stays STARTED and the concurrency slots it claimed (a gold table's pool)
  stay taken, so automation waits for it forever and the next writer of that table hangs;
- whatever it had not finished stays undone: bronze rows silver has not consumed, silver rows
  gold has not merged. "Eager" automation only reacts to *new* upstream materializations, and
  the killed run's upstream was already handled.

The daemon's run monitoring settles the first (every run, `pos-lakehouse run`'s included, is
launched by the daemon through the instance's run launcher; see `.dagster_home/dagster.yaml`).
`stale_assets` finds the second at the data level -- from the bookmarks each table keeps in its
Delta commits, not from run history -- and the `catch_up_sensor` requests exactly those assets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg
import polars as pl

from pos_lakehouse.components.reference_data import JOB_NAME as REFERENCE_JOB
from pos_lakehouse.components.retailer_pipeline import REFERENCE_KEYS
from pos_lakehouse.layers.gold import GOLD_TABLES
from pos_lakehouse.retailer import RetailerSpec, load_retailer_specs
from pos_lakehouse.settings import only_retailers, retailers_dir, sensor_interval
from pos_lakehouse.storage.lake import Lake

# Run states from the public enum (the same sets Dagster keeps internally).
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
IN_PROGRESS_RUN_STATUSES = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUSPENDED,
]

_GOLD_MARK_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"
_LAYER = {"bronze": 0, "silver": 1, "gold": 2}


# ---- pool claims ----------------------------------------------------------------------------
def assign_stranded_pool_claims(instance: dg.DagsterInstance) -> list[str]:
    """Hand free pool slots to steps left waiting for them; returns the pools it unblocked.

    A step that asks for a pool's slot just as the holder frees it can be queued after the holder
    has already looked for someone to hand the slot to: it then waits for a hand-over that never
    comes (Dagster's SQL storage checks for a free slot and queues the step in two statements).
    Such a run would wait forever; handing free slots to queued steps, as the storage does when a
    slot is freed, lets it go on. It never assigns more steps than a pool has slots.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    unblocked = []
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        free = info.slot_count - info.assigned_step_count
        if info.pending_step_count and free > 0:
            for _ in range(min(free, info.pending_step_count)):
                storage.assign_pending_steps([key])
            unblocked.append(key)
    return unblocked


def build_pool_claims_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="pool_claims_sensor",
        minimum_interval_seconds=sensor_interval(30),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Hands free pool slots (silver, gold, ingest) to steps left waiting for them; "
        "without it, a step that asked just as the slot was freed would wait forever.",
    )
    def pool_claims_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        unblocked = assign_stranded_pool_claims(context.instance)
        return dg.SkipReason(f"unblocked waiting steps of {', '.join(unblocked)}" if unblocked else "no step waits for a free slot")

    return pool_claims_sensor


# ---- stale data -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Stale:
    key: dg.AssetKey
    partition: str
    reason: str


def _max_updated_at(lake: Lake, uri: str) -> datetime | None:
    dt = lake.snapshot(uri)
    if dt is None or "_updated_at" not in pl.Schema(dt.schema().to_arrow()).names():
        return None
    return pl.scan_delta(dt).select(pl.col("_updated_at").max()).collect().item()


def _parse(mark: str | None, fmt: str | None = None) -> datetime | None:
    if not mark:
        return None
    try:
        return datetime.strptime(mark, fmt) if fmt else datetime.fromisoformat(mark)
    except ValueError:
        return None


def stale_assets(lake: Lake, specs: list[RetailerSpec], gold_tables: set[str] | None = None) -> list[Stale]:
    """Assets whose upstream table holds data newer than what they last consumed, lowest layer first.

    Silver: a bronze table's version is past the version the silver table bookmarked. Derived
    silver (week/month): daily silver rows updated after its `day_updated_at` mark. Gold: the
    retailer's silver rows updated after the gold table's `silver_updated_at.<code>` watermark.
    """
    found: list[Stale] = []
    for spec in specs:
        code = spec.data_provider_code
        silver_updated: dict[str, datetime | None] = {}
        for table in spec.silver_tables:
            key = dg.AssetKey(["silver", spec.name, table])
            uri = lake.silver(spec.name, table)
            marks = lake.bookmarks(uri)
            if table in spec.derived_tables:
                day = _max_updated_at(lake, lake.silver(spec.name, "store_day_fact"))
                mark = _parse(marks.get("day_updated_at"))
                if day is not None and (mark is None or day > mark):
                    found.append(Stale(key, code, f"daily silver updated at {day}, consumed up to {mark}"))
                continue
            for file_spec in spec.files_holding(table):
                version = lake.version(lake.bronze(spec.name, file_spec.name))
                consumed = marks.get(f"bronze.{file_spec.name}")
                if version is not None and (consumed is None or int(consumed) < version):
                    found.append(Stale(key, code, f"bronze.{file_spec.name} at version {version}, consumed {consumed}"))
                    break
        for table in spec.silver_tables:
            if gold_tables is not None and table not in gold_tables:
                continue
            silver_updated[table] = _max_updated_at(lake, lake.silver(spec.name, table))
            if silver_updated[table] is None:
                continue
            mark = _parse(lake.bookmarks(lake.gold(table)).get(f"silver_updated_at.{code}"), _GOLD_MARK_FORMAT)
            if mark is None or silver_updated[table] > mark:
                found.append(Stale(dg.AssetKey(["gold", table]), code, f"silver updated at {silver_updated[table]}, merged up to {mark}"))
    return sorted(found, key=lambda s: _LAYER.get(s.key.path[0], 3))


def _busy_assets(instance: dg.DagsterInstance, specs: list[RetailerSpec]) -> set[tuple[dg.AssetKey, str | None]]:
    """(asset, partition) pairs a queued or in-progress run may still write.

    A run of a whole asset job names no asset selection, and a run that writes a retailer's silver
    (its delivery run, a catch-up or reference refresh of its silver) also publishes its partitions
    of every gold table from the silver step: both are read from the job and the retailer.
    Queued runs count too: a catch-up requested beside one would only do its work twice.
    """
    by_name = {s.name: s for s in specs}
    by_job = {f"{s.name}{suffix}": s.name for s in specs for suffix in ("_ingest", "_catch_up")}
    gold_jobs = {f"gold_{t}_catch_up": t for t in GOLD_TABLES}
    busy: set[tuple[dg.AssetKey, str | None]] = set()
    statuses = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, *IN_PROGRESS_RUN_STATUSES]
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=statuses)):
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        keys = set(run.asset_selection or [])
        if run.job_name in gold_jobs and not keys:
            keys.add(dg.AssetKey(["gold", gold_jobs[run.job_name]]))
        writers = {run.tags.get("pos_lakehouse/ingest", ""), by_job.get(run.job_name, "")}
        writers |= {k.path[1] for k in keys if k.path[0] == "silver" and len(k.path) > 2}
        for spec in (by_name[n] for n in sorted(writers) if n in by_name):
            partition = partition or spec.data_provider_code
            keys |= {dg.AssetKey(["silver", spec.name, t]) for t in spec.silver_tables}
            keys |= {dg.AssetKey(["gold", t]) for t in spec.silver_tables if t in GOLD_TABLES}
        busy |= {(k, partition) for k in keys}
    return busy


def _blocking_checks_failed(instance: dg.DagsterInstance, graph, key: dg.AssetKey) -> bool:
    """Whether the latest evaluation of any blocking check of `key` failed (then nothing downstream runs)."""
    if key not in graph.get_all_asset_keys():
        return False
    check_keys = [ck for ck in graph.asset_check_keys if ck.asset_key == key]
    if not check_keys:
        return False
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    for record in records.values():
        data = record.event.dagster_event.event_specific_data if record and record.event and record.event.dagster_event else None
        if isinstance(data, dg.AssetCheckEvaluation) and not data.passed and data.severity == dg.AssetCheckSeverity.ERROR:
            return True
    return False


def catch_up_requests(
    lake: Lake, instance: dg.DagsterInstance, defs_graph, specs: list[RetailerSpec]
) -> tuple[list[tuple[list[dg.AssetKey], str]], list[Stale]]:
    """What to materialize now so nothing stays behind its upstream: (asset keys, partition) per run.

    Per retailer only the lowest stale layer is requested (a silver run publishes the
    retailer's gold partitions itself); assets in an in-progress run are left to it; gold waits while the retailer's
    silver has a failed blocking check, as automation does.
    """
    gold = {k.path[1] for k in defs_graph.get_all_asset_keys() if k.path[0] == "gold"}
    stale = [s for s in stale_assets(lake, specs, gold) if s.key in defs_graph.get_all_asset_keys()]
    busy = _busy_assets(instance, specs)
    by_retailer: dict[str, list[Stale]] = {}
    for s in stale:
        by_retailer.setdefault(s.partition, []).append(s)
    requests = []
    for code, items in by_retailer.items():
        lowest = min(_LAYER.get(s.key.path[0], 3) for s in items)
        keys = sorted({s.key for s in items if _LAYER.get(s.key.path[0], 3) == lowest}, key=lambda k: k.to_user_string())
        if lowest == 2:
            spec = next(sp for sp in specs if sp.data_provider_code == code)
            keys = [k for k in keys if not _blocking_checks_failed(instance, defs_graph, dg.AssetKey(["silver", spec.name, k.path[1]]))]
        keys = [k for k in keys if (k, code) not in busy and (k, None) not in busy]
        if lowest == 2:
            # Each gold table has its own partitions (only the retailers that deliver its grain),
            # and one run's assets must share a partitions definition: one run per table.
            requests.extend(([k], code) for k in keys)
        elif keys:
            requests.append((keys, code))
    return requests, stale


def _chosen(specs: list[RetailerSpec]) -> list[RetailerSpec]:
    """The retailers this process tree's sensors act for (all, unless `pos-lakehouse run --retailer` chose some)."""
    chosen = only_retailers()
    return specs if chosen is None else [s for s in specs if s.name in chosen]


def build_catch_up_sensor(
    specs: list[RetailerSpec] | None = None, ingest_jobs: dict[str, dg.UnresolvedAssetJobDefinition] | None = None
) -> dg.Definitions:
    """The catch-up and reference refresh sensors and the jobs they target. `specs`: the code
    location's retailers (default: the shipped retailer YAMLs).

    A retailer's silver is re-run as a subset (its silver tables) of its own ingest job
    (`ingest_jobs`, by retailer name, as the retailers' components built them): every job costs the
    daemon a snapshot fetched from the code server at each workspace refresh, so no second job per
    retailer. Without `ingest_jobs`, a `<name>_catch_up` job per retailer is defined here. Gold has
    one job per table (a run's assets must share a partitions definition).
    """
    if specs is None:
        specs = load_retailer_specs(retailers_dir())
    own_jobs = ingest_jobs is None
    jobs = {
        spec.data_provider_code: (
            dg.define_asset_job(
                f"{spec.name}_catch_up",
                selection=dg.AssetSelection.assets(*_silver_keys(spec)),
                description=f"Silver tables of {spec.name} behind their bronze data (requested by catch_up_sensor).",
            )
            if ingest_jobs is None
            else ingest_jobs[spec.name]
        )
        for spec in specs
        if ingest_jobs is None or spec.name in ingest_jobs
    }
    gold_jobs = {
        table: dg.define_asset_job(
            f"gold_{table}_catch_up",
            selection=dg.AssetSelection.assets(dg.AssetKey(["gold", table])),
            description=f"Gold {table} partitions behind their retailer's silver data (requested by catch_up_sensor).",
        )
        for table in GOLD_TABLES
        if any(table in spec.silver_tables for spec in specs)
    }

    @dg.sensor(
        name="catch_up_sensor",
        jobs=[*jobs.values(), *gold_jobs.values()],
        minimum_interval_seconds=sensor_interval(300),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests any silver or gold asset whose upstream Delta table holds data newer than it consumed "
        "(after a killed or failed run), whatever happened to the last run; checked every 5 minutes.",
    )
    def catch_up_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult:
        graph = context.repository_def.asset_graph
        requests, stale = catch_up_requests(lake, context.instance, graph, _chosen(specs))
        if not requests:
            return dg.SensorResult(skip_reason="every silver and gold table has consumed its upstream")
        for s in stale:
            context.log.info(f"{s.key.to_user_string()}[{s.partition}] is behind: {s.reason}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    job_name=(gold_jobs[keys[0].path[1]] if keys[0].path[0] == "gold" else jobs[code]).name,
                    asset_selection=keys,
                    partition_key=code,
                    tags={"pos_lakehouse/catch_up": "true"},
                )
                for keys, code in requests
            ]
        )

    reference_sensor = build_reference_refresh_sensor(specs, jobs)
    return dg.Definitions(
        sensors=[catch_up_sensor, reference_sensor, build_pool_claims_sensor()],
        jobs=[*(jobs.values() if own_jobs else []), *gold_jobs.values()],
    )


def _silver_keys(spec: RetailerSpec) -> list[dg.AssetKey]:
    return [dg.AssetKey(["silver", spec.name, t]) for t in spec.silver_tables]


# ---- reference data landed after silver ------------------------------------------------------
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


def build_reference_refresh_sensor(specs: list[RetailerSpec], jobs: dict[str, dg.UnresolvedAssetJobDefinition]) -> dg.SensorDefinition:
    """Re-runs a retailer's silver (which then publishes its gold partitions) when corporate
    reference data it uses lands after it: late FX rates fill `*_usd`, a corrected master re-enriches.

    A sensor over the event log, not an automation condition on every silver asset: its cost is one
    query per tick whatever the number of retailers.
    """

    @dg.sensor(
        name="reference_refresh_sensor",
        jobs=list(jobs.values()),
        minimum_interval_seconds=sensor_interval(30),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-enriches retailers' silver (and so their gold) when product master, site master or FX rates land after it.",
    )
    def reference_refresh_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        loading = dg.RunsFilter(job_name=REFERENCE_JOB, statuses=[dg.DagsterRunStatus.QUEUED, *IN_PROGRESS_RUN_STATUSES])
        if context.instance.get_run_records(filters=loading, limit=1):
            # One refresh per retailer once every reference table of the load is in, not one per table.
            return dg.SensorResult(skip_reason="corporate reference data is being loaded; retailers are refreshed once it is in")
        due = reference_refresh_requests(context.instance, _chosen(specs), REFERENCE_KEYS)
        busy = _busy_assets(context.instance, specs)
        requests = [
            dg.RunRequest(
                job_name=jobs[spec.data_provider_code].name,
                asset_selection=_silver_keys(spec),
                partition_key=spec.data_provider_code,
                # One run per retailer and reference event: a later tick does not launch it again.
                run_key=f"{spec.name}-reference-{storage_id}",
                tags={"retailer": spec.name, "pos_lakehouse/reference_refresh": "true"},
            )
            for spec, storage_id in due
            if not any((dg.AssetKey(["silver", spec.name, t]), spec.data_provider_code) in busy for t in spec.silver_tables)
        ]
        if not requests:
            return dg.SensorResult(skip_reason="every retailer's silver is newer than the reference data it uses")
        return dg.SensorResult(run_requests=requests)

    return reference_refresh_sensor
