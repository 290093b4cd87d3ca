"""Silver: bronze rows not yet consumed -> canonical, typed, deduplicated, keyed rows, MERGEd into Delta.

Incremental by construction: each silver table remembers (in its own Delta commits) the
bronze version it has consumed, and reads only the bronze files added since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import polars as pl

from pos_lakehouse.retailer import FileSpec, RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.mapping import ERROR_COLUMN, conform, prefix_ids, to_canonical
from pos_lakehouse.transform.scd2 import dim_observations, point_in_time_keys, scd2_versions

REJECTED_ROWS_TABLE = "rejected_rows"
KEY_COLUMN = {"prod_dim": "prod_key", "site_dim": "site_key"}
DIM_FOR_ID = {"prod_id": "prod_dim", "site_id": "site_dim"}


@dataclass
class SilverResult:
    """What one silver refresh did to one table; becomes asset metadata."""

    table: str
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    new_versions: int = 0
    closed_versions: int = 0
    input_rows: int = 0
    min_date: date | None = None
    max_date: date | None = None
    bronze_versions: dict[str, str] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def _bookmark(file_spec: FileSpec) -> str:
    return f"bronze.{file_spec.name}"


def new_bronze_rows(lake: Lake, spec: RetailerSpec, file_spec: FileSpec, consumed: str | None) -> tuple[pl.LazyFrame | None, int | None]:
    """Rows of bronze files appended after version `consumed`, and the bronze version they reach."""
    uri = lake.bronze(spec.name, file_spec.name)
    files, version = lake.files_added_since(uri, int(consumed) if consumed is not None else None)
    if not files:
        return None, version
    schema = lake.scan(uri).collect_schema()
    return pl.scan_parquet(files, schema=schema, missing_columns="insert"), version


def _canonical_rows(raw: pl.LazyFrame, spec: RetailerSpec, file_spec: FileSpec, table: str) -> pl.LazyFrame:
    fmt = file_spec.format
    lf = to_canonical(
        raw,
        spec.columns.get(file_spec.name, {}),
        file_spec.holds,
        decimal_comma=fmt.decimal_comma,
        date_formats=fmt.date_formats,
        checked=[table],
    )
    return prefix_ids(lf, spec.retailer_id)


def quarantine_rows(lake: Lake, spec: RetailerSpec, table: str, bad: pl.DataFrame, raw: pl.LazyFrame, now: datetime) -> dict[str, int]:
    """Keep rejected rows with their raw values and every failed rule; return counts per reason."""
    if bad.is_empty():
        return {}
    raw_cols = [c for c in raw.collect_schema().names() if not c.startswith("_") and c not in ("data_provider_code", "secure_group_key")]
    raw_rows = (
        raw.join(bad.lazy().select("_delivery_id", "_row_number", ERROR_COLUMN), on=["_delivery_id", "_row_number"], how="inner")
        .select(
            pl.lit(table).alias("canonical_table"),
            "_source_file",
            "_delivery_id",
            "_row_number",
            pl.col(ERROR_COLUMN).alias("reason"),
            pl.struct(raw_cols).struct.json_encode().alias("raw_values"),
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("rejected_at"),
        )
        .collect()
    )
    lake.append(
        lake.quarantine(spec.name, REJECTED_ROWS_TABLE),
        raw_rows,
        description="Rows that failed a silver rule: which rule, which file and row, and the raw values.",
    )
    reasons = bad.select(pl.col(ERROR_COLUMN).str.split("; ").explode().str.extract(r"^([^:]+: [a-z ]+?)(?: \S+ as .*)?$", 1))
    counts = reasons.group_by(ERROR_COLUMN).len()
    return {str(r[0]): int(r[1]) for r in counts.iter_rows()}


def refresh_dimension(lake: Lake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    table = canonical.TABLES[table_name]
    uri = lake.silver(spec.name, table_name)
    key_column = KEY_COLUMN[table_name]
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    observations, raws = [], []
    for file_spec in spec.files_holding(table_name):
        raw, version = new_bronze_rows(lake, spec, file_spec, marks.get(_bookmark(file_spec)))
        if version is not None:
            result.bronze_versions[_bookmark(file_spec)] = str(version)
        if raw is None:
            continue
        lf = _canonical_rows(raw, spec, file_spec, table_name)
        names = lf.collect_schema().names()
        if "date" in names:
            observed = "date"
        elif "week_end_date" in names:
            observed = "week_end_date"
        else:
            lf = lf.with_columns(pl.col("_ingested_at").dt.date().alias("_delivered_on"))
            observed = "_delivered_on"
        bad = lf.filter(pl.col(ERROR_COLUMN).is_not_null()).select("_delivery_id", "_row_number", ERROR_COLUMN).collect()
        result.quarantined += bad.height
        for reason, n in quarantine_rows(lake, spec, table_name, bad, raw, now).items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n
        good = lf.filter(pl.col(ERROR_COLUMN).is_null() & pl.col(observed).is_not_null())
        observations.append(dim_observations(good, table, observed).collect(engine="streaming"))
    if not observations:
        if result.bronze_versions and lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    obs = pl.concat(observations, how="diagonal_relaxed")
    result.input_rows = obs.height
    existing = lake.scan(uri, table.schema).collect()
    upserts = scd2_versions(obs, existing, table, spec.scd2.get(table_name, []), spec.retailer_id, key_column, now)
    if upserts.is_empty():
        if lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
            return result
    existing_keys = set(existing[key_column].to_list())
    result.new_versions = upserts.filter(~pl.col(key_column).is_in(list(existing_keys))).height
    result.closed_versions = upserts.filter(pl.col(key_column).is_in(list(existing_keys)) & ~pl.col("is_current")).height
    stats = lake.merge(
        uri,
        upserts,
        keys=[key_column],
        bookmarks=result.bronze_versions,
        description=f"{spec.name}: {table.description}",
        column_descriptions={c.name: c.description for c in table.columns},
    )
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    return result


def refresh_facts(lake: Lake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    uri = lake.silver(spec.name, table_name)
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    batches = []
    for file_spec in spec.files_holding(table_name):
        raw, version = new_bronze_rows(lake, spec, file_spec, marks.get(_bookmark(file_spec)))
        if version is not None:
            result.bronze_versions[_bookmark(file_spec)] = str(version)
        if raw is None:
            continue
        lf = _canonical_rows(raw, spec, file_spec, table_name)
        if "currency" not in lf.collect_schema().names():
            lf = lf.with_columns(pl.lit(spec.currency).alias("currency"))
        else:
            lf = lf.with_columns(pl.col("currency").fill_null(spec.currency))
        # Keys are attached next; an unknown product or store is a row-level problem.
        for natural, dim_name in DIM_FOR_ID.items():
            dim = lake.scan(lake.silver(spec.name, dim_name), canonical.TABLES[dim_name].schema)
            lf = point_in_time_keys(lf, dim, natural, KEY_COLUMN[dim_name], date_col)
            unknown = pl.col(KEY_COLUMN[dim_name]).is_null() & pl.col(ERROR_COLUMN).is_null()
            lf = lf.with_columns(
                pl.when(unknown).then(pl.format(f"{natural}: unknown {{}} (no {dim_name} version on this date)", pl.col(natural))).otherwise(pl.col(ERROR_COLUMN)).alias(ERROR_COLUMN)
            )
        frame = lf.collect(engine="streaming")
        bad = frame.filter(pl.col(ERROR_COLUMN).is_not_null())
        result.quarantined += bad.height
        for reason, n in quarantine_rows(lake, spec, table_name, bad.select("_delivery_id", "_row_number", ERROR_COLUMN), raw, now).items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n
        batches.append(frame.filter(pl.col(ERROR_COLUMN).is_null()))
    if not batches or all(b.is_empty() for b in batches):
        if result.bronze_versions and lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    facts = pl.concat(batches, how="diagonal_relaxed")
    result.input_rows = facts.height
    # The newest delivery of a key wins (a restatement replaces, it does not add).
    facts = facts.sort(["_ingested_at", "_source_file", "_row_number"]).unique(
        subset=list(table.natural_keys), keep="last", maintain_order=False
    )
    facts = conform(facts.lazy().with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_updated_at")), table).collect()
    result.min_date = facts[date_col].min()
    result.max_date = facts[date_col].max()
    stats = lake.merge(
        uri,
        facts,
        keys=list(table.natural_keys),
        restrict=f"t.{date_col} >= '{result.min_date}' AND t.{date_col} <= '{result.max_date}'",
        bookmarks=result.bronze_versions,
        description=f"{spec.name}: {table.description}",
        column_descriptions={c.name: c.description for c in table.columns},
    )
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    return result


def refresh_silver(lake: Lake, spec: RetailerSpec, tables: list[str], now: datetime | None = None) -> dict[str, SilverResult]:
    """Bring the given silver tables up to date with bronze; dimensions before facts."""
    now = now or datetime.now(timezone.utc)
    results = {}
    for name in spec.canonical_tables:
        if name not in tables:
            continue
        if name in canonical.DIMENSIONS:
            results[name] = refresh_dimension(lake, spec, name, now)
        else:
            results[name] = refresh_facts(lake, spec, name, now)
    return results
