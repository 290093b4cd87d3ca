"""Which engine refreshes a retailer's silver and gold this time (`engine: auto`): Polars for a
small delivery, Spark from `spark_from_rows` new bronze rows on (a backfill, an oversized file).

Both engines write the same tables by the same rules and read each other's bookmarks, so a
retailer can switch between deliveries; what it costs is what decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Literal

import polars as pl

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake


def pending_bronze_rows(lake: Lake, spec: RetailerSpec, tables: Sequence[str]) -> int:
    """New bronze rows a silver refresh of `tables` would read: per kind of file, the rows of the
    bronze data files added since the oldest version one of those tables has consumed (from the
    Delta log's per-file record counts; nothing is read)."""
    total = 0
    for file_spec in spec.delivery.files:
        holders = [t for t in tables if t in file_spec.holds]
        uri = lake.bronze(spec.name, file_spec.name)
        table = lake.snapshot(uri)
        if not holders or table is None:
            continue
        consumed = [lake.bookmarks(lake.silver(spec.name, t)).get(f"bronze.{file_spec.name}") for t in holders]
        oldest = None if any(c is None for c in consumed) else min(int(c) for c in consumed if c is not None)
        files, _ = lake.files_added_since(uri, oldest)
        if not files:
            continue
        names = {PurePosixPath(f).name for f in files}
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        for path, records in zip(actions["path"].to_list(), actions["num_records"].to_list(), strict=True):
            total += int(records or 0) if PurePosixPath(path).name in names else 0
    return total


def engine_for(spec: RetailerSpec, pending_rows: int) -> Literal["polars", "spark"]:
    """The engine for a refresh reading `pending_rows` new bronze rows."""
    if spec.engine != "auto":
        return spec.engine
    return "spark" if pending_rows >= spec.spark_from_rows else "polars"
