"""Completeness of a retailer's deliveries: the calendar's check (missing and late days in a trailing
window) and the calendar asset's metadata (a grid of the last weeks and counts Dagster can plot)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import dagster as dg
import polars as pl

from pos_lakehouse.quality.calendar_grid import counts, grid, markdown_grid, window
from pos_lakehouse.retailer import RetailerSpec

CHECK_NAME = "deliveries_complete"
GRID_WEEKS = 4


def completeness_check_spec(spec: RetailerSpec, key: dg.AssetKey) -> dg.AssetCheckSpec:
    c = spec.completeness
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=key,
        blocking=c.blocking,
        description=f"Every (date, store) owed in the last {c.window_days} days arrived, on time (due {c.due_days} day(s) "
        f"after its {'week' if spec.cadence == 'weekly' else 'day'}); missing and late cells are listed. "
        + ("Blocking: gold waits for missing days." if c.blocking else "A warning: gold flows."),
    )


def _listing(cells: pl.DataFrame) -> str:
    """`- 2026-12-01: S001, S002` per date (Markdown)."""
    if cells.is_empty():
        return "none"
    by_date = cells.group_by("date").agg(pl.col("site_id").sort()).sort("date")
    return "\n".join(f"- {d}: {', '.join(sites)}" for d, sites in by_date.iter_rows())


def completeness_result(
    spec: RetailerSpec, key: dg.AssetKey, calendar: pl.DataFrame | None, now: datetime | None = None
) -> dg.AssetCheckResult:
    """The check's outcome on the stored calendar: missing and late cells of the trailing window."""
    now = now or datetime.now(UTC)
    c = spec.completeness
    last = now.date() - timedelta(days=1)
    first = last - timedelta(days=c.window_days - 1)
    part = calendar.filter(pl.col("date").is_between(first, last)) if calendar is not None else None
    missing = (
        part.filter(pl.col("status") == "missing") if part is not None else pl.DataFrame(schema={"date": pl.Date, "site_id": pl.String})
    )
    late = part.filter(pl.col("status") == "late") if part is not None else missing.clear()
    problems = missing.height + late.height
    described = [f"{n} {what}" for n, what in ((missing.height, "missing"), (late.height, "late")) if n]
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=CHECK_NAME,
        passed=problems == 0,
        # Blocking holds gold back for what is owed and not there; a late cell has arrived (gold is
        # whole again), so lateness alone is reported, never blocking.
        severity=dg.AssetCheckSeverity.ERROR if c.blocking and missing.height else dg.AssetCheckSeverity.WARN,
        description=f"{spec.name}: {' and '.join(described)} (date, store) cells since {first}" if problems else None,
        metadata={
            "window": f"{first} .. {last}",
            "cells_missing": missing.height,
            "cells_late": late.height,
            "max_late_hours": float(cast("float | None", late["late_by_hours"].max()) or 0) if late.height else 0.0,
            "missing": dg.MetadataValue.md(_listing(missing)),
            "late": dg.MetadataValue.md(_listing(late)),
        },
    )


def calendar_metadata(calendar: pl.DataFrame | None, now: datetime | None = None, weeks: int = GRID_WEEKS) -> dict:
    """The calendar asset's extra metadata: counts of the last weeks and their grid (days x stores)."""
    now = now or datetime.now(UTC)
    first, last = window(now.date() - timedelta(days=1), weeks)
    if calendar is None:
        return {}
    return {**counts(calendar, first, last), "grid": dg.MetadataValue.md(markdown_grid(grid(calendar, first, last)))}
