"""Silver on Spark: `layers/silver.py` function for function (same bookmarks, rules, keys and MERGEs).

Results are the Polars engine's `SilverResult`, so the Dagster side reports both engines alike.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pos_lakehouse.layers.reference import REFERENCE_TABLES
from pos_lakehouse.layers.silver import (
    DERIVED_MEASURE_COLUMNS,
    DIM_FOR_ID,
    GRAIN,
    KEY_COLUMN,
    REJECTED_ROWS_TABLE,
    SilverResult,
    _bookmark,
    _measure_columns,
)
from pos_lakehouse.retailer import FileSpec, RetailerSpec
from pos_lakehouse.spark import transform as st
from pos_lakehouse.spark.lake import FILE_PATH, FILE_ROW, SparkLake
from pos_lakehouse.spark.types import spark_schema, spark_type
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.mapping import ERROR_COLUMN
from pos_lakehouse.transform import masking
from pos_lakehouse.transform.masking import mask_measures
from pos_lakehouse.transform.measures import history_window, masked_measures
from pos_lakehouse.transform.scd2 import START_OF_HISTORY

_REASON = r"^([^:]+: [a-z ]+?)(?: \S+ as .*)?$"


def _ts(now: datetime):
    return F.lit(now).cast("timestamp")


def new_bronze_rows(lake: SparkLake, spec: RetailerSpec, file_spec: FileSpec, consumed: str | None) -> tuple[DataFrame | None, int | None]:
    """silver.new_bronze_rows: rows of bronze files appended after version `consumed`."""
    uri = lake.bronze(spec.name, file_spec.name)
    files, version = lake.files_added_since(uri, int(consumed) if consumed is not None else None)
    if not files:
        return None, version
    return lake.read_files(uri, files), version


def _canonical_rows(raw: DataFrame, spec: RetailerSpec, file_spec: FileSpec, table: str) -> DataFrame:
    fmt = file_spec.format
    df = st.to_canonical(
        raw,
        spec.columns.get(file_spec.name, {}),
        file_spec.holds,
        decimal_comma=fmt.decimal_comma,
        date_formats=fmt.date_formats,
        checked=[table],
    )
    return st.prefix_ids(df, spec.retailer_id)


def quarantine_rows(lake: SparkLake, spec: RetailerSpec, table: str, bad: DataFrame, raw: DataFrame, now: datetime) -> dict[str, int]:
    """silver.quarantine_rows: rejected rows with raw values and every failed rule; counts per reason."""
    if bad.isEmpty():
        return {}
    raw_cols = [c for c in raw.columns if not c.startswith("_") and c not in ("data_provider_code", "secure_group_key")]
    raw_rows = raw.join(bad.select("_delivery_id", "_row_number", ERROR_COLUMN), ["_delivery_id", "_row_number"], "inner").select(
        F.lit(table).alias("canonical_table"),
        "_source_file",
        "_delivery_id",
        "_row_number",
        F.col(ERROR_COLUMN).alias("reason"),
        F.to_json(F.struct(*[st.col(c) for c in raw_cols]), {"ignoreNullFields": "false"}).alias("raw_values"),
        _ts(now).alias("rejected_at"),
    )
    lake.append(
        lake.quarantine(spec.name, REJECTED_ROWS_TABLE),
        raw_rows,
        description="Rows that failed a silver rule: which rule, which file and row, and the raw values.",
    )
    reasons = bad.select(F.explode(F.split(ERROR_COLUMN, "; ")).alias("r")).select(F.regexp_extract("r", _REASON, 1).alias("r"))
    # Polars' str.extract yields null (printed `None`) where Spark's regexp_extract yields "".
    return {(r["r"] or "None"): int(r["count"]) for r in reasons.groupBy("r").count().collect()}


def refresh_dimension(lake: SparkLake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    """silver.refresh_dimension."""
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
        df = _canonical_rows(raw, spec, file_spec, table_name).cache()
        if "date" in df.columns:
            observed = "date"
        elif "week_end_date" in df.columns:
            observed = "week_end_date"
        else:
            df = df.withColumn("_delivered_on", F.to_date("_ingested_at"))
            observed = "_delivered_on"
        bad = df.filter(F.col(ERROR_COLUMN).isNotNull()).select("_delivery_id", "_row_number", ERROR_COLUMN).cache()
        result.quarantined += bad.count()
        for reason, n in quarantine_rows(lake, spec, table_name, bad, raw, now).items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n
        good = df.filter(F.col(ERROR_COLUMN).isNull() & F.col(observed).isNotNull())
        observations.append(st.dim_observations(good, table, observed))
    if not observations:
        if result.bronze_versions and lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    obs = observations[0]
    for more in observations[1:]:
        obs = obs.unionByName(more, allowMissingColumns=True)
    obs = obs.cache()
    result.input_rows = obs.count()
    existing = lake.scan(uri, spark_schema(table.schema)).cache()
    enrichment = {"matched": 0, "missing": 0}

    def _enrich(frame: DataFrame) -> DataFrame:
        enriched, matched, missing = enrich_dimension(frame, lake, table_name)
        enrichment.update(matched=matched, missing=missing)
        return enriched

    upserts = st.scd2_versions(
        obs, existing, table, spec.scd2.get(table_name, []), spec.retailer_id, key_column, now, enrich=_enrich
    ).cache()
    result.enrichment_matched, result.enrichment_missing = enrichment["matched"], enrichment["missing"]
    if upserts.isEmpty():
        if lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
            return result
    known = existing.select(F.col(key_column).alias("_known"))
    flagged = upserts.join(known, upserts[key_column] == known["_known"], "left")
    counts = flagged.agg(
        F.sum(F.when(F.col("_known").isNull(), 1).otherwise(0)).alias("new"),
        F.sum(F.when(F.col("_known").isNotNull() & ~F.col("is_current"), 1).otherwise(0)).alias("closed"),
    ).collect()[0]
    result.new_versions, result.closed_versions = int(counts["new"] or 0), int(counts["closed"] or 0)
    stats = lake.merge(
        uri,
        upserts,
        keys=[key_column],
        bookmarks=result.bronze_versions,
        description=f"{spec.name}: {table.description}",
        column_descriptions={c.name: c.description for c in table.columns},
    )
    result.inserted = stats["num_target_rows_inserted"]
    result.updated = stats["num_target_rows_updated"]
    return result


def reference_frame(lake: SparkLake, name: str) -> DataFrame:
    """reference.reference_frame, with each row's position (for `unique(keep="first")`)."""
    uri = lake.uri("reference", name)
    schema = spark_schema(__import__("polars").Schema(REFERENCE_TABLES[name]["schema"]))
    if not lake.exists(uri):
        return lake.spark.createDataFrame([], schema).withColumn(FILE_PATH, F.lit("")).withColumn(FILE_ROW, F.lit(0).cast("long"))
    files = lake.spark.read.format("delta").load(uri).inputFiles()
    if not files:
        return lake.spark.createDataFrame([], schema).withColumn(FILE_PATH, F.lit("")).withColumn(FILE_ROW, F.lit(0).cast("long"))
    rows = lake.read_files(uri, sorted(files))
    return rows.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields], FILE_PATH, FILE_ROW)


def enrich_dimension(frame: DataFrame, lake: SparkLake, table_name: str) -> tuple[DataFrame, int, int]:
    """reference.enrich_dimension: `corp_*` from the corporate master on GTIN / GLN; (frame, matched, missing)."""
    name = "product_master" if table_name == "prod_dim" else "site_master"
    key = REFERENCE_TABLES[name]["key"]
    first = Window.partitionBy(key).orderBy(FILE_PATH, FILE_ROW)
    master = reference_frame(lake, name).withColumn("_rn", F.row_number().over(first)).filter("_rn = 1").drop("_rn", FILE_PATH, FILE_ROW)
    corp_cols = [c for c in master.columns if c != key]
    frame = frame.drop(*[c for c in corp_cols if c in frame.columns])
    enriched = frame.join(master, frame[key] == master[key], "left").drop(master[key]).cache()
    counts = enriched.agg(F.count(corp_cols[0]).alias("matched"), F.count(F.lit(1)).alias("n")).collect()[0]
    return enriched, int(counts["matched"]), int(counts["n"] - counts["matched"])


def _deduplicate_fact_batch(frame: DataFrame, keys: list[str], date_col: str, replaces: str) -> DataFrame:
    """silver._deduplicate_fact_batch: last row of a key in a file wins; newest delivery wins across files."""
    ok = F.col(ERROR_COLUMN).isNull()
    last_row = F.max(F.when(ok, F.col("_row_number"))).over(Window.partitionBy("_delivery_id", *keys))
    frame = frame.withColumn(
        ERROR_COLUMN,
        F.when(ok & (F.col("_row_number") != last_row), F.lit("duplicate: superseded by a later row with the same key in this file")).otherwise(
            F.col(ERROR_COLUMN)
        ),
    )
    deliveries = frame.select("_delivery_id", "_ingested_at", "_source_file").distinct()
    if deliveries.count() > 1:
        ranks = deliveries.withColumn("_delivery_rank", F.row_number().over(Window.orderBy("_ingested_at", "_source_file"))).select(
            "_delivery_id", "_delivery_rank"
        )
        frame = frame.join(ranks, "_delivery_id", "left")
        scope = [date_col, "site_id"] if replaces == "site_days" else keys
        newest = F.max(F.when(F.col(ERROR_COLUMN).isNull(), F.col("_delivery_rank"))).over(Window.partitionBy(*scope))
        frame = (
            frame.withColumn("_newest", newest)
            .filter(F.col(ERROR_COLUMN).isNotNull() | (F.col("_delivery_rank") == F.col("_newest")))
            .drop("_delivery_rank", "_newest")
        )
    return frame


def _restated_away(lake: SparkLake, uri: str, good: DataFrame, keys: list[str], date_col: str, carried: list[str], lo: date, hi: date) -> DataFrame | None:
    """silver._restated_away: stored rows of the delivered store-days that the new delivery no longer holds."""
    if not lake.exists(uri):
        return None
    pairs = good.select(date_col, "site_id").distinct()
    stored = (
        lake.scan(uri)
        .filter(F.col(date_col).between(lo, hi))
        .join(pairs, [date_col, "site_id"], "left_semi")
        .join(good.select(*keys), keys, "left_anti")
    )
    others = [m for m in canonical.MEASURES if m not in carried]
    filled_by_others = F.greatest(*[F.col(m).isNotNull() for m in others]) if len(others) > 1 else (
        F.col(others[0]).isNotNull() if others else F.lit(False)
    )
    return stored.select(*keys, F.when(filled_by_others, F.lit("clear")).otherwise(F.lit("delete")).alias("_action")).cache()


def refresh_facts(lake: SparkLake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    """silver.refresh_facts: one kind of file at a time; a delivery restates the store-days it holds."""
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
        df = _canonical_rows(raw, spec, file_spec, table_name)
        carried = [m for m in canonical.MEASURES if m in df.columns]
        if "currency" not in df.columns:
            df = df.withColumn("currency", F.lit(spec.currency))
        else:
            df = df.withColumn("currency", F.coalesce(F.col("currency"), F.lit(spec.currency)))
        # Keys are attached next; an unknown product or store is a row-level problem. Rows without
        # a date (already flagged) look up the first version, so the point-in-time join keeps them.
        df = df.withColumn("_lookup_date", F.coalesce(F.col(date_col), F.lit(START_OF_HISTORY)))
        for natural, dim_name in DIM_FOR_ID.items():
            dim = lake.scan(lake.silver(spec.name, dim_name), spark_schema(canonical.TABLES[dim_name].schema))
            df = st.point_in_time_keys(df, dim, natural, KEY_COLUMN[dim_name], "_lookup_date")
            unknown = F.col(KEY_COLUMN[dim_name]).isNull() & F.col(ERROR_COLUMN).isNull()
            df = df.withColumn(
                ERROR_COLUMN,
                F.when(unknown, F.concat(F.lit(f"{natural}: unknown "), F.col(natural), F.lit(f" (no {dim_name} version on this date)"))).otherwise(
                    F.col(ERROR_COLUMN)
                ),
            )
        df = df.drop("_lookup_date")
        wanted = [c.name for c in table.columns if c.name in df.columns]
        frame = df.select(*wanted, "_row_number", ERROR_COLUMN).cache()
        before_dedup = frame.count()
        result.input_rows += before_dedup
        result.bronze_rows += raw.count()
        frame = _deduplicate_fact_batch(frame, keys, date_col, file_spec.replaces).cache()
        result.superseded += before_dedup - frame.count()
        bad = frame.filter(F.col(ERROR_COLUMN).isNotNull())
        n_bad = bad.count()
        result.quarantined += n_bad
        if n_bad:
            for reason, n in quarantine_rows(lake, spec, table_name, bad.select("_delivery_id", "_row_number", ERROR_COLUMN), raw, now).items():
                result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n
        facts = frame.filter(F.col(ERROR_COLUMN).isNull()).drop("_row_number", ERROR_COLUMN)
        facts = facts.withColumn("_updated_at", _ts(now)).cache()
        span = facts.agg(F.min(date_col).alias("lo"), F.max(date_col).alias("hi"), F.count(F.lit(1)).alias("n")).collect()[0]
        result.loaded += span["n"]
        if span["n"] == 0:
            continue
        lo, hi = span["lo"], span["hi"]
        removals = _restated_away(lake, uri, facts, keys, date_col, carried, lo, hi) if file_spec.replaces == "site_days" else None
        result.min_date = lo if result.min_date is None else min(result.min_date, lo)
        result.max_date = hi if result.max_date is None else max(result.max_date, hi)
        not_carried = _measure_columns([m for m in canonical.MEASURES if m not in carried])
        clear_columns = [*_measure_columns(carried), "_updated_at", "_source_file", "_delivery_id", "_ingested_at"]
        source = st.conform(facts, table).withColumn("_action", F.lit("upsert"))
        n_removed = removals.count() if removals is not None else 0
        if n_removed:
            result.removed += n_removed
            last = facts.orderBy(F.col("_ingested_at").desc(), F.col("_source_file").desc()).select("_source_file", "_delivery_id", "_ingested_at").first()
            removal_rows = removals.withColumns(
                {
                    "_updated_at": _ts(now),
                    "_source_file": F.lit(last["_source_file"]),
                    "_delivery_id": F.lit(last["_delivery_id"]),
                    "_ingested_at": F.lit(last["_ingested_at"]).cast("timestamp"),
                }
            )
            source = source.unionByName(
                removal_rows.select(
                    *[(F.col(c.name) if c.name in removal_rows.columns else F.lit(None)).cast(spark_type(c.dtype)).alias(c.name) for c in table.columns],
                    "_action",
                )
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
        result.inserted += stats["num_target_rows_inserted"]
        result.updated += stats["num_target_rows_updated"]
        committed = dict(result.bronze_versions)
        frame.unpersist()
    if result.bronze_versions != committed and lake.exists(uri):
        lake.commit_bookmarks(uri, result.bronze_versions)
    return result


def refresh_silver(lake: SparkLake, spec: RetailerSpec, tables: list[str], now: datetime) -> dict[str, SilverResult]:
    """silver.refresh_silver: dimensions before facts, then derived measures and period facts."""
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


def _fx(lake: SparkLake) -> DataFrame:
    return reference_frame(lake, "fx_rates").drop(FILE_PATH, FILE_ROW)


def refresh_derived_measures(lake: SparkLake, spec: RetailerSpec, table_name: str, first: date, last: date, now: datetime) -> int:
    """silver.refresh_derived_measures: FX-converted and antitrust-masked columns for the touched dates."""
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    grain = GRAIN[table_name]
    reach = masking.history_window(grain)
    uri = lake.silver(spec.name, table_name)
    rows = lake.scan(uri, spark_schema(table.schema)).filter(F.col(date_col).between(first - reach, last + reach))
    rows = st.convert_to_usd(rows, _fx(lake), date_col)
    rows = mask_measures(rows, date_col, grain, list(masked_measures(spec.antitrust)))
    touched = rows.filter(F.col(date_col).between(first, last + reach)).cache()
    counts = touched.agg(F.count(F.lit(1)).alias("n"), F.sum(F.when(F.col("fx_rate_to_usd").isNull(), 1).otherwise(0)).alias("fx_missing")).collect()[0]
    if counts["n"] == 0:
        return 0
    keys = list(table.natural_keys)
    derived = [c for c in DERIVED_MEASURE_COLUMNS if c in touched.columns]
    update = st.conform(touched, table).select(*keys, *derived).withColumn("_updated_at", _ts(now))
    lake.merge(
        uri,
        update,
        keys=keys,
        restrict=f"t.{date_col} >= '{first}' AND t.{date_col} <= '{last + reach}'",
        update_columns=[*derived, "_updated_at"],
        bookmarks=lake.bookmarks(uri),
    )
    touched.unpersist()
    return int(counts["fx_missing"] or 0)


def refresh_period_facts(lake: SparkLake, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
    """silver.refresh_period_facts: weekly/monthly facts from the daily ones, for the periods that changed."""
    grain = GRAIN[table_name]
    table = canonical.TABLES[table_name]
    end_col = table.natural_keys[0]
    uri = lake.silver(spec.name, table_name)
    day_uri = lake.silver(spec.name, "store_day_fact")
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    watermark = marks.get("day_updated_at")
    daily = lake.scan(day_uri, spark_schema(canonical.STORE_DAY_FACT.schema))
    changed = daily if watermark is None else daily.filter(F.col("_updated_at") > F.lit(datetime.fromisoformat(watermark)).cast("timestamp"))
    span = changed.agg(F.min("date").alias("lo"), F.max("date").alias("hi"), F.max("_updated_at").alias("mark")).collect()[0]
    lo, hi, mark = span["lo"], span["hi"], span["mark"]
    if lo is None:
        return result
    ends = lake.spark.range(1).select(
        st.period_end(F.lit(lo), grain, spec.week_ends_on).alias("first_end"),
        st.period_end(F.lit(hi), grain, spec.week_ends_on).alias("last_end"),
    ).collect()[0]
    first_end, last_end = ends["first_end"], ends["last_end"]
    first_day = first_end - (timedelta(days=6) if grain == "week" else timedelta(days=first_end.day - 1))
    days = daily.filter(F.col("date").between(first_day, last_end)).cache()
    aggregated = st.aggregate_period(days, grain, spec.week_ends_on)
    reach = history_window(grain)
    history = lake.scan(uri, spark_schema(table.schema)).filter(
        F.col(end_col).between(first_end - reach, last_end + reach) & ~F.col(end_col).between(first_end, last_end)
    )
    combined = st.conform(aggregated, table).unionByName(history)
    combined = mask_measures(combined, end_col, grain, list(masked_measures(spec.antitrust)))
    out = st.conform(combined.filter(F.col(end_col).between(first_end, last_end + reach)).withColumn("_updated_at", _ts(now)), table)
    result.input_rows = days.count()
    result.min_date, result.max_date = first_end, last_end
    # `mark` is what Polars' `datetime.isoformat()` of the newest daily `_updated_at` gives (UTC).
    mark_text = mark.replace(tzinfo=__import__("datetime").timezone.utc).isoformat() if mark.tzinfo is None else mark.isoformat()
    stats = lake.merge(
        uri,
        out,
        keys=list(table.natural_keys),
        restrict=f"t.{end_col} >= '{first_end}' AND t.{end_col} <= '{last_end + reach}'",
        delete_unmatched=f"t.{end_col} >= '{first_end}' AND t.{end_col} <= '{last_end}'",
        bookmarks={**marks, "day_updated_at": mark_text},
        description=f"{spec.name}: {table.description} Derived from store_day_fact.",
        column_descriptions={c.name: c.description for c in table.columns},
    )
    days.unpersist()
    result.inserted = stats["num_target_rows_inserted"]
    result.updated = stats["num_target_rows_updated"]
    return result
