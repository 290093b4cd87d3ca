"""Silver: bronze rows not yet consumed -> canonical, typed, deduplicated, keyed rows, MERGEd into Delta.

Incremental by construction: each silver table remembers (in its own Delta commits) the
bronze version it has consumed, and reads only the bronze files added since.

Written once for both engines: the frames are narwhals LazyFrames over Polars (in the Dagster
process, `storage.lake.Lake`) or PySpark (the Spark job, `spark.lake.SparkLake`); the few
engine functions narwhals lacks come from `engines.edges`.

Where things live: `plan` (what a kind of file's new bronze rows are and where they go),
`batches` (how they are cut and ordered), `dimensions` and `facts` (each walks its rows:
gather, transform, write), `derived` (FX, masks, period facts), `calendar` (deliveries owed and received), `quarantine` (rows that broke
a rule), `result` (what a refresh did). The canonical model's own facts (keys, grains,
partitions, derived columns) are in `transform.canonical`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pos_lakehouse.layers.silver.derived import refill_late_fx, refresh_derived_measures, refresh_period_facts
from pos_lakehouse.layers.silver.dimensions import reenrich_current_versions, refresh_dimension
from pos_lakehouse.layers.silver.facts import refresh_facts
from pos_lakehouse.layers.silver.quarantine import REJECTED_ROWS_TABLE
from pos_lakehouse.layers.silver.result import SilverResult, silver_metadata, silver_result_from_dict
from pos_lakehouse.profiling import stage
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.canonical import DERIVED_MEASURE_COLUMNS, DIM_FOR_ID, GRAIN, KEY_COLUMN, fact_partitions

CALENDAR = canonical.DELIVERY_CALENDAR.name

__all__ = [
    "CALENDAR",
    "DERIVED_MEASURE_COLUMNS",
    "DIM_FOR_ID",
    "GRAIN",
    "KEY_COLUMN",
    "REJECTED_ROWS_TABLE",
    "SilverResult",
    "fact_partitions",
    "refill_late_fx",
    "refresh_derived_measures",
    "refresh_dimension",
    "refresh_facts",
    "refresh_period_facts",
    "refresh_silver",
    "silver_metadata",
    "silver_result_from_dict",
]


def refresh_silver(lake: LakeIO, spec: RetailerSpec, tables: list[str], now: datetime | None = None) -> dict[str, SilverResult]:
    """Bring the given silver tables up to date with bronze; dimensions before facts."""
    now = now or datetime.now(UTC)
    results = {}
    shared: dict = {}
    for name in spec.canonical_tables:
        if name not in tables:
            continue
        # A table this refresh creates holds only rows it wrote with today's master data and FX
        # rates: none to re-enrich or fill, so the passes that look for them are skipped.
        existed = lake.exists(lake.silver(spec.name, name))
        if name in canonical.DIMENSIONS:
            with stage(f"{name}"):
                results[name] = refresh_dimension(lake, spec, name, now, shared)
            with stage(f"{name}: re-enrich"):
                results[name].reenriched = reenrich_current_versions(lake, spec, name, now) if existed else 0
        else:
            with stage(f"{name}"):
                results[name] = refresh_facts(lake, spec, name, now)
            with stage(f"{name}: late FX refill"):
                results[name].fx_filled = refill_late_fx(lake, spec, name, now) if existed else 0
    for name in spec.derived_tables:
        if name == CALENDAR:
            continue
        if name in tables:
            with stage(f"{name}"):
                results[name] = refresh_period_facts(lake, spec, name, now)
    if CALENDAR in tables:  # in-process Polars whichever engine wrote the facts (see `calendar`)
        from pos_lakehouse.layers.silver.calendar import refresh_calendar

        with stage(CALENDAR):
            results[CALENDAR] = refresh_calendar(lake, spec, now)  # type: ignore[arg-type]
    return results
