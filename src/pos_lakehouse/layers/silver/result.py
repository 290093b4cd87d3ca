"""What one silver refresh did to one table, and how it is reported (asset metadata, the Spark job's JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pos_lakehouse.transform import canonical

# The silver table's columns travel with each materialization, not with the asset definition: the
# daemon re-reads every definition's snapshot each minute, and one schema per retailer and table was
# over half of it at a few hundred retailers.
COLUMN_SCHEMA = "dagster/column_schema"


@dataclass
class SilverResult:
    """What one silver refresh did to one table; becomes asset metadata."""

    table: str
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    removed: int = 0  # stored fact rows a restatement no longer holds (deleted or measures cleared)
    new_versions: int = 0
    closed_versions: int = 0
    input_rows: int = 0
    min_date: date | None = None
    max_date: date | None = None
    bronze_versions: dict[str, str] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    enrichment_matched: int = 0  # rows written with a corporate master match (dims)
    enrichment_missing: int = 0  # rows written without one: counted, not fatal
    fx_missing: int = 0  # fact rows without an FX rate for their currency and date
    fx_filled: int = 0  # stored rows whose late FX rate arrived: USD values filled by this refresh
    reenriched: int = 0  # current dimension versions whose corporate master attributes changed
    # Row accounting of a fact refresh: every bronze row is loaded, quarantined or superseded.
    bronze_rows: int = 0
    loaded: int = 0
    superseded: int = 0  # older deliveries of the same store-day (or row) in the same batch
    quarantined_by_file: dict[str, list[int]] = field(default_factory=dict)  # file -> [quarantined, rows read]
    duplicates_removed: int = 0  # rows of a key stored twice (by an earlier version), removed by this refresh

    @property
    def unaccounted(self) -> int:
        return self.bronze_rows - self.loaded - self.quarantined - self.superseded


def column_schema(table_name: str) -> dict:
    """A canonical table's columns as plain data: Dagster's table-schema metadata on either side."""
    return {"columns": [{"name": c.name, "type": str(c.dtype), "description": c.description} for c in canonical.TABLES[table_name].columns]}


def silver_metadata(result: SilverResult, row_count: int, uri: str, engine: str) -> dict:
    """The silver asset's materialization metadata, the same for both engines.

    Plain values; dicts are JSON metadata (the Dagster side and the Pipes side each wrap them),
    except `COLUMN_SCHEMA`, which each side wraps as a table schema.
    """
    return {
        COLUMN_SCHEMA: column_schema(result.table),
        "dagster/row_count": row_count,
        "dagster/uri": uri,
        "engine": engine,
        "rows_read_from_bronze": result.input_rows,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_quarantined": result.quarantined,
        "bronze_rows_read": result.bronze_rows,
        "rows_loaded": result.loaded,
        "rows_superseded": result.superseded,
        "rows_removed_by_restatement": result.removed,
        "duplicate_key_rows_removed": result.duplicates_removed,
        "quarantine_reasons": dict(result.quarantine_reasons),
        "new_versions": result.new_versions,
        "closed_versions": result.closed_versions,
        "corporate_master_matched": result.enrichment_matched,
        "corporate_master_missing": result.enrichment_missing,
        "rows_without_fx_rate": result.fx_missing,
        "rows_filled_by_late_fx": result.fx_filled,
        "versions_reenriched_from_master": result.reenriched,
        **date_span(result.min_date, result.max_date),
        "bronze_versions_consumed": dict(result.bronze_versions),
    }


def silver_result_from_dict(data: dict) -> SilverResult:
    """A `SilverResult` sent as JSON (the Spark job's report) back as the dataclass."""
    values = dict(data)
    for key in ("min_date", "max_date"):
        if values.get(key):
            values[key] = date.fromisoformat(str(values[key]))
    return SilverResult(**values)


def date_span(first: date | None, last: date | None) -> dict[str, str]:
    """The dates a materialization's rows span, as asset metadata (silver and gold report them alike)."""
    return {"dates_from": str(first) if first else "-", "dates_to": str(last) if last else "-"}
