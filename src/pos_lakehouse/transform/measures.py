"""Measure transforms on fact frames: currency conversion and period aggregates. Pure functions on narwhals frames."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from typing import Literal

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.transform.canonical import MEASURES, MONEY, TABLES, VALUE_MEASURES, nw_dtype
from pos_lakehouse.transform.masking import PRICED_QUANTITIES

USD_MEASURES = tuple(m.replace("_lc", "_usd") for m in VALUE_MEASURES)
# Flows add up over a period; stocks are read at the period's end.
FLOW_MEASURES = ("pos_sales_units", "pos_sales_value_lc", "pos_returns_units", "pos_returns_value_lc")
STOCK_MEASURES = ("inventory_qty_on_hand", "inventory_qty_on_order", "inventory_value_lc")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Grain = Literal["day", "week", "month"]


def convert_to_usd(facts: nw.LazyFrame, fx: nw.LazyFrame, date_col: str, only_usd: bool = False) -> nw.LazyFrame:
    """`fx_rate_to_usd` for the fact's currency and date (1 for USD), and `*_usd` = `*_lc` x rate (null when no rate).

    Rounded half away from zero to 4 decimals, the same on both engines. `only_usd`: the caller
    knows no row has a currency other than USD (or none), so the rates are not joined at all.
    """
    if "fx_rate_to_usd" in facts.collect_schema().names():
        facts = facts.drop("fx_rate_to_usd")
    # A dollar is a dollar: USD rows need no FX reference (nor wait for it) to have their USD values.
    usd = nw.col("currency") == "USD"
    if only_usd:
        # The join would only copy every row's columns to add the rate no USD row reads.
        joined = facts.with_columns(nw.when(usd).then(nw.lit(1.0, nw.Float64)).otherwise(nw.lit(None, nw.Float64)).alias("fx_rate_to_usd"))
    else:
        rates = fx.select(nw.col("date").alias(date_col), "currency", nw.col("usd_per_unit").alias("fx_rate_to_usd"))
        joined = facts.join(rates, on=[date_col, "currency"], how="left").with_columns(
            nw.when(usd).then(nw.lit(1.0, nw.Float64)).otherwise(nw.col("fx_rate_to_usd")).alias("fx_rate_to_usd")
        )
    joined = joined.with_columns(
        (nw.col(lc).cast(nw.Float64) * nw.col("fx_rate_to_usd")).alias(usd) for lc, usd in zip(VALUE_MEASURES, USD_MEASURES)
    )
    rounded = edges(joined).round_half_away(joined, USD_MEASURES, 4)
    return rounded.with_columns(nw.col(usd).cast(nw_dtype(MONEY)) for usd in USD_MEASURES)


def period_end(date_expr: nw.Expr, grain: Grain, week_ends_on: str = "sunday") -> nw.Expr:
    """The last day of the week (ending on `week_ends_on`) or month holding each date."""
    if grain == "week":
        end_weekday = WEEKDAYS.index(week_ends_on) + 1  # Monday=1 .. Sunday=7
        weekday = date_expr.dt.weekday()
        out = date_expr
        for day in range(1, 8):
            ahead = (end_weekday - day) % 7
            if ahead:
                out = nw.when(weekday == day).then(date_expr.dt.offset_by(f"{ahead}d").cast(nw.Date)).otherwise(out)
        return out
    if grain == "month":
        return date_expr.dt.truncate("1mo").dt.offset_by("1mo").dt.offset_by("-1d").cast(nw.Date)
    return date_expr


def period_end_of(day: date, grain: Grain, week_ends_on: str = "sunday") -> date:
    """`period_end` of one date, in Python (bounds of a refresh)."""
    if grain == "week":
        return day + timedelta(days=(WEEKDAYS.index(week_ends_on) - day.weekday()) % 7)
    if grain == "month":
        return day.replace(day=calendar.monthrange(day.year, day.month)[1])
    return day


def period_start_of(day: date, grain: Grain, week_ends_on: str = "sunday") -> date:
    """The first day of the week or month holding `day`."""
    if grain == "week":
        return period_end_of(day, grain, week_ends_on) - timedelta(days=6)
    if grain == "month":
        return day.replace(day=1)
    return day


def period_days(end_expr: nw.Expr, grain: Grain) -> nw.Expr:
    """How many days the period ending on each date has (7 for weeks, the month's length)."""
    if grain == "week":
        return nw.lit(7, nw.Int64)
    if grain == "month":
        return end_expr.dt.day().cast(nw.Int64)
    return nw.lit(1, nw.Int64)


def with_period_coverage(periods: nw.LazyFrame, end_col: str, grain: Grain) -> nw.LazyFrame:
    """`days_expected` and `is_complete` of period rows that carry `days_covered` (their store's delivered days).

    A daily sender owes every day of a period, so `days_expected` is the period's length (7 or the
    month's); a row is complete only when its store delivered every one of those days. A period
    still in progress, a first week that starts mid-week or a week with a day missing is not.
    """
    expected = period_days(nw.col(end_col), grain).cast(nw.Int64)
    return periods.with_columns(expected.alias("days_expected")).with_columns(
        (nw.col("days_covered") >= nw.col("days_expected")).alias("is_complete")
    )


def aggregate_period(daily: nw.LazyFrame, grain: Literal["week", "month"], week_ends_on: str = "sunday") -> nw.LazyFrame:
    """Daily facts -> one row per period end x site x product.

    Flows are summed; stocks and the dimension keys are taken from the period's last reported day
    (the version in force at the period's end). USD values are the sum of the daily USD values.
    """
    end_col = "week_end_date" if grain == "week" else "month_end_date"
    group = [end_col, "site_id", "prod_id"]
    flows = [*FLOW_MEASURES, *[u for u in USD_MEASURES if u != "inventory_value_usd"]]
    last_cols = [
        *STOCK_MEASURES,
        "inventory_value_usd",
        "prod_key",
        "site_key",
        "currency",
        "data_provider_code",
        "secure_group_key",
        "_source_file",
        "_delivery_id",
        "_ingested_at",
        "fx_rate_to_usd",
    ]
    day_fact = TABLES["store_day_fact"]
    days = daily.with_columns(period_end(nw.col("date"), grain, week_ends_on).alias(end_col))
    # Flows and the period's last reported day in one grouped pass; the stocks and keys are then
    # read from that day's row, found by a join rather than a window over every daily row. A day's
    # row is unique by its date, store and product (the period end follows from the date), so one
    # inner join on that key matches each period row to exactly its last day.
    sums = days.group_by(group).agg(*[nw.col(m).sum().alias(m) for m in flows], nw.col("date").max().alias("date"))
    day_key = ["date", "site_id", "prod_id"]
    # Days the store delivered in the period (any product): what the period's values hold. A
    # restated day is one stored day, so it counts once.
    store_days = days.group_by(end_col, "site_id").agg(nw.col("date").n_unique().cast(nw.Int64).alias("days_covered"))
    return (
        sums.join(daily.select(*day_key, *last_cols), on=day_key, how="inner")
        .drop("date")
        .join(store_days, on=[end_col, "site_id"], how="left")
        .with_columns(nw.col(m).cast(day_fact.column(m).nw_dtype) for m in flows)
    )


def masked_measures(antitrust: str) -> tuple[str, ...]:
    """Which measures get antitrust twins: `value` masks money and the quantities it is a price times
    (units times the last real unit price would give the value back); `volume` masks every measure."""
    if antitrust == "value":
        return (*VALUE_MEASURES, *PRICED_QUANTITIES.values(), *USD_MEASURES)
    if antitrust == "volume":
        return (*MEASURES, *USD_MEASURES)
    return ()


def history_window(grain: Grain) -> timedelta:
    """How far around the touched dates masks read and rewrite (an upper bound: a calendar quarter)."""
    return {"day": timedelta(days=6), "week": timedelta(days=27), "month": timedelta(days=92)}[grain]
