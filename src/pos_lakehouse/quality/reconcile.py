"""Reconcile gold against what the demo generator says it delivered: rows, units and value per day."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

MEASURES = ("rows", "pos_sales_units", "pos_sales_value_lc")


def gold_totals(lake: Lake, specs: list[RetailerSpec]) -> pl.DataFrame:
    """Per retailer, table and date: rows, units and value in gold (as exact decimal strings)."""
    names = {s.data_provider_code: s.name for s in specs}
    frames = []
    for table in canonical.FACTS:
        uri = lake.gold(table)
        if not lake.exists(uri):
            continue
        date_col = canonical.TABLES[table].natural_keys[0]
        frames.append(
            lake.scan(uri)
            .filter(pl.col("data_provider_code").is_in(list(names)))
            .group_by("data_provider_code", date_col)
            .agg(
                pl.len().cast(pl.Int64).alias("rows"),
                pl.col("pos_sales_units").sum().alias("pos_sales_units"),
                pl.col("pos_sales_value_lc").sum().alias("pos_sales_value_lc"),
            )
            .collect()
            .select(
                pl.col("data_provider_code").replace_strict(names, return_dtype=pl.String).alias("retailer"),
                pl.lit(table).alias("table"),
                pl.col(date_col).alias("date"),
                "rows",
                pl.col("pos_sales_units").map_elements(_canonical_number, return_dtype=pl.String),
                pl.col("pos_sales_value_lc").map_elements(_canonical_number, return_dtype=pl.String),
            )
        )
    return (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            schema={
                "retailer": pl.String,
                "table": pl.String,
                "date": pl.Date,
                "rows": pl.Int64,
                "pos_sales_units": pl.String,
                "pos_sales_value_lc": pl.String,
            }
        )
    )


def _canonical_number(value) -> str:
    d = Decimal(str(value)).normalize()
    return format(d, "f") if d != 0 else "0"


def reconcile(expected: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    """Rows where gold differs from the expected totals (empty when they agree exactly)."""
    if "table" not in expected.columns:
        expected = expected.with_columns(pl.lit("store_day_fact").alias("table"))
    exp = expected.select(
        "retailer",
        "table",
        "date",
        "rows",
        pl.col("pos_sales_units").cast(pl.String).map_elements(_canonical_number, return_dtype=pl.String),
        pl.col("pos_sales_value_lc").cast(pl.String).map_elements(_canonical_number, return_dtype=pl.String),
    )
    # Only the grains each retailer delivers are reconciled (derived weeks and months are checked against days in tests).
    actual = actual.join(exp.select("retailer", "table").unique(), on=["retailer", "table"], how="semi")
    joined = exp.join(actual, on=["retailer", "table", "date"], how="full", suffix="_gold", coalesce=True)
    differs = pl.lit(False)
    for m in MEASURES:
        differs = differs | pl.col(m).ne_missing(pl.col(f"{m}_gold"))
    return joined.filter(differs).sort("retailer", "table", "date")
