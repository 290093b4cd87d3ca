"""Gold: one Delta table per object type for all retailers, partitioned by `data_provider_code`.

A retailer's refresh MERGEs only the silver rows changed since its last refresh, and the
MERGE is restricted to that retailer's partition, so other retailers' files are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import polars as pl

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

GOLD_TABLES = ("prod_dim", "site_dim", "store_day_fact", "store_week_fact")
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


def refresh_gold(lake: Lake, spec: RetailerSpec, table_name: str) -> GoldResult:
    """MERGE one retailer's changed silver rows into its gold partition."""
    table = canonical.TABLES[table_name]
    code = spec.data_provider_code
    gold_uri = lake.gold(table_name)
    silver_uri = lake.silver(spec.name, table_name)
    result = GoldResult(table_name, code)
    marks = lake.bookmarks(gold_uri)
    mark_key = f"silver_updated_at.{code}"
    watermark = marks.get(mark_key)
    silver = lake.scan(silver_uri, table.schema)
    if watermark:
        silver = silver.filter(pl.col("_updated_at") > datetime.strptime(watermark, _TS_FORMAT))
    changed = canonical_order(silver, table).collect(engine="streaming")
    if changed.is_empty():
        result.partition_rows = partition_row_count(lake, table_name, code)
        return result
    new_mark = changed["_updated_at"].max().strftime(_TS_FORMAT)  # type: ignore[union-attr]
    restrict = f"t.{PARTITION_COLUMN} = '{code}'"
    date_col = table.natural_keys[0] if table_name not in ("prod_dim", "site_dim") else None
    if date_col:
        result.min_date, result.max_date = changed[date_col].min(), changed[date_col].max()
        restrict += f" AND t.{date_col} >= '{result.min_date}' AND t.{date_col} <= '{result.max_date}'"
    stats = lake.merge(
        gold_uri,
        changed,
        keys=gold_keys(table_name),
        restrict=restrict,
        partition_by=[PARTITION_COLUMN],
        bookmarks={**marks, mark_key: new_mark},
        description=table.description,
        column_descriptions={c.name: c.description for c in table.columns},
    )
    result.merged_rows = changed.height
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    result.partition_rows = partition_row_count(lake, table_name, code)
    return result


def canonical_order(lf: pl.LazyFrame, table: canonical.CanonicalTable) -> pl.LazyFrame:
    return lf.select([c.name for c in table.columns])


def partition_row_count(lake: Lake, table_name: str, code: str) -> int:
    uri = lake.gold(table_name)
    if not lake.exists(uri):
        return 0
    return lake.scan(uri).filter(pl.col(PARTITION_COLUMN) == code).select(pl.len()).collect().item()
