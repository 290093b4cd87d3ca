"""Gold: one Delta table per object type for all retailers, partitioned by `data_provider_code`.

Written once for both engines (narwhals frames over Polars or PySpark). A retailer's refresh MERGEs only the silver rows changed since its last refresh, and the
MERGE is restricted to that retailer's partition, so other retailers' files are untouched.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime

import narwhals as nw
import polars as pl

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import silver_batch_rows
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.chunks import ranges_within

GOLD_TABLES = ("prod_dim", "site_dim", "store_day_fact", "store_week_fact", "store_month_fact", "delivery_calendar")
PARTITION_COLUMN = "data_provider_code"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


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
    if per_day is not None:
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
    options = {
        "bookmarks": {mark_key: new_mark},
        "description": table.description,
        "column_descriptions": {c.name: c.description for c in table.columns},
    }
    if partition_row_count(lake, table_name, code) == 0:
        # The retailer's first rows in this table: nothing to match, so no MERGE; appended a
        # date range at a time (bounded memory whatever the history's size). Appends do not
        # conflict as MERGEs do: this relies on one writer per gold table at a time (its pool).
        _append_new_partition(
            lake, gold_uri, changed, table_name, date_col, per_day, {**options, "partition": code if not others else None}
        )
        stats = {"num_target_rows_inserted": changed_rows}
    else:
        stats = lake.merge(
            gold_uri,
            changed,
            keys=gold_keys(table_name),
            restrict=restrict,
            partition_by=[PARTITION_COLUMN],
            delete_unmatched=delete_unmatched,
            **options,
        )
    result.merged_rows = changed_rows
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    result.partition_rows = partition_row_count(lake, table_name, code)
    return result


def _append_new_partition(
    lake: LakeIO, uri: str, rows: nw.LazyFrame, table_name: str, date_col: str | None, per_day: pl.DataFrame | None, options: dict
) -> None:
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
    ):
        return
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
        "dates_from": str(result.min_date) if result.min_date else "-",
        "dates_to": str(result.max_date) if result.max_date else "-",
    }
