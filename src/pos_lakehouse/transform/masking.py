"""Antitrust masking: `at_masked_<measure>` twins of competition-sensitive measures. Engine-neutral.

Placeholder rule (a calendar-block mean per product and store: the ISO week for days, the
month for weeks, the quarter for months) behind the interface the serving side relies on:
`mask_measures(frame, date_col, grain, measures)` on a narwhals LazyFrame.
"""

from __future__ import annotations

from collections.abc import Sequence

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.transform.canonical import MONEY, QUANTITY, nw_dtype

from pos_lakehouse.transform.measures import period_end

_BLOCK = {"week": "1mo", "month": "1q"}


def _block(date: nw.Expr, grain: str) -> nw.Expr:
    if grain == "day":  # the ISO week, named by its Sunday
        return period_end(date, "week", "sunday")
    return date.dt.truncate(_BLOCK[grain]).cast(nw.Date)


def mask_measures(frame: nw.LazyFrame, date_col: str, grain: str, measures: Sequence[str]) -> nw.LazyFrame:
    """`at_masked_<m>` = mean of `m` over the row's calendar block, per product and store."""
    if not measures:
        return frame
    blocked = frame.with_columns(_block(nw.col(date_col), grain).alias("_block"))
    means = blocked.with_columns(
        nw.col(m).cast(nw.Float64).mean().over("prod_id", "site_id", "_block").alias(f"at_masked_{m}") for m in measures
    )
    rounded = edges(means).round_half_away(means, [f"at_masked_{m}" for m in measures], 4)
    return rounded.with_columns(
        nw.col(f"at_masked_{m}").cast(nw_dtype(MONEY if m.endswith(("_lc", "_usd")) else QUANTITY)) for m in measures
    ).drop("_block")
