"""`pos-lakehouse calendar`: who owes us what -- the delivery calendar of the last weeks as a compact grid.

Days x retailers (each day shows its worst store), or days x stores for one retailer, read from
each retailer's silver `delivery_calendar`; then per retailer the counts of the window.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from pos_lakehouse.layers.silver.calendar import read_calendar
from pos_lakehouse.quality.calendar_grid import LEGEND, counts, grid, text_grid, window
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake


def calendar_report(lake: Lake, specs: list[RetailerSpec], retailer: str | None = None, weeks: int = 4, today: date | None = None) -> str:
    """The grid and counts as text; `retailer` narrows it to one retailer's stores."""
    if weeks < 1:
        raise ValueError("--weeks must be at least 1")
    if retailer is not None:
        specs = [s for s in specs if s.name == retailer]
        if not specs:
            raise ValueError(f"unknown retailer {retailer!r}")
    first, last = window((today or date.today()) - timedelta(days=1), weeks)
    calendars = {s.name: cal for s in specs if (cal := read_calendar(lake, s)) is not None}
    if not calendars:
        return "no delivery calendar yet: run `pos-lakehouse run` (or `demo`) first"
    if retailer is not None:
        frame = grid(calendars[retailer], first, last, "site_id")
    else:
        both = pl.concat([cal.with_columns(pl.lit(name).alias("retailer")) for name, cal in calendars.items()], how="diagonal_relaxed")
        frame = grid(both, first, last, "retailer")
    lines = [f"delivery calendar {first} .. {last}", text_grid(frame), "", LEGEND, ""]
    for name, cal in calendars.items():
        c = counts(cal, first, last)
        lines.append(
            f"{name}: {c['cells_expected']} owed, {c['cells_delivered'] + c['cells_late']} delivered "
            f"({c['cells_late']} late), {c['cells_missing']} missing, {c['cells_pending']} pending"
        )
    return "\n".join(lines)
