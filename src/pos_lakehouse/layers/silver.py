"""Silver: bronze rows not yet consumed -> canonical, typed, deduplicated, keyed rows, MERGEd into Delta.

Incremental by construction: each silver table remembers (in its own Delta commits) the
bronze version it has consumed, and reads only the bronze files added since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import polars as pl

from pos_lakehouse.retailer import FileSpec, RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.mapping import ERROR_COLUMN, conform, prefix_ids, to_canonical
from pos_lakehouse.layers.reference import EnrichmentStats, enrich_dimension, reference_frame
from pos_lakehouse.transform import masking
from pos_lakehouse.transform.masking import mask_measures
from pos_lakehouse.transform.measures import aggregate_period, convert_to_usd, history_window, masked_measures, period_end
from pos_lakehouse.transform.scd2 import START_OF_HISTORY, dim_observations, point_in_time_keys, scd2_versions

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
    # Row accounting of a fact refresh: every bronze row is loaded, quarantined or superseded.
    bronze_rows: int = 0
    loaded: int = 0
    superseded: int = 0  # older deliveries of the same store-day (or row) in the same batch

    @property
    def unaccounted(self) -> int:
        return self.bronze_rows - self.loaded - self.quarantined - self.superseded


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
    observations = []
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
    enrichment = EnrichmentStats()

    def _enrich(frame: pl.DataFrame) -> pl.DataFrame:
        enriched, stats = enrich_dimension(frame, lake, table_name)
        enrichment.matched, enrichment.missing = stats.matched, stats.missing
        return enriched

    upserts = scd2_versions(
        obs, existing, table, spec.scd2.get(table_name, []), spec.retailer_id, key_column, now, enrich=_enrich
    )
    result.enrichment_matched, result.enrichment_missing = enrichment.matched, enrichment.missing
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


def _measure_columns(measures) -> list[str]:
    """Measures and the columns derived from them (USD twins, antitrust-masked twins)."""
    cols = []
    for m in measures:
        cols.append(m)
        twins = [m.replace("_lc", "_usd")] if m in canonical.VALUE_MEASURES else []
        cols += twins + [f"at_masked_{c}" for c in (m, *twins)]
    return cols


def _deduplicate_fact_batch(frame: pl.DataFrame, keys: list[str], date_col: str, replaces: str) -> pl.DataFrame:
    """Flag duplicate keys inside one file, and keep the newest delivery where deliveries overlap.

    Inside a file the last row of a key is loaded and earlier copies are quarantined (the file
    contradicts itself; its last word counts, the others stay visible with a reason). Across
    deliveries in one batch the newest one wins per store-day (or per row with `replaces: rows`),
    exactly as if they had been processed one after another.
    """
    ok = pl.col(ERROR_COLUMN).is_null()
    last_row = pl.when(ok).then(pl.col("_row_number")).max().over(["_delivery_id", *keys])
    frame = frame.with_columns(
        pl.when(ok & (pl.col("_row_number") != last_row))
        .then(pl.lit("duplicate: superseded by a later row with the same key in this file"))
        .otherwise(pl.col(ERROR_COLUMN))
        .alias(ERROR_COLUMN)
    )
    deliveries = frame.select("_delivery_id", "_ingested_at", "_source_file").unique()
    if deliveries.height > 1:
        ranks = deliveries.sort("_ingested_at", "_source_file").with_row_index("_delivery_rank").select("_delivery_id", "_delivery_rank")
        frame = frame.join(ranks, on="_delivery_id", how="left")
        scope = [date_col, "site_id"] if replaces == "site_days" else keys
        newest = pl.when(pl.col(ERROR_COLUMN).is_null()).then(pl.col("_delivery_rank")).max().over(scope)
        frame = frame.filter(pl.col(ERROR_COLUMN).is_not_null() | (pl.col("_delivery_rank") == newest)).drop("_delivery_rank")
    return frame


def _restated_away(lake: Lake, uri: str, good: pl.DataFrame, keys: list[str], date_col: str, carried: list[str]) -> pl.DataFrame:
    """Stored rows of the delivered store-days that the new delivery no longer contains.

    Such a row is deleted, unless another kind of file also fills it (sales and inventory
    apart): then only the measures this kind carries are cleared.
    """
    if good.is_empty() or not lake.exists(uri):
        return pl.DataFrame()
    pairs = good.select(date_col, "site_id").unique()
    stored = (
        lake.scan(uri)
        .filter(pl.col(date_col).is_between(pairs[date_col].min(), pairs[date_col].max()))
        .join(pairs.lazy(), on=[date_col, "site_id"], how="semi")
        .join(good.lazy().select(keys), on=keys, how="anti")
    )
    others = [m for m in canonical.MEASURES if m not in carried]
    filled_by_others = pl.any_horizontal([pl.col(m).is_not_null() for m in others]) if others else pl.lit(False)
    return stored.select(*keys, pl.when(filled_by_others).then(pl.lit("clear")).otherwise(pl.lit("delete")).alias("_action")).collect()


def refresh_facts(lake: Lake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    """MERGE new bronze fact rows into silver, one kind of file at a time.

    A kind of file sets only the measures it carries (sales and inventory may arrive apart and
    fill the same rows), and a delivery restates the store-days it contains: rows of those
    store-days that it no longer holds are removed (see `FileSpec.replaces`).
    """
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    keys = list(table.natural_keys)
    uri = lake.silver(spec.name, table_name)
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    committed = dict(marks)
    for file_spec in spec.files_holding(table_name):
        raw, version = new_bronze_rows(lake, spec, file_spec, marks.get(_bookmark(file_spec)))
        if version is not None:
            result.bronze_versions[_bookmark(file_spec)] = str(version)
        if raw is None:
            continue
        lf = _canonical_rows(raw, spec, file_spec, table_name)
        names = lf.collect_schema().names()
        carried = [m for m in canonical.MEASURES if m in names]
        if "currency" not in names:
            lf = lf.with_columns(pl.lit(spec.currency).alias("currency"))
        else:
            lf = lf.with_columns(pl.col("currency").fill_null(spec.currency))
        # Keys are attached next; an unknown product or store is a row-level problem. Rows without
        # a date (already flagged) look up the first version, so the point-in-time join keeps them
        # (it would drop them otherwise) in the same single pass over the data.
        lf = lf.with_columns(pl.col(date_col).fill_null(START_OF_HISTORY).alias("_lookup_date"))
        for natural, dim_name in DIM_FOR_ID.items():
            dim = lake.scan(lake.silver(spec.name, dim_name), canonical.TABLES[dim_name].schema)
            lf = point_in_time_keys(lf, dim, natural, KEY_COLUMN[dim_name], "_lookup_date")
            unknown = pl.col(KEY_COLUMN[dim_name]).is_null() & pl.col(ERROR_COLUMN).is_null()
            lf = lf.with_columns(
                pl.when(unknown).then(pl.format(f"{natural}: unknown {{}} (no {dim_name} version on this date)", pl.col(natural))).otherwise(pl.col(ERROR_COLUMN)).alias(ERROR_COLUMN)
            )
        lf = lf.drop("_lookup_date")
        # Only the columns silver stores (plus the row's identity) are materialized.
        # Lineage strings repeat on every row of a file: categorical while in memory.
        wanted = [c.name for c in table.columns if c.name in lf.collect_schema().names()]
        lineage = [pl.col(c).cast(pl.Categorical) for c in ("_source_file", "_delivery_id") if c in wanted]
        frame = lf.select(*wanted, "_row_number", ERROR_COLUMN).with_columns(lineage).collect(engine="streaming")
        result.input_rows += frame.height
        result.bronze_rows += raw.select(pl.len()).collect().item()
        before_dedup = frame.height
        frame = _deduplicate_fact_batch(frame, keys, date_col, file_spec.replaces)
        result.superseded += before_dedup - frame.height
        bad = frame.filter(pl.col(ERROR_COLUMN).is_not_null())
        result.quarantined += bad.height
        for reason, n in quarantine_rows(
            lake, spec, table_name, bad.select(pl.col("_delivery_id").cast(pl.String), "_row_number", ERROR_COLUMN), raw, now
        ).items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n
        facts = (frame.filter(pl.col(ERROR_COLUMN).is_null()) if bad.height else frame).drop("_row_number", ERROR_COLUMN)
        result.loaded += facts.height
        del frame, bad
        if facts.is_empty():
            continue
        facts = facts.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_updated_at"))
        removals = _restated_away(lake, uri, facts, keys, date_col, carried) if file_spec.replaces == "site_days" else pl.DataFrame()
        lo, hi = facts[date_col].min(), facts[date_col].max()
        result.min_date = lo if result.min_date is None else min(result.min_date, lo)
        result.max_date = hi if result.max_date is None else max(result.max_date, hi)
        not_carried = _measure_columns([m for m in canonical.MEASURES if m not in carried])
        clear_columns = [*_measure_columns(carried), "_updated_at", "_source_file", "_delivery_id", "_ingested_at"]
        conformed = [
            (pl.col(c.name).cast(c.dtype) if c.name in facts.columns else pl.lit(None, c.dtype)).alias(c.name) for c in table.columns
        ]
        source = facts.lazy().select(*conformed, pl.lit("upsert").alias("_action"))
        if not removals.is_empty():
            result.removed += removals.height
            source_file, delivery_id, ingested_at = facts.select("_source_file", "_delivery_id", "_ingested_at").row(-1)
            removal_rows = removals.lazy().with_columns(
                pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_updated_at"),
                pl.lit(source_file).alias("_source_file"),
                pl.lit(delivery_id).alias("_delivery_id"),
                pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
            )
            have = set(removal_rows.collect_schema().names())
            source = pl.concat(
                [
                    source,
                    removal_rows.select(
                        *[(pl.col(c.name).cast(c.dtype) if c.name in have else pl.lit(None, c.dtype)).alias(c.name) for c in table.columns],
                        "_action",
                    ),
                ]
            )
        stats = lake.merge(
            uri,
            source,
            keys=keys,
            restrict=f"t.{date_col} >= '{lo}' AND t.{date_col} <= '{hi}'",
            bookmarks=result.bronze_versions,
            description=f"{spec.name}: {table.description}",
            column_descriptions={c.name: c.description for c in table.columns},
            update_columns=[c.name for c in table.columns if c.name not in not_carried],
            action_column="_action",
            clear_columns=clear_columns,
        )
        result.inserted += int(stats.get("num_target_rows_inserted", 0))
        result.updated += int(stats.get("num_target_rows_updated", 0))
        committed = dict(result.bronze_versions)
    if result.bronze_versions != committed and lake.exists(uri):
        lake.commit_bookmarks(uri, result.bronze_versions)
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
            if results[name].min_date is not None:
                results[name].fx_missing = refresh_derived_measures(
                    lake, spec, name, results[name].min_date, results[name].max_date, now
                )
    for name in spec.derived_tables:
        if name in tables:
            results[name] = refresh_period_facts(lake, spec, name, now)
    return results


GRAIN = {"store_day_fact": "day", "store_week_fact": "week", "store_month_fact": "month"}
DERIVED_MEASURE_COLUMNS = [
    c.name for c in canonical.STORE_DAY_FACT.derived_columns if c.name.endswith("_usd") or c.name.startswith("at_masked_") or c.name == "fx_rate_to_usd"
]


def refresh_derived_measures(lake: Lake, spec: RetailerSpec, table_name: str, first: date, last: date, now: datetime) -> int:
    """Recompute FX-converted and antitrust-masked columns for the dates a refresh touched.

    Runs after the fact MERGE, on the silver rows themselves, so it is right whichever file kinds
    set which measures. Masks look back over their window, so history is read and the dates up to
    one window after `last` are refreshed too. Returns the number of rows without an FX rate.
    """
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    grain = GRAIN[table_name]
    reach = masking.history_window(grain)
    uri = lake.silver(spec.name, table_name)
    rows = (
        lake.scan(uri, table.schema)
        .filter(pl.col(date_col).is_between(first - reach, last + reach))
        # Only what FX and masks read: a wide fact table over a long range would not fit in memory.
        .select(*table.natural_keys, "currency", *canonical.MEASURES)
        .collect()
    )
    rows = convert_to_usd(rows.lazy(), reference_frame(lake, "fx_rates"), date_col).collect()
    rows = mask_measures(rows, date_col, grain, list(masked_measures(spec.antitrust)))
    touched = rows.filter(pl.col(date_col).is_between(first, last + reach))
    if touched.is_empty():
        return 0
    fx_missing = touched.filter(pl.col("fx_rate_to_usd").is_null()).height
    keys = list(table.natural_keys)
    derived = [c for c in DERIVED_MEASURE_COLUMNS if c in touched.columns]
    update = (
        conform(touched.lazy(), table)
        .select(*keys, *derived)
        .with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_updated_at"))
        .collect()
    )
    lake.merge(
        uri,
        update,
        keys=keys,
        restrict=f"t.{date_col} >= '{first}' AND t.{date_col} <= '{last + reach}'",
        update_columns=[*derived, "_updated_at"],
        bookmarks=lake.bookmarks(uri),
    )
    return fx_missing


def refresh_period_facts(lake: Lake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    """Weekly or monthly facts derived from the retailer's daily silver facts, for the periods that changed.

    A period is recomputed whole from its days (so a restated day replaces, never adds), flows
    summed and stocks taken at the period's end; the period's masked values are recomputed too.
    """
    grain = GRAIN[table_name]
    table = canonical.TABLES[table_name]
    end_col = table.natural_keys[0]
    uri = lake.silver(spec.name, table_name)
    day_uri = lake.silver(spec.name, "store_day_fact")
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    watermark = marks.get("day_updated_at")
    daily = lake.scan(day_uri, canonical.STORE_DAY_FACT.schema)
    changed = daily if watermark is None else daily.filter(pl.col("_updated_at") > datetime.fromisoformat(watermark))
    span = changed.select(pl.col("date").min().alias("lo"), pl.col("date").max().alias("hi"), pl.col("_updated_at").max().alias("mark")).collect()
    lo, hi, mark = span.row(0)
    if lo is None:
        return result
    first_end = pl.select(period_end(pl.lit(lo), grain, spec.week_ends_on)).item()
    last_end = pl.select(period_end(pl.lit(hi), grain, spec.week_ends_on)).item()
    # Whole periods: from the day after the previous period's end.
    first_day = (pl.select(period_end(pl.lit(lo), grain, spec.week_ends_on)).item()
                 - (timedelta(days=6) if grain == "week" else timedelta(days=first_end.day - 1)))
    # Lazy: only the columns the aggregation reads are loaded (the daily table is wide and long).
    days = daily.filter(pl.col("date").is_between(first_day, last_end))
    aggregated = aggregate_period(days, grain, spec.week_ends_on).collect(engine="streaming")
    reach = history_window(grain)
    history = lake.scan(uri, table.schema).filter(
        pl.col(end_col).is_between(first_end - reach, last_end + reach) & ~pl.col(end_col).is_between(first_end, last_end)
    ).collect()
    combined = pl.concat([conform(aggregated.lazy(), table).collect(), history], how="diagonal_relaxed")
    combined = mask_measures(combined, end_col, grain, list(masked_measures(spec.antitrust)))
    out = conform(
        combined.filter(pl.col(end_col).is_between(first_end, last_end + reach)).lazy().with_columns(
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_updated_at")
        ),
        table,
    ).collect()
    result.input_rows = days.select(pl.len()).collect().item()
    result.min_date, result.max_date = first_end, last_end
    stats = lake.merge(
        uri,
        out,
        keys=list(table.natural_keys),
        restrict=f"t.{end_col} >= '{first_end}' AND t.{end_col} <= '{last_end + reach}'",
        # A product/store that no longer has days in a recomputed period loses its period row.
        delete_unmatched=f"t.{end_col} >= '{first_end}' AND t.{end_col} <= '{last_end}'",
        bookmarks={**marks, "day_updated_at": mark.isoformat()},
        description=f"{spec.name}: {table.description} Derived from store_day_fact.",
        column_descriptions={c.name: c.description for c in table.columns},
    )
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    return result
