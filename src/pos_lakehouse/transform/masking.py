"""Antitrust masking: the `at_masked_<measure>` twins, one rule for Polars and PySpark (through narwhals).

The rule (reasoning in docs/serving.md, "The antitrust mask"):

* Days are grouped into fixed calendar **blocks** of two months (Jan-Feb, Mar-Apr, ..., Nov-Dec),
  per product and store.
* A day record's masked value is the mean of its product and store's records in the **previous**
  block. It never depends on the record's own block, so nothing about the masked records
  themselves -- their values, how many arrive, when they arrive -- can be read from it.
* A block's mean is published only when the block can reveal no single record, and no week or
  month record: it needs at least two records whose dates lie in both months of the block and at
  least seven days apart. Otherwise the masked value is NULL (suppressed).
* Money in USD is masked as the masked local-currency value times the record's own FX rate (the
  rate is a visible column, so two independent block means of `_lc` and `_usd` would be two
  equations over the same records).
* Week and month records are withheld while masked: `at_masked_*` is NULL at those grains. Weeks
  do not tile months, so any per-grain block mean of weeks next to one of days or months leaves
  partial weeks recoverable by subtraction; coarser grains therefore publish nothing while masked.
* Masking money masks the quantities money is a price times (`PRICED_QUANTITIES`): with units
  visible, a masked value is units x the last real unit price, which a reader can read off the
  first older record. So `antitrust: value` masks sales and returns units and stock on hand too.

The twin does not depend on the record's age -- silver writes it once -- and the serving views
choose real or masked by age: a record is shown masked while its block is not wholly older than
the retailer's threshold (`serving/render.py`), so a block switches from masked to real at once.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, TypeVar

import narwhals as nw

FrameT = TypeVar("FrameT")

BLOCK_MONTHS = 2  # a block is two calendar months (Jan-Feb, ..., Nov-Dec)
MIN_SPAN_DAYS = 7  # a published block's records are at least this many days apart (never inside one week)
ROUND_DECIMALS = 4
_SCALE = 10**ROUND_DECIMALS
BLOCK_COLUMN = "_mask_block"
KEYS = ("prod_id", "site_id")

# Each money measure and the quantity it is a price times: masking the money alone would leave
# `quantity x last real price` on show. Stock on order has no money measure of its own.
PRICED_QUANTITIES: dict[str, str] = {
    "pos_sales_value_lc": "pos_sales_units",
    "pos_returns_value_lc": "pos_returns_units",
    "inventory_value_lc": "inventory_qty_on_hand",
}


def block_index(date: nw.Expr) -> nw.Expr:
    """Block number of a date: consecutive integers, one per two calendar months (Jan-Feb of year 0 is 0)."""
    return date.dt.year() * (12 // BLOCK_MONTHS) + (date.dt.month() - 1) // BLOCK_MONTHS


def block_start(day: date, blocks_back: int = 0) -> date:
    """First day of the block holding `day`, `blocks_back` blocks earlier (negative: later).

    The same blocks as `block_index`, on a Python date: the bounds of what a change must read
    (the previous block) and what it reaches (the next block's records).
    """
    index = day.year * 12 + ((day.month - 1) // BLOCK_MONTHS) * BLOCK_MONTHS - blocks_back * BLOCK_MONTHS
    return date(index // 12, index % 12 + 1, 1)


def history_window(grain: str) -> timedelta:
    """How far around the changed dates a refresh must read (and rewrite) so every masked value is whole.

    A day's value reads the whole previous block (up to 62 + 61 days back from a block's last day),
    and a change reaches the records of the next block (up to 123 days ahead). Week and month
    twins are NULL, so they need no history.
    """
    return timedelta(days=124) if grain == "day" else timedelta(days=0)


def _round_half_away(expr: nw.Expr) -> nw.Expr:
    """Round to 4 decimals, half away from zero, with the same float arithmetic on every engine."""
    scale = 10**ROUND_DECIMALS
    return nw.when(expr < 0).then(-(((-expr) * scale + 0.5).floor()) / scale).otherwise((expr * scale + 0.5).floor() / scale)


def _usd_pairs(measures: list[str], columns: list[str]) -> dict[str, str]:
    """USD measures masked through their local-currency twin and the record's FX rate."""
    if "fx_rate_to_usd" not in columns:
        return {}
    return {m: m.removesuffix("_usd") + "_lc" for m in measures if m.endswith("_usd") and m.removesuffix("_usd") + "_lc" in measures}


def _mask_lazy(lf: nw.LazyFrame, date_col: str, grain: str, measures: list[str]) -> nw.LazyFrame:
    columns = lf.collect_schema().names()
    twins = [f"at_masked_{m}" for m in measures]
    lf = lf.drop(*[c for c in twins if c in columns])
    if grain != "day":
        return lf.with_columns(*[nw.lit(None, dtype=nw.Float64()).alias(t) for t in twins])

    usd = _usd_pairs(measures, columns)
    direct = [m for m in measures if m not in usd]
    date = nw.col(date_col)
    # Per measure: where it is present, its month and day of year (a block never spans a year end).
    present = {
        m: {
            "month": nw.when(~nw.col(m).is_null()).then(date.dt.month()).alias(f"_mo_{i}"),
            "day": nw.when(~nw.col(m).is_null()).then(date.dt.ordinal_day()).alias(f"_od_{i}"),
        }
        for i, m in enumerate(direct)
    }
    based = lf.with_columns(block_index(date).alias(BLOCK_COLUMN))
    stats = (
        based.with_columns(*[e for m in direct for e in present[m].values()])
        .group_by(*KEYS, BLOCK_COLUMN)
        .agg(
            *[
                e
                for i, m in enumerate(direct)
                for e in (
                    # Summed exactly (in units of the 4th decimal): the mean, and so its rounding,
                    # must not depend on the order rows are added in (batches, engines, threads).
                    (nw.col(m).cast(nw.Float64()) * _SCALE).round(0).cast(nw.Int64()).sum().alias(f"_s_{i}"),
                    nw.col(m).count().alias(f"_n_{i}"),
                    nw.col(f"_mo_{i}").min().alias(f"_mo_lo_{i}"),
                    nw.col(f"_mo_{i}").max().alias(f"_mo_hi_{i}"),
                    nw.col(f"_od_{i}").min().alias(f"_od_lo_{i}"),
                    nw.col(f"_od_{i}").max().alias(f"_od_hi_{i}"),
                )
            ]
        )
    )
    published = []
    for i, m in enumerate(direct):
        safe = (
            (nw.col(f"_n_{i}") >= 2)
            & (nw.col(f"_mo_lo_{i}") != nw.col(f"_mo_hi_{i}"))
            & ((nw.col(f"_od_hi_{i}") - nw.col(f"_od_lo_{i}")) >= MIN_SPAN_DAYS)
        )
        mean = nw.col(f"_s_{i}") / nw.col(f"_n_{i}") / _SCALE
        published.append(nw.when(safe).then(_round_half_away(mean)).alias(f"at_masked_{m}"))
    # A block's published mean becomes the masked value of the next block's records.
    previous = stats.select(*KEYS, (nw.col(BLOCK_COLUMN) + 1).alias(BLOCK_COLUMN), *published)
    out = based.join(previous, on=[*KEYS, BLOCK_COLUMN], how="left").drop(BLOCK_COLUMN)
    if usd:
        out = out.with_columns(
            *[
                _round_half_away(nw.col(f"at_masked_{lc}") * nw.col("fx_rate_to_usd").cast(nw.Float64())).alias(f"at_masked_{m}")
                for m, lc in usd.items()
            ]
        )
    return out.with_columns(*[nw.col(t).cast(nw.Float64()) for t in twins])


def mask_measures(frame: Any, date_col: str, grain: str, measures: list[str]) -> Any:
    """Add `at_masked_<m>` for each measure (see the module docstring for the rule).

    `frame` is a narwhals LazyFrame or DataFrame, or a native frame (Polars, PySpark, ...); the
    result is the same kind. Rows must include the whole previous block of the dates to mask
    (`history_window`). Existing `at_masked_*` columns of these measures are replaced.
    """
    measures = list(measures)
    if not measures:
        return frame
    native = not isinstance(frame, (nw.LazyFrame, nw.DataFrame))
    nw_frame = nw.from_native(frame) if native else frame
    eager = isinstance(nw_frame, nw.DataFrame)
    result = _mask_lazy(nw_frame.lazy() if eager else nw_frame, date_col, grain, measures)
    if eager:
        result = result.collect()
    return result.to_native() if native else result
