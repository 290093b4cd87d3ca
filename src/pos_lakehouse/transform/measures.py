"""Measure transforms on fact frames: currency conversion, period aggregates, antitrust masking. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

import polars as pl

from pos_lakehouse.transform.canonical import MEASURES, MONEY, QUANTITY, VALUE_MEASURES

USD_MEASURES = tuple(m.replace("_lc", "_usd") for m in VALUE_MEASURES)
# Flows add up over a period; stocks are read at the period's end.
FLOW_MEASURES = ("pos_sales_units", "pos_sales_value_lc", "pos_returns_units", "pos_returns_value_lc")
STOCK_MEASURES = ("inventory_qty_on_hand", "inventory_qty_on_order", "inventory_value_lc")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Grain = Literal["day", "week", "month"]
# Rolling window of the antitrust mean, by grain: 7 days, 4 weeks, 3 months.
MASK_WINDOW: dict[str, str] = {"day": "7d", "week": "28d", "month": "3mo"}


def convert_to_usd(facts: pl.LazyFrame, fx: pl.LazyFrame, date_col: str) -> pl.LazyFrame:
    """`fx_rate_to_usd` for the fact's currency and date, and `*_usd` = `*_lc` x rate (null when no rate).

    Rounded half away from zero to 4 decimals, as Spark's `round` does, so both engines agree.
    """
    rates = fx.select(pl.col("date").alias(date_col), "currency", pl.col("usd_per_unit").alias("fx_rate_to_usd"))
    joined = facts.drop("fx_rate_to_usd", strict=False).join(rates, on=[date_col, "currency"], how="left")
    return joined.with_columns(
        [
            (pl.col(lc).cast(pl.Float64) * pl.col("fx_rate_to_usd"))
            .round(4, mode="half_away_from_zero")
            .cast(MONEY)
            .alias(usd)
            for lc, usd in zip(VALUE_MEASURES, USD_MEASURES)
        ]
    )


def period_end(date_expr: pl.Expr, grain: Grain, week_ends_on: str = "sunday") -> pl.Expr:
    """The last day of the week (ending on `week_ends_on`) or month holding each date."""
    if grain == "week":
        end_weekday = WEEKDAYS.index(week_ends_on) + 1  # polars: Monday=1 .. Sunday=7
        return date_expr + pl.duration(days=(end_weekday - date_expr.dt.weekday()) % 7)
    if grain == "month":
        return date_expr.dt.month_end()
    return date_expr


def aggregate_period(daily: pl.LazyFrame, grain: Literal["week", "month"], week_ends_on: str = "sunday") -> pl.LazyFrame:
    """Daily facts -> one row per period end x site x product.

    Flows are summed; stocks and the dimension keys are taken from the period's last reported day
    (the version in force at the period's end). USD values are the sum of the daily USD values.
    """
    end_col = "week_end_date" if grain == "week" else "month_end_date"
    flows = [*FLOW_MEASURES, *[u for u in USD_MEASURES if u != "inventory_value_usd"]]
    stocks = [*STOCK_MEASURES, "inventory_value_usd"]
    last_cols = [*stocks, "prod_key", "site_key", "currency", "data_provider_code", "secure_group_key",
                 "_source_file", "_delivery_id", "_ingested_at"]
    return (
        daily.with_columns(period_end(pl.col("date"), grain, week_ends_on).alias(end_col))
        .sort("date")
        .group_by(end_col, "site_id", "prod_id")
        .agg(
            *[pl.col(m).sum().alias(m) for m in flows],
            *[pl.col(c).last().alias(c) for c in last_cols],
            pl.col("fx_rate_to_usd").last().alias("fx_rate_to_usd"),
        )
    )


def masked_measures(antitrust: str) -> tuple[str, ...]:
    """Which measures get antitrust twins: `value` masks money; `volume` masks units too
    (units times a list price reveal value)."""
    if antitrust == "value":
        return (*VALUE_MEASURES, *USD_MEASURES)
    if antitrust == "volume":
        return (*MEASURES, *USD_MEASURES)
    return ()


def mask(frame: pl.DataFrame, date_col: str, grain: Grain, measures: Sequence[str]) -> pl.DataFrame:
    """`at_masked_<m>` = mean of `m` over the window ending on the row's date, per product and store.

    The window is calendar-based (7 days / 4 weeks / 3 months including the row's own period);
    periods without a record do not count. Rows must include the window's history.
    """
    if frame.is_empty() or not measures:
        return frame
    # Windows are right-closed: (t - 7d, t], (t - 28d, t], (t - 3mo, t].
    window = MASK_WINDOW[grain]
    out = frame.sort("prod_id", "site_id", date_col).with_columns(
        [
            pl.col(m).cast(pl.Float64).rolling_mean_by(date_col, window_size=window).over("prod_id", "site_id").alias(f"_m_{m}")
            for m in measures
        ]
    )
    return out.with_columns(
        [
            pl.col(f"_m_{m}").round(4, mode="half_away_from_zero").cast(MONEY if m.endswith(("_lc", "_usd")) else QUANTITY).alias(f"at_masked_{m}")
            for m in measures
        ]
    ).drop([f"_m_{m}" for m in measures])


def history_window(grain: Grain) -> timedelta:
    """How far back a masked value looks (upper bound), to fetch history for incremental masking."""
    return {"day": timedelta(days=6), "week": timedelta(days=27), "month": timedelta(days=92)}[grain]
