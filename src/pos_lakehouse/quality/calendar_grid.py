"""The delivery calendar as a grid (days x stores, or days x retailers) and its counts, for the UI and the terminal.

Pure functions on calendar frames (`transform.calendar`'s columns, plus `retailer` for a grid of
several retailers). One character per cell, so a month fits a terminal line.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

# Worst first: a retailer's day shows its worst store's status.
SYMBOLS = {"missing": "X", "late": "L", "pending": "?", "unexpected": "!", "delivered": "+"}
NOT_OWED = "."
LEGEND = "+ delivered  L late  X missing  ? pending (not due yet)  ! unexpected  . not owed"
MAX_COLUMNS = 30


def window(last: date, weeks: int) -> tuple[date, date]:
    """The `weeks` weeks of days ending on `last`."""
    return last - timedelta(days=7 * weeks - 1), last


def cell_symbols(calendar: pl.DataFrame, column: str) -> pl.DataFrame:
    """(date, `column`, symbol) with each group's worst status."""
    rank = {s: i for i, s in enumerate(SYMBOLS)}
    return (
        calendar.with_columns(pl.col("status").replace_strict(rank, return_dtype=pl.Int64).alias("_rank"))
        .group_by("date", column)
        .agg(pl.col("_rank").min())
        .with_columns(pl.col("_rank").replace_strict({i: SYMBOLS[s] for s, i in rank.items()}, return_dtype=pl.String).alias("symbol"))
        .drop("_rank")
    )


def grid(calendar: pl.DataFrame, first: date, last: date, column: str = "site_id") -> pl.DataFrame:
    """One row per date from `first` to `last`, one column per store (or retailer): a status symbol each.

    Columns with a problem (missing, late) come first; beyond `MAX_COLUMNS` the rest are left out.
    """
    part = calendar.filter(pl.col("date").is_between(first, last))
    if part.is_empty():
        return pl.DataFrame({"date": []}, schema={"date": pl.String})
    symbols = cell_symbols(part, column)
    trouble = (
        symbols.group_by(column)
        .agg(pl.col("symbol").is_in(["X", "L"]).sum().alias("_bad"))
        .sort(["_bad", column], descending=[True, False])
    )
    names = trouble[column].head(MAX_COLUMNS).to_list()
    dates = pl.DataFrame({"date": pl.date_range(first, last, eager=True)})
    wide = symbols.filter(pl.col(column).is_in(names)).pivot(column, index="date", values="symbol")
    out = dates.join(wide, on="date", how="left").sort("date")
    out = out.select("date", *[pl.col(n).fill_null(NOT_OWED) for n in sorted(names)])
    return out.with_columns(pl.col("date").dt.strftime("%a %m-%d"))


def counts(calendar: pl.DataFrame, first: date, last: date) -> dict[str, int]:
    """Cells owed and per status between two dates (numbers Dagster can plot)."""
    part = calendar.filter(pl.col("date").is_between(first, last))
    by_status = dict(part.group_by("status").len().iter_rows())
    return {"cells_expected": int(part["expected"].sum())} | {f"cells_{s}": int(by_status.get(s, 0)) for s in SYMBOLS}


def markdown_grid(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "no deliveries owed yet"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, *rows, "", f"`{LEGEND}`"])


def text_grid(frame: pl.DataFrame) -> str:
    """Fixed-width text: a header of column names, then one line per date."""
    if frame.is_empty():
        return "no deliveries owed yet"
    names = frame.columns[1:]
    widths = [max(len(n), 1) for n in names]
    lines = ["          " + " ".join(n.rjust(w) for n, w in zip(names, widths))]
    for row in frame.iter_rows():
        lines.append(f"{row[0]:<9} " + " ".join(str(v).rjust(w) for v, w in zip(row[1:], widths)))
    return "\n".join(lines)
