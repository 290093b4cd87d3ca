"""Catch-up sensor: tables left behind their upstream after a killed or failed run.

When a run is killed (kill -9, OOM, a reboot), whatever it had not finished stays undone: bronze
rows silver has not consumed, silver rows gold has not merged. "Eager" automation only reacts to
*new* upstream materializations, and the killed run's upstream was already handled.
`stale_assets` finds them at the data level -- from the bookmarks each table keeps in its Delta
commits, not from run history -- and the `catch_up_sensor` requests exactly those assets.
(The killed run's record and its pool slots are settled by the daemon's run monitoring -- every
run, `pos-lakehouse run`'s included, is launched by the daemon -- and by `pool_claims_sensor`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg
import polars as pl

from pos_lakehouse.layers.gold import GOLD_TABLES
from pos_lakehouse.retailer import RetailerSpec, load_retailer_specs
from pos_lakehouse.sensors.instance import instance_of, resource_of
from pos_lakehouse.sensors.pool_claims import build_pool_claims_sensor
from pos_lakehouse.sensors.reference import build_reference_refresh_sensor
from pos_lakehouse.sensors.running import running_sensor
from pos_lakehouse.sensors.runs import busy_assets, chosen, silver_keys
from pos_lakehouse.sensors.targets import ingest_request
from pos_lakehouse.settings import retailers_dir
from pos_lakehouse.storage.lake import Lake

_GOLD_MARK_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"
_LAYER = {"bronze": 0, "silver": 1, "gold": 2}
CATCH_UP_TAGS = {"pos_lakehouse/catch_up": "true"}


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
            updated = silver_updated[table] = _max_updated_at(lake, lake.silver(spec.name, table))
            if updated is None:
                continue
            mark = _parse(lake.bookmarks(lake.gold(table)).get(f"silver_updated_at.{code}"), _GOLD_MARK_FORMAT)
            if mark is None or updated > mark:
                found.append(Stale(dg.AssetKey(["gold", table]), code, f"silver updated at {updated}, merged up to {mark}"))
    return sorted(found, key=lambda s: _LAYER.get(s.key.path[0], 3))


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
    busy = busy_assets(instance, specs)
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


def build_catch_up_sensor(specs: list[RetailerSpec] | None = None) -> dg.Definitions:
    """The catch-up, reference refresh and pool-claims sensors. `specs`: the code location's
    retailers (default: the shipped retailer YAMLs).

    A retailer's silver is re-run as a run of its silver assets, tagged as the retailer's run
    (`sensors.targets`); a gold table's partition as a run of that table alone (each gold table
    has its own partitions, and one run's assets share a partitions definition). Both are runs of
    the code location's asset job: a job per retailer or table costs the daemon a snapshot read at
    every workspace refresh.
    """
    if specs is None:
        specs = load_retailer_specs(retailers_dir())
    by_code = {spec.data_provider_code: spec for spec in specs}
    gold_keys = [dg.AssetKey(["gold", t]) for t in GOLD_TABLES if any(t in spec.silver_tables for spec in specs)]

    @running_sensor(
        "catch_up_sensor",
        300,
        "Requests any silver or gold asset whose upstream Delta table holds data newer than it consumed "
        "(after a killed or failed run), whatever happened to the last run; checked every 5 minutes.",
        asset_selection=dg.AssetSelection.assets(*(k for spec in specs for k in silver_keys(spec)), *gold_keys),
    )
    def catch_up_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        lake: Lake = resource_of(context, "lake")  # built once per process (`sensors.instance`)
        assert context.repository_def is not None  # a sensor of the code location is evaluated with it
        graph = context.repository_def.asset_graph
        requests, stale = catch_up_requests(lake, instance_of(context), graph, chosen(specs))
        if not requests:
            return dg.SensorResult(skip_reason="every silver and gold table has consumed its upstream")
        for s in stale:
            context.log.info(f"{s.key.to_user_string()}[{s.partition}] is behind: {s.reason}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(asset_selection=keys, partition_key=code, tags=CATCH_UP_TAGS)
                if keys[0].path[0] == "gold"
                else ingest_request(by_code[code], keys=keys, tags=CATCH_UP_TAGS)
                for keys, code in requests
            ]
        )

    return dg.Definitions(sensors=[catch_up_sensor, build_reference_refresh_sensor(specs), build_pool_claims_sensor()])
