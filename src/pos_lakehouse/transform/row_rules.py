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
