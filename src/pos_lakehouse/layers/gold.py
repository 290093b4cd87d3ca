"""Gold: one Delta table per object type for all retailers, partitioned by `data_provider_code`.

Written once for both engines (narwhals frames over Polars or PySpark). A retailer's refresh MERGEs only the silver rows changed since its last refresh, and the
MERGE is restricted to that retailer's partition, so other retailers' files are untouched.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime

import narwhals as nw

from pos_lakehouse.layers.silver.result import date_span
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import silver_batch_rows
from pos_lakehouse.storage.interface import LakeIO, Writer
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.chunks import ranges_within

GOLD_TABLES = ("prod_dim", "site_dim", "store_day_fact", "store_week_fact", "store_month_fact", "delivery_calendar")
PARTITION_COLUMN = "data_provider_code"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"
log = logging.getLogger(__name__)
# A bookmark per retailer: its partition's keys were found unique once (writes since cannot double a key).
UNIQUE_KEYS_MARK = "unique_keys"


def gold_keys(table_name: str) -> list[str]:
    if table_name in ("prod_dim", "site_dim"):
        return [PARTITION_COLUMN, "prod_key" if table_name == "prod_dim" else "site_key"]
    return [PARTITION_COLUMN, *canonical.TABLES[table_name].natural_keys]


@dataclass
class GoldResult:
    table: str
    data_provider_code: str
    merged_rows: int = 0
    inserted: int = 0
    updated: int = 0
    min_date: date | None = None
    max_date: date | None = None
    partition_rows: int = 0
    duplicates_removed: int = 0  # rows of a key published twice (by an earlier version), removed by this refresh


def refresh_gold_tables(lake: LakeIO, spec: RetailerSpec, tables: list[str]) -> dict[str, GoldResult]:
    """`refresh_gold` for several tables of one retailer, two at a time.

    Each table's refresh reads its own silver table and writes its own gold table, and much of it
    (a Delta write, a MERGE) runs on one core outside the GIL: the largest table (the days) and the
    others (weeks, months, dimensions) then share the machine instead of queueing.
    """
    if len(tables) < 2:
        return {name: refresh_gold(lake, spec, name) for name in tables}
    with ThreadPoolExecutor(2, thread_name_prefix="pos_lakehouse_gold") as pool:
        futures = {name: pool.submit(refresh_gold, lake, spec, name) for name in tables}
        return {name: future.result() for name, future in futures.items()}


def refresh_gold(lake: LakeIO, spec: RetailerSpec, table_name: str) -> GoldResult:
    """MERGE one retailer's changed silver rows into its gold partition."""
    table = canonical.TABLES[table_name]
    code = spec.data_provider_code
    gold_uri = lake.gold(table_name)
    silver_uri = lake.silver(spec.name, table_name)
    result = GoldResult(table_name, code)
    # What this refresh consumes (the silver version, read before its rows) goes with each of its
    # commits: a second process publishing the same silver version is refused or skipped (`Writer`).
    consumed = lake.version(silver_uri)
    writer = Writer(f"gold/{table_name}/{code}", version=consumed, once=True) if consumed is not None else None
    pin = lake.pin(gold_uri)
    marks = lake.bookmarks(gold_uri)
    mark_key = f"silver_updated_at.{code}"
    watermark = marks.get(mark_key)
    silver = lake.read(silver_uri, table.schema)
    if watermark:
        silver = silver.filter(nw.col("_updated_at") > datetime.strptime(watermark, _TS_FORMAT))
    # Lazy all the way into the MERGE: a first load of millions of rows streams.
    changed = canonical_order(silver, table)
    date_col = table.natural_keys[0] if table_name not in ("prod_dim", "site_dim") else None
    # One scan answers how many rows changed, up to when, on which dates and how many per date.
    # (And whether every row is this retailer's: only then can a first load go into its partition whole.)
    per_day = None
    stamped = changed.with_columns(nw.when(nw.col(PARTITION_COLUMN) == code).then(0).otherwise(1).alias("_other"))
    if date_col:
        per_day = (
            stamped.group_by(date_col)
            .agg(nw.len().alias("_n"), nw.col("_updated_at").max().alias("_latest"), nw.col("_other").sum().alias("_other"))
            .sort(date_col)
            .collect(backend="polars")
        )
        changed_rows, latest, others = int(per_day["_n"].sum()), per_day["_latest"].max(), int(per_day["_other"].sum())
    else:
        changed_rows, latest, others = (
            stamped.select(nw.len(), nw.col("_updated_at").max(), nw.col("_other").sum()).collect(backend="polars").row(0)
        )
    if changed_rows == 0:
        result.partition_rows = partition_row_count(lake, table_name, code)
        return result
    if latest.tzinfo is None:  # engines hand timestamps back in UTC
        latest = latest.replace(tzinfo=UTC)
    new_mark = latest.strftime(_TS_FORMAT)
    restrict = f"t.{PARTITION_COLUMN} = '{code}'"
    delete_unmatched = None
    if per_day is not None and date_col:
        dates = per_day[date_col].to_list()
        result.min_date, result.max_date = dates[0], dates[-1]
        restrict += f" AND t.{date_col} >= '{result.min_date}' AND t.{date_col} <= '{result.max_date}'"
        # A restatement may have removed silver rows, which leave no changed row behind: the
        # dates that changed are republished whole, and gold rows of those dates that silver
        # no longer has are deleted.
        date_list = ", ".join(f"'{d}'" for d in dates)
        if watermark:  # without one, every silver row is a changed row already
            on_dates = lake.read(silver_uri, table.schema).filter(nw.col(date_col).is_in(dates))
            rows_on_dates = on_dates.select(nw.len()).collect(backend="polars").item()
            if changed_rows < rows_on_dates:
                changed, changed_rows, per_day = canonical_order(on_dates, table), rows_on_dates, None
        delete_unmatched = f"t.{PARTITION_COLUMN} = '{code}' AND t.{date_col} IN ({date_list})"
    bookmarks = {mark_key: new_mark}
    unique_mark = f"{UNIQUE_KEYS_MARK}.{code}"
    if unique_mark not in marks:
        # A partition an earlier version left with a key published twice keeps one row per key
        # (before anything is published on top); checked once per retailer and table.
        removed = lake.remove_duplicate_keys(
            gold_uri, gold_keys(table_name), rewrite_by=date_col or PARTITION_COLUMN, scope=(PARTITION_COLUMN, code)
        )
        if removed is not None:
            if removed:
                log.warning("%s: removed %d rows of %s's keys published twice", gold_uri, removed, code)
            result.duplicates_removed, bookmarks[unique_mark] = removed, "checked"
    options = {
        "bookmarks": bookmarks,
        "description": table.description,
        "column_descriptions": {c.name: c.description for c in table.columns},
    }
    # The retailer's first rows in this table: nothing to match, so no MERGE; appended a date range
    # at a time (bounded memory whatever the history's size), on the snapshot that showed the
    # partition empty (`pin`): when another process published meanwhile, this one MERGEs instead.
    before = partition_row_count(lake, table_name, code)
    first = before == 0
    appended = first and _append_new_partition(
        lake, gold_uri, changed, table_name, date_col, per_day, {**options, "partition": code if not others else None}, writer, pin
    )
    if appended:
        stats = {"num_target_rows_inserted": changed_rows}
    else:
        stats = lake.merge(
            gold_uri,
            changed,
            keys=gold_keys(table_name),
            restrict=restrict,
            partition_by=[PARTITION_COLUMN],
            delete_unmatched=delete_unmatched,
            writer=writer,
            **options,
        )
    result.merged_rows = changed_rows
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    # When every changed row is this retailer's, the partition holds what it held, plus what went
    # in, less what the MERGE deleted (only this retailer writes its partition): no recount, which
    # is a scan of the partition (a Spark job).
    if appended and not others:
        result.partition_rows = changed_rows
    elif not others and "num_target_rows_deleted" in stats:
        result.partition_rows = before + result.inserted - int(stats["num_target_rows_deleted"])
    else:
        result.partition_rows = partition_row_count(lake, table_name, code)
    return result


def _append_new_partition(
    lake: LakeIO,
    uri: str,
    rows: nw.LazyFrame,
    table_name: str,
    date_col: str | None,
    per_day: nw.DataFrame | None,
    options: dict,
    writer: Writer | None,
    pin,
) -> bool:
    """Write a retailer's first rows into its gold partition, a batch of rows (a date range) at a time.

    A Lake that can (`Lake.append_partitions`) streams the chunks into the partition and commits
    them at once, with the watermark. Otherwise each chunk is an append (a partitioned Delta write
    holds what it writes in memory, so the chunks bound the peak) and only the last one carries
    the watermark: an interrupted load leaves rows without it, and the next refresh MERGEs them
    again (the partition then exists). A new table is created by the first chunk, with its column
    descriptions.
    """
    chunks: list[nw.LazyFrame] = [rows]
    if date_col is not None:
        if per_day is None:
            per_day = rows.group_by(date_col).agg(nw.len().alias("_n")).sort(date_col).collect(backend="polars")
        bounds = ranges_within(per_day.select(date_col, "_n").iter_rows(), silver_batch_rows())
        chunks = [rows.filter(nw.col(date_col).is_between(lo, hi)) for lo, hi in bounds]
    if options["partition"] is not None and lake.append_partitions(
        uri,
        PARTITION_COLUMN,
        [(options["partition"], chunk) for chunk in chunks],
        bookmarks=options["bookmarks"],
        description=options["description"],
        column_descriptions=options["column_descriptions"],
        **({"writer": writer, "pin": pin} if pin is not None else {}),
    ):
        return True
    if pin is not None:
        return False  # a Lake that pins appends in one commit above, or MERGEs (another process published meanwhile)
    for i, chunk in enumerate(chunks):
        marks = options["bookmarks"] if i == len(chunks) - 1 else None
        if not lake.exists(uri):
            lake.merge(
                uri,
                chunk,
                keys=gold_keys(table_name),
                partition_by=[PARTITION_COLUMN],
                bookmarks=marks,
                description=options["description"],
                column_descriptions=options["column_descriptions"],
            )
        else:
            lake.append(uri, chunk, partition_by=[PARTITION_COLUMN], bookmarks=marks, description=options["description"])
    return True


def canonical_order(lf: nw.LazyFrame, table: canonical.CanonicalTable) -> nw.LazyFrame:
    return lf.select([c.name for c in table.columns])


def partition_row_count(lake: LakeIO, table_name: str, code: str) -> int:
    uri = lake.gold(table_name)
    if not lake.exists(uri):
        return 0
    return int(lake.read(uri).filter(nw.col(PARTITION_COLUMN) == code).select(nw.len()).collect(backend="polars").item())


def gold_metadata(result: GoldResult, uri: str, engine: str) -> dict:
    """The gold asset's materialization metadata, the same for both engines."""
    return {
        # This retailer's rows; the orchestrator sets `dagster/row_count` to the whole table's.
        "partition_rows": result.partition_rows,
        "dagster/uri": uri,
        "engine": engine,
        "rows_merged": result.merged_rows,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "duplicate_key_rows_removed": result.duplicates_removed,
        **date_span(result.min_date, result.max_date),
    }
