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


def coverage_differences(lake: Lake, specs: list[RetailerSpec], expected: pl.DataFrame) -> pl.DataFrame:
    """Where gold's period coverage or delivery calendar disagrees with the days the generator wrote.

    Per retailer that delivers days: every week and month row says `days_expected` = the period's
    days, `days_covered` at most the days generated in it (and, for the store that sold every day,
    exactly that many), `is_complete` exactly when it covers every day of the period. A weekly
    sender's delivered weeks are whole. The calendar's rows per date add up to the generated rows.
    One row per problem: retailer, table, date, problem (empty when all agree).
    """
    problems: list[dict] = []
    delivered = expected.filter(pl.col("rows") > 0)
    for spec in specs:
        mine = delivered.filter(pl.col("retailer") == spec.name)
        if mine.is_empty():
            continue
        day_grain = "store_day_fact" in set(mine["table"])
        source = "store_day_fact" if day_grain else "store_week_fact"
        generated = mine.filter(pl.col("table") == source).group_by("date").agg(pl.col("rows").sum())
        periods = ("store_week_fact", "store_month_fact") if day_grain else ("store_week_fact",)
        for table in periods:
            problems += _period_problems(lake, spec, table, generated["date"].to_list(), day_grain)
        calendar = _partition(lake, "delivery_calendar", spec).group_by("date").agg(pl.col("rows").sum().alias("calendar_rows"))
        joined = generated.join(calendar, on="date", how="full", coalesce=True).filter(
            pl.col("rows").fill_null(0) != pl.col("calendar_rows").fill_null(0)
        )
        problems += [
            {"retailer": spec.name, "table": "delivery_calendar", "date": d, "problem": f"calendar rows {c or 0}, generated {r or 0}"}
            for d, r, c in joined.select("date", "rows", "calendar_rows").iter_rows()
        ]
    schema = {"retailer": pl.String, "table": pl.String, "date": pl.Date, "problem": pl.String}
    return pl.DataFrame(problems, schema=schema).sort("retailer", "table", "date")


def _partition(lake: Lake, table: str, spec: RetailerSpec) -> pl.DataFrame:
    uri = lake.gold(table)
    if not lake.exists(uri):
        return pl.DataFrame(schema=canonical.TABLES[table].schema)
    return lake.scan(uri, canonical.TABLES[table].schema).filter(pl.col("data_provider_code") == spec.data_provider_code).collect()


def _period_problems(lake: Lake, spec: RetailerSpec, table: str, days: list, day_grain: bool) -> list[dict]:
    from pos_lakehouse.transform.measures import period_end_of

    grain = canonical.GRAIN[table]
    end_col = canonical.TABLES[table].natural_keys[0]
    generated: dict = {}
    for d in days:
        end = period_end_of(d, grain, spec.week_ends_on) if day_grain else d
        generated[end] = generated.get(end, 0) + 1
    rows = _partition(lake, table, spec)
    per_period = rows.group_by(end_col).agg(
        pl.col("days_covered").max().alias("covered"),
        pl.col("days_expected").unique().alias("expected"),
        (pl.col("is_complete") != (pl.col("days_covered") == pl.col("days_expected"))).sum().alias("inconsistent"),
    )
    out = []
    seen = set()
    for end, covered, expected_days, inconsistent in per_period.iter_rows():
        seen.add(end)
        length = 7 if grain == "week" else end.day
        want = generated.get(end, 0) if day_grain else 7
        found = []
        if expected_days != [length]:
            found.append(f"days_expected {expected_days}, the period has {length}")
        if covered != want:
            found.append(f"days_covered at most {covered}, generated {want} day(s)")
        if inconsistent:
            found.append(f"{inconsistent} row(s) with is_complete not (days_covered = days_expected)")
        out += [{"retailer": spec.name, "table": table, "date": end, "problem": p} for p in found]
    out += [
        {"retailer": spec.name, "table": table, "date": end, "problem": "no rows for a period with generated days"}
        for end in generated
        if end not in seen
    ]
    return out
