"""Row rules of fact rows: a row that breaks one is quarantined with its reason, the others flow on.

A bad row never blocks its retailer: these rules add their reason to the row's `_errors` (see
`mapping.to_canonical`), and silver quarantines flagged rows. Blocking checks guard what makes a
whole table wrong (types, keys, uniqueness), not single rows. Pure functions on narwhals frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Literal

import narwhals as nw

from pos_lakehouse.transform.mapping import ERROR_COLUMN
from pos_lakehouse.transform.measures import period_end

# A single store-day-product above this is a unit or decimal error (a period row: times its days).
MAX_ABS_MEASURE = 10_000_000


def flag(lf: nw.LazyFrame, broken: nw.Expr, reason: str) -> nw.LazyFrame:
    """Add `reason` to `_errors` where `broken` is true (null counts as not broken)."""
    return lf.with_columns(
        nw.when(broken.fill_null(False))
        .then(nw.concat_str([nw.col(ERROR_COLUMN), nw.lit(reason)], separator="; ", ignore_nulls=True))
        .otherwise(nw.col(ERROR_COLUMN))
        .alias(ERROR_COLUMN)
    )


def fact_row_rules(lf: nw.LazyFrame, date_col: str, today: date, measures: Sequence[str]) -> nw.LazyFrame:
    """Flag fact rows dated after `today`, with a currency that is no ISO code, or a measure out of range.

    The date compared is the row's own business date (for a delivered week, its week end).
    """
    names = lf.collect_schema().names()
    lf = flag(lf, nw.col(date_col) > nw.lit(today, nw.Date), f"{date_col}: in the future")
    if "currency" in names:
        lf = flag(lf, ~nw.col("currency").str.contains(r"^[A-Z]{3}$"), "currency: not an iso currency code")
    for m in measures:
        if m in names:
            lf = flag(lf, nw.col(m).abs() > MAX_ABS_MEASURE, f"{m}: out of range")
    return lf


def align_week_dates(
    lf: nw.LazyFrame,
    date_col: str,
    week_ends_on: str,
    date_is: Literal["end", "start"],
    misaligned: Literal["quarantine", "align"],
) -> nw.LazyFrame:
    """A weekly file's dates -> the week's end date, by the file's explicit rule.

    `date_is: start` dates are the week's first day and move to its last; a date that is not on
    the retailer's week boundary is either quarantined or moved to the end of the week holding it
    (`misaligned: align`). A week date is never loaded as it comes.
    """
    week_end = period_end(nw.col(date_col), "week", week_ends_on)
    if date_is == "start":
        on_boundary = nw.col(date_col).dt.offset_by("6d").cast(nw.Date) == week_end
    else:
        on_boundary = nw.col(date_col) == week_end
    if misaligned == "quarantine":
        # The reason names the rule; the raw values kept with the quarantined row show the date.
        lf = flag(lf, ~on_boundary, f"{date_col}: not on a week {date_is} of a week ending {week_ends_on}")
        # Flagged rows keep their date (quarantined as delivered); boundary dates move to the week end.
        return lf.with_columns(nw.when(on_boundary.fill_null(False)).then(week_end).otherwise(nw.col(date_col)).alias(date_col))
    return lf.with_columns(week_end.alias(date_col))


def _count(frame: nw.LazyFrame) -> int:
    return int(frame.select(nw.len()).collect(backend="polars").item())


def deduplicate_fact_batch(frame: nw.LazyFrame, keys: list[str], date_col: str, replaces: str) -> nw.LazyFrame:
    """Flag duplicate keys inside one file, and keep the newest delivery where deliveries overlap.

    Inside a file the last row of a key is loaded and earlier copies are quarantined (the file
    contradicts itself; its last word counts, the others stay visible with a reason). Across
    deliveries in one batch the newest one wins per store-day (or per row with `replaces: rows`),
    exactly as if they had been processed one after another.
    `frame` is read several times: pass a persisted one.
    """
    ok = nw.col(ERROR_COLUMN).is_null()
    # Most batches repeat no key and no store-day across deliveries: two grouped counts show it
    # and spare the windows over every row below.
    repeated = frame.group_by(*keys).agg(nw.len().alias("_n")).filter(nw.col("_n") > 1)
    if _count(repeated) == 0 and (replaces != "site_days" or not _site_days_overlap(frame, date_col)):
        return frame
    frame = frame.with_columns(nw.when(ok).then(nw.col("_row_number")).alias("_ok_row"))
    frame = frame.with_columns(nw.col("_ok_row").max().over("_delivery_id", *keys).alias("_last_row"))
    frame = frame.with_columns(
        nw.when(ok & (nw.col("_row_number") != nw.col("_last_row")))
        .then(nw.lit("duplicate: superseded by a later row with the same key in this file"))
        .otherwise(nw.col(ERROR_COLUMN))
        .alias(ERROR_COLUMN)
    ).drop("_ok_row", "_last_row")
    deliveries = frame.select("_delivery_id", "_ingested_at", "_source_file").unique()
    if _count(deliveries) > 1:
        ranks = deliveries.with_row_index("_delivery_rank", order_by=["_ingested_at", "_source_file"]).select(
            "_delivery_id", "_delivery_rank"
        )
        scope = [date_col, "site_id"] if replaces == "site_days" else keys
        frame = (
            frame.join(ranks, on="_delivery_id", how="left")
            .with_columns(nw.when(ok).then(nw.col("_delivery_rank")).alias("_ok_rank"))
            .with_columns(nw.col("_ok_rank").max().over(*scope).alias("_newest"))
            .filter(~ok | (nw.col("_delivery_rank") == nw.col("_newest")))
            .drop("_delivery_rank", "_ok_rank", "_newest")
        )
    return frame


def _site_days_overlap(frame: nw.LazyFrame, date_col: str) -> bool:
    """Whether two deliveries of the batch hold the same store-day."""
    per_site_day = frame.group_by(date_col, "site_id").agg(nw.col("_delivery_id").n_unique().alias("_deliveries"))
    return _count(per_site_day.filter(nw.col("_deliveries") > 1)) > 0
