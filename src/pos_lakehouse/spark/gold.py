"""Gold on Spark: `layers/gold.py`'s partition MERGE, restricted to one `data_provider_code`."""

from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pos_lakehouse.layers.gold import _TS_FORMAT, PARTITION_COLUMN, GoldResult, gold_keys
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.spark.lake import SparkLake
from pos_lakehouse.spark.types import spark_schema
from pos_lakehouse.transform import canonical


def _utc(value: datetime) -> datetime:
    """Spark hands timestamps back naive in the process time zone, which the job pins to UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def refresh_gold(lake: SparkLake, spec: RetailerSpec, table_name: str) -> GoldResult:
    """gold.refresh_gold: MERGE one retailer's changed silver rows into its gold partition."""
    table = canonical.TABLES[table_name]
    schema = spark_schema(table.schema)
    code = spec.data_provider_code
    gold_uri = lake.gold(table_name)
    silver_uri = lake.silver(spec.name, table_name)
    result = GoldResult(table_name, code)
    marks = lake.bookmarks(gold_uri)
    mark_key = f"silver_updated_at.{code}"
    watermark = marks.get(mark_key)
    silver = lake.scan(silver_uri, schema)
    if watermark:
        silver = silver.filter(F.col("_updated_at") > F.lit(datetime.strptime(watermark, _TS_FORMAT)).cast("timestamp"))
    changed = canonical_order(silver, table).cache()
    date_col = table.natural_keys[0] if table_name not in ("prod_dim", "site_dim") else None
    span = changed.agg(
        F.count(F.lit(1)).alias("n"),
        F.max("_updated_at").alias("mark"),
        *([F.min(date_col).alias("lo"), F.max(date_col).alias("hi")] if date_col else []),
    ).collect()[0]
    if span["n"] == 0:
        result.partition_rows = partition_row_count(lake, table_name, code)
        return result
    new_mark = _utc(span["mark"]).strftime(_TS_FORMAT)
    restrict = f"t.{PARTITION_COLUMN} = '{code}'"
    delete_unmatched = None
    merged_rows = span["n"]
    if date_col:
        result.min_date, result.max_date = span["lo"], span["hi"]
        restrict += f" AND t.{date_col} >= '{result.min_date}' AND t.{date_col} <= '{result.max_date}'"
        # As Polars: changed dates are republished whole; gold rows silver no longer has are deleted.
        dates = sorted(r[0] for r in changed.select(date_col).distinct().collect())
        date_list = ", ".join(f"'{d}'" for d in dates)
        whole = lake.scan(silver_uri, schema).filter(F.col(date_col).isin(dates))
        whole_rows = whole.count()
        if merged_rows < whole_rows:
            changed.unpersist()
            changed = canonical_order(whole, table).cache()
            merged_rows = whole_rows
        delete_unmatched = f"t.{PARTITION_COLUMN} = '{code}' AND t.{date_col} IN ({date_list})"
    stats = lake.merge(
        gold_uri,
        changed,
        keys=gold_keys(table_name),
        restrict=restrict,
        partition_by=[PARTITION_COLUMN],
        bookmarks={mark_key: new_mark},
        description=table.description,
        column_descriptions={c.name: c.description for c in table.columns},
        delete_unmatched=delete_unmatched,
    )
    changed.unpersist()
    result.merged_rows = merged_rows
    result.inserted = stats["num_target_rows_inserted"]
    result.updated = stats["num_target_rows_updated"]
    result.partition_rows = partition_row_count(lake, table_name, code)
    return result


def canonical_order(df: DataFrame, table: canonical.CanonicalTable) -> DataFrame:
    return df.select([c.name for c in table.columns])


def partition_row_count(lake: SparkLake, table_name: str, code: str) -> int:
    uri = lake.gold(table_name)
    if not lake.exists(uri):
        return 0
    return lake.scan(uri).filter(F.col(PARTITION_COLUMN) == code).count()
