"""The delivery calendar: which (date, store) cells a retailer owes, which arrived, and when.

Pure functions on small Polars frames (a calendar is days x stores, never fact-sized); the only
fact-sized step, `delivered_files`, is engine-neutral (narwhals) and aggregates before collecting.

A cell's status:
- `delivered`: rows arrived by the cell's due time;
- `late`: rows arrived, after it (`late_by_hours` says how long after);
- `missing`: expected, past due, no rows (`late_by_hours` = overdue so far);
- `pending`: expected, not due yet;
- `unexpected`: rows for a cell before the retailer's owed range (before `starts_on`);
rows for a day not owed yet (today's, delivered early) are `delivered`, with `expected` false.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import narwhals as nw
import polars as pl

from pos_lakehouse.transform.measures import period_end_of

CalendarGrain = Literal["day", "week"]
STATUSES = ("delivered", "late", "missing", "pending", "unexpected")
# The calendar's cell when a retailer is expected per day rather than per store.
ALL_STORES = "*"

_FILES_SCHEMA = {
    "date": pl.Date,
    "site_id": pl.String,
    "_source_file": pl.String,
    "_delivery_id": pl.String,
    "rows": pl.Int64,
    "first_arrival": pl.Datetime("us", "UTC"),
    "last_arrival": pl.Datetime("us", "UTC"),
    "_updated_at": pl.Datetime("us", "UTC"),
}


def last_expected_day(today: date, cadence: str, grain: CalendarGrain, week_ends_on: str) -> date:
    """The latest date owed by today: yesterday for a daily sender, the last finished week's end for
    a weekly one (and for a calendar of weeks)."""
    yesterday = today - timedelta(days=1)
    if cadence == "weekly" or grain == "week":
        end = period_end_of(yesterday, "week", week_ends_on)
        return end if end <= yesterday else end - timedelta(days=7)
    return yesterday


def calendar_dates(start: date, end: date, grain: CalendarGrain, week_ends_on: str) -> list[date]:
    """Every calendar date from `start` to `end`: each day, or each week's end date."""
    if grain == "week":
        first = period_end_of(start, "week", week_ends_on)
        return [first + timedelta(days=7 * i) for i in range(max(0, (end - first).days // 7 + 1))]
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def expected_cells(stores: pl.DataFrame, start: date, end: date, grain: CalendarGrain, week_ends_on: str) -> pl.DataFrame:
    """(date, site_id) cells owed: every store from `start` (or from its own first day, if later) to `end`.

    `stores` has `site_id` and `first_date` (null for a known store that never delivered: owed from `start`).
    """
    dates = pl.DataFrame({"date": calendar_dates(start, end, grain, week_ends_on)}, schema={"date": pl.Date})
    first = pl.max_horizontal(pl.col("first_date").fill_null(start), pl.lit(start))
    if grain == "week":  # a store that starts mid-week owes that week
        first = first.dt.offset_by("6d")
    return (
        stores.select("site_id", first.alias("_from"))
        .join(dates, how="cross")
        .filter(pl.col("date") >= pl.col("_from"))
        .select("date", "site_id")
        .sort("date", "site_id")
    )


def delivered_files(facts: nw.LazyFrame, date_col: str, per_store: bool = True) -> pl.DataFrame:
    """Per (date, store, file): rows, first/last arrival and last update of the stored fact rows (engine-neutral, then collected).

    Current rows only: a restated day counts its restating rows once, not both deliveries.
    """
    site = nw.col("site_id") if per_store else nw.lit(ALL_STORES)
    out = (
        facts.select(nw.col(date_col).alias("date"), site.alias("site_id"), "_source_file", "_delivery_id", "_ingested_at", "_updated_at")
        .group_by("date", "site_id", "_source_file", "_delivery_id")
        .agg(
            nw.len().alias("rows"),
            nw.col("_ingested_at").min().alias("first_arrival"),
            nw.col("_ingested_at").max().alias("last_arrival"),
            nw.col("_updated_at").max(),
        )
        .collect(backend="polars")
        .to_native()
    )
    return out.with_columns(
        pl.col("rows").cast(pl.Int64),
        *(pl.col(c).cast(pl.Datetime("us")).dt.replace_time_zone("UTC") for c in ("first_arrival", "last_arrival", "_updated_at")),
    ).select(list(_FILES_SCHEMA))


def cells_from_files(files: pl.DataFrame) -> pl.DataFrame:
    """Per delivered (date, store): rows, distinct files, first and last arrival, and the last file."""
    if files.is_empty():
        files = pl.DataFrame(schema=_FILES_SCHEMA)
    return (
        files.sort("last_arrival", "_source_file")
        .group_by("date", "site_id")
        .agg(
            pl.col("rows").sum().cast(pl.Int64),
            pl.col("_source_file").n_unique().cast(pl.Int64).alias("files"),
            pl.col("first_arrival").min(),
            pl.col("last_arrival").max(),
            pl.col("_source_file").last(),
            pl.col("_delivery_id").last(),
        )
    )


def due_at(dates: pl.Expr, cadence: str, grain: CalendarGrain, week_ends_on: str, due_days: int) -> pl.Expr:
    """When a cell's rows are due: the end of `due_days` days after its period (the day, or for a
    weekly sender the week that holds it)."""
    end = dates
    if cadence == "weekly" and grain == "day":
        offset = (pl.lit(_weekday(week_ends_on)) - dates.dt.weekday() + 7) % 7
        end = dates + pl.duration(days=offset)
    return (end + pl.duration(days=1 + due_days)).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def build_calendar(
    expected: pl.DataFrame,
    files: pl.DataFrame,
    previous: pl.DataFrame | None,
    *,
    now: datetime,
    cadence: str,
    grain: CalendarGrain,
    week_ends_on: str,
    due_days: int = 1,
) -> pl.DataFrame:
    """The calendar's cells: expected ones and delivered ones, with their status and lateness.

    `previous` (the stored calendar) keeps each cell's first arrival: a restatement replaces a
    day's rows (and their arrival times) but the day arrived when it first did. Nothing counts as
    late that came with the retailer's first load: history sent with the first delivery is a
    backfill, even when it arrives over minutes (an API's pages, history files copied one by one
    to SFTP). The first load is the earliest silver update among the stored rows (should every row
    of it be restated later, the backfill stretches to the next load: a rare, generous reading).
    """
    delivered = cells_from_files(files)
    if previous is not None and not previous.is_empty():
        earlier = previous.filter(pl.col("delivered")).select("date", "site_id", pl.col("first_arrival").alias("_earlier"))
        delivered = (
            delivered.join(earlier, on=["date", "site_id"], how="left")
            .with_columns(pl.min_horizontal("first_arrival", "_earlier").alias("first_arrival"))
            .drop("_earlier")
        )
    arrivals = [delivered["first_arrival"].min()]
    if previous is not None and not previous.is_empty():
        arrivals.append(previous["first_arrival"].min())
    onboarded = min((a for a in arrivals if a is not None), default=None)
    now = now.astimezone(UTC)
    cells = (
        expected.select("date", "site_id", pl.lit(True).alias("expected"))
        .join(delivered, on=["date", "site_id"], how="full", coalesce=True)
        .with_columns(pl.col("expected").fill_null(False), pl.col("rows").is_not_null().alias("delivered"))
        .with_columns(pl.col("rows").fill_null(0), pl.col("files").fill_null(0))
    )
    due = due_at(pl.col("date"), cadence, grain, week_ends_on, due_days)
    if onboarded is not None:
        due = pl.max_horizontal(due, pl.lit(onboarded).cast(pl.Datetime("us", "UTC")))
    now_lit = pl.lit(now).cast(pl.Datetime("us", "UTC"))
    cells = cells.with_columns(due.alias("due_at"))
    late = pl.col("delivered") & (pl.col("first_arrival") > pl.col("due_at"))
    first_load = files["_updated_at"].min()
    if first_load is not None:
        late = late & (pl.col("first_arrival") > pl.lit(first_load).cast(pl.Datetime("us", "UTC")))
    overdue = ~pl.col("delivered") & pl.col("expected") & (now_lit >= pl.col("due_at"))
    # Rows before the owed range are unexpected; rows for a day not owed yet (today's) are simply early.
    owed_from = expected["date"].min()
    before = pl.lit(True) if owed_from is None else pl.col("date") < pl.lit(owed_from, pl.Date)
    status = (
        pl.when(pl.col("delivered") & ~pl.col("expected") & before)
        .then(pl.lit("unexpected"))
        .when(late)
        .then(pl.lit("late"))
        .when(pl.col("delivered"))
        .then(pl.lit("delivered"))
        .when(overdue)
        .then(pl.lit("missing"))
        .otherwise(pl.lit("pending"))
    )
    hours = lambda a, b: ((a - b).dt.total_seconds() / 3600).round(1)  # noqa: E731
    late_by = pl.when(late).then(hours(pl.col("first_arrival"), pl.col("due_at"))).when(overdue).then(hours(now_lit, pl.col("due_at")))
    return (
        cells.with_columns(
            status.alias("status"),
            late_by.cast(pl.Float64).alias("late_by_hours"),
            pl.lit(grain).alias("grain"),
            pl.col("last_arrival").alias("_ingested_at"),
        )
        .select(*CALENDAR_COLUMNS)
        .sort("date", "site_id")
    )


CALENDAR_COLUMNS = (
    "date",
    "site_id",
    "grain",
    "expected",
    "delivered",
    "status",
    "rows",
    "files",
    "first_arrival",
    "last_arrival",
    "due_at",
    "late_by_hours",
    "_source_file",
    "_delivery_id",
    "_ingested_at",
)
# What follows from when, and in which files, the rows arrived rather than from what arrived: the
# same deliveries processed at other times or in other batches (after a crash, in one catch-up run)
# give other values here, and the same everywhere else.
ARRIVAL_RECORD = ("status", "files", "first_arrival", "last_arrival", "due_at", "late_by_hours")


def stamp_changes(calendar: pl.DataFrame, previous: pl.DataFrame | None, now: datetime) -> pl.DataFrame:
    """`_updated_at`: `now` for cells that are new or changed, the stored stamp for the others
    (so gold republishes only what changed)."""
    stamp = pl.lit(now.astimezone(UTC)).cast(pl.Datetime("us", "UTC"))
    if previous is None or previous.is_empty():
        return calendar.with_columns(stamp.alias("_updated_at"))
    compared = [c for c in CALENDAR_COLUMNS if c not in ("date", "site_id")]
    old = previous.select("date", "site_id", *[pl.col(c).alias(f"_old_{c}") for c in compared], pl.col("_updated_at").alias("_old_at"))
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"_old_{c}")) for c in compared])
    return (
        calendar.join(old, on=["date", "site_id"], how="left")
        .with_columns(pl.when(same & pl.col("_old_at").is_not_null()).then(pl.col("_old_at")).otherwise(stamp).alias("_updated_at"))
        .select(*CALENDAR_COLUMNS, "_updated_at")
    )


def window_summary(calendar: pl.DataFrame, first: date, last: date) -> dict[str, int]:
    """Cells per status (and expected cells) between two dates."""
    part = calendar.filter(pl.col("date").is_between(first, last))
    counts = dict(part.group_by("status").len().iter_rows())
    return {"expected": int(part["expected"].sum()), **{s: int(counts.get(s, 0)) for s in STATUSES}}


def _weekday(name: str) -> int:
    """ISO weekday (Monday=1 .. Sunday=7), as Polars' `dt.weekday()` counts."""
    from pos_lakehouse.transform.measures import WEEKDAYS

    return WEEKDAYS.index(name) + 1


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)
