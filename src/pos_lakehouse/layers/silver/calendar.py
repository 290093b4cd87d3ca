"""Silver's delivery calendar: the retailer's (date, store) cells owed and received, rebuilt from its stored facts.

Always computed in the Dagster process with Polars, whichever engine wrote the facts: the one
fact-sized step is an aggregate of five columns (streamed by Polars' lazy engine); the calendar
itself is days x stores. A cell's first arrival survives restatements through the stored calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import cast

import narwhals as nw
import polars as pl

from pos_lakehouse.layers.silver.result import SilverResult
from pos_lakehouse.profiling import stage
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.calendar import (
    ALL_STORES,
    CalendarGrain,
    build_calendar,
    delivered_files,
    expected_cells,
    last_expected_day,
    stamp_changes,
)

CALENDAR = canonical.DELIVERY_CALENDAR.name


def calendar_source(spec: RetailerSpec) -> tuple[str, str, CalendarGrain]:
    """(fact table, its date column, calendar grain): daily facts where the retailer sends them, else its weeks."""
    if "store_day_fact" in spec.canonical_tables:
        return "store_day_fact", "date", "day"
    return "store_week_fact", "week_end_date", "week"


def known_stores(lake: Lake, spec: RetailerSpec, files: pl.DataFrame) -> pl.DataFrame:
    """(site_id, first_date): the site dimension's current stores and every store that delivered,
    each with its first delivered date (null: never delivered, owed from the retailer's start)."""
    firsts = files.group_by("site_id").agg(pl.col("date").min().alias("first_date"))
    if not spec.completeness.per_store:
        return pl.DataFrame({"site_id": [ALL_STORES]}).join(firsts, on="site_id", how="left")
    uri = lake.silver(spec.name, "site_dim")
    dim = (
        lake.scan(uri, canonical.SITE_DIM.schema).filter(pl.col("is_current")).select("site_id").unique().collect()
        if lake.exists(uri)
        else pl.DataFrame(schema={"site_id": pl.String})
    )
    return pl.concat([dim, firsts.select("site_id")]).unique().join(firsts, on="site_id", how="left").sort("site_id")


def read_calendar(lake: Lake, spec: RetailerSpec) -> pl.DataFrame | None:
    uri = lake.silver(spec.name, CALENDAR)
    return lake.scan(uri, canonical.DELIVERY_CALENDAR.schema).collect() if lake.exists(uri) else None


def refresh_calendar(lake: Lake, spec: RetailerSpec, now: datetime | None = None) -> SilverResult:
    """Rebuild the retailer's delivery calendar up to today and MERGE what changed into silver."""
    if not isinstance(lake, Lake):
        raise TypeError(f"{spec.name}: the delivery calendar is built with the Polars Lake, in the Dagster process")
    now = now or datetime.now(UTC)
    result = SilverResult(CALENDAR)
    source, date_col, grain = calendar_source(spec)
    source_uri = lake.silver(spec.name, source)
    if not lake.exists(source_uri):
        return result
    facts = lake.read(source_uri, canonical.TABLES[source].schema)
    with stage(f"{CALENDAR}: delivered cells"):
        files = delivered_files(facts, date_col, spec.completeness.per_store)
    start = spec.completeness.start_date or cast("date | None", files["date"].min())
    if start is None:
        return result
    end = last_expected_day(now.date(), spec.cadence, grain, spec.week_ends_on)
    expected = expected_cells(known_stores(lake, spec, files), start, end, grain, spec.week_ends_on)
    previous = read_calendar(lake, spec)
    uri = lake.silver(spec.name, CALENDAR)
    cells = build_calendar(
        expected,
        files,
        previous,
        now=now,
        cadence=spec.cadence,
        grain=grain,
        week_ends_on=spec.week_ends_on,
        due_days=spec.completeness.due_days,
    )
    table = canonical.DELIVERY_CALENDAR
    cells = stamp_changes(cells, previous, now).with_columns(
        pl.lit(spec.data_provider_code).alias("data_provider_code"), pl.lit(spec.secure_group_key, pl.Int64).alias("secure_group_key")
    )
    cells = cells.select([pl.col(c.name).cast(c.dtype) for c in table.columns])
    result.input_rows = int(files["rows"].sum())
    result.min_date, result.max_date = cast("date | None", cells["date"].min()), cast("date | None", cells["date"].max())
    stamp = pl.lit(now.astimezone(UTC)).cast(pl.Datetime("us", "UTC"))
    changed = cells.filter(pl.col("_updated_at") == stamp).height
    removed = 0 if previous is None else previous.join(cells, on=["date", "site_id"], how="anti").height
    # The facts' newest update this calendar has seen: the catch-up sensor compares it with the facts.
    latest = cast("datetime | None", files["_updated_at"].max())
    marks = lake.bookmarks(uri) if previous is not None else {}
    bookmarks = {**marks, "day_updated_at": latest.isoformat()} if latest is not None else marks
    if previous is not None and changed == 0 and removed == 0:
        if bookmarks != marks:
            lake.commit_bookmarks(uri, bookmarks)
        return result
    stats = lake.merge(
        uri,
        nw.from_native(cells.lazy()),
        keys=list(table.natural_keys),
        # Cells no longer owed nor delivered (a later `starts_on`, a store gone) leave the calendar.
        delete_unmatched="t.date IS NOT NULL",
        bookmarks=bookmarks,
        description=f"{spec.name}: {table.description}",
        column_descriptions={c.name: c.description for c in table.columns},
    )
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    result.removed = removed
    return result
