"""Silver: bronze rows not yet consumed -> canonical, typed, deduplicated, keyed rows, MERGEd into Delta.

Incremental by construction: each silver table remembers (in its own Delta commits) the
bronze version it has consumed, and reads only the bronze files added since.

Written once for both engines: the frames are narwhals LazyFrames over Polars (in the Dagster
process, `storage.lake.Lake`) or PySpark (the Spark job, `spark.lake.SparkLake`); the few
engine functions narwhals lacks come from `engines.edges`.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.layers.reference import enrich_dimension, reference_frame
from pos_lakehouse.retailer import FileSpec, RetailerSpec
from pos_lakehouse.settings import silver_batch_rows
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform import canonical, masking
from pos_lakehouse.transform.chunks import ranges_within
from pos_lakehouse.transform.mapping import ERROR_COLUMN, ORDER_COLUMNS, conform, prefix_ids, resolve_columns, to_canonical
from pos_lakehouse.transform.masking import mask_measures
from pos_lakehouse.transform.measures import (
    aggregate_period,
    convert_to_usd,
    history_window,
    masked_measures,
    period_end,
    period_end_of,
    period_start_of,
    with_period_coverage,
)
from pos_lakehouse.transform.row_rules import align_week_dates, fact_row_rules
from pos_lakehouse.transform.scd2 import (
    START_OF_HISTORY,
    dim_observations,
    keep_last,
    observation_columns,
    observed_from_file_names,
    point_in_time_keys,
    scd2_versions,
)

REJECTED_ROWS_TABLE = "rejected_rows"
KEY_COLUMN = {"prod_dim": "prod_key", "site_dim": "site_key"}
DIM_FOR_ID = {"prod_id": "prod_dim", "site_id": "site_dim"}
_REASON = re.compile(r"^([^:]+: [a-z ]+?)(?: \S+ as .*)?$")


def fact_partitions(table_name: str) -> list[str]:
    """Silver fact tables are partitioned by their date (day, week end or month end).

    A delivery restates a few dates; its MERGE (restricted to those dates) then reads and rewrites
    only those dates' files, whatever history the table holds. Applies to tables created from
    now on; a table created unpartitioned stays so (its MERGEs still prune files by date stats).
    """
    return [canonical.TABLES[table_name].natural_keys[0]]


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

    @property
    def unaccounted(self) -> int:
        return self.bronze_rows - self.loaded - self.quarantined - self.superseded


class _BatchWrites:
    """Writes of finished fact batches, run behind the next batch's parsing (Polars only).

    A batch's write (its days' Parquet files and one Delta commit; mostly outside the GIL)
    overlaps the next batch's parse, keys and duplicate checks. Anything that reads the stored
    table waits for the pending write first (`wait`), so a batch always sees the ones before it,
    as if they had run one after another. At most one write is pending, which bounds the extra
    memory to one batch. The Spark engine parallelizes inside each job: it writes inline.
    """

    def __init__(self, background: bool):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pos_lakehouse_silver_write") if background else None
        self._pending: Future | None = None

    def submit(self, write) -> None:
        self.wait()
        if self._pool is None:
            write()
        else:
            self._pending = self._pool.submit(write)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the pending write (its error, if any, is raised here) and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def _bookmark(file_spec: FileSpec) -> str:
    return f"bronze.{file_spec.name}"


def _count(frame: nw.LazyFrame) -> int:
    return int(frame.select(nw.len()).collect(backend="polars").item())


def _ok() -> nw.Expr:
    return nw.col(ERROR_COLUMN).is_null()


def new_bronze_rows(lake: LakeIO, spec: RetailerSpec, file_spec: FileSpec, consumed: str | None) -> tuple[nw.LazyFrame | None, int | None]:
    """Rows of bronze files appended after version `consumed`, and the bronze version they reach."""
    return lake.read_added(lake.bronze(spec.name, file_spec.name), int(consumed) if consumed is not None else None)


def new_bronze_batches(lake: LakeIO, spec: RetailerSpec, table_name: str, marks: dict[str, str], result: SilverResult):
    """(file spec, new bronze rows) per kind of file holding `table_name`; records the bronze versions reached."""
    for file_spec in spec.files_holding(table_name):
        raw, version = new_bronze_rows(lake, spec, file_spec, marks.get(_bookmark(file_spec)))
        if version is not None:
            result.bronze_versions[_bookmark(file_spec)] = str(version)
        if raw is not None:
            yield file_spec, raw


def _canonical_rows(raw: nw.LazyFrame, spec: RetailerSpec, file_spec: FileSpec, table: str) -> nw.LazyFrame:
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


def quarantine_rows(lake: LakeIO, spec: RetailerSpec, table: str, bad: nw.LazyFrame, raw: nw.LazyFrame, now: datetime) -> dict[str, int]:
    """Keep rejected rows with their raw values and every failed rule; return counts per reason."""
    raw_cols = [c for c in raw.collect_schema().names() if not c.startswith("_") and c not in ("data_provider_code", "secure_group_key")]
    joined = raw.join(bad.select("_delivery_id", "_row_number", ERROR_COLUMN), on=["_delivery_id", "_row_number"], how="inner")
    joined = edges(joined).with_json(joined, raw_cols, "raw_values")
    lake.append(
        lake.quarantine(spec.name, REJECTED_ROWS_TABLE),
        joined.select(
            nw.lit(table).alias("canonical_table"),
            "_source_file",
            "_delivery_id",
            "_row_number",
            nw.col(ERROR_COLUMN).alias("reason"),
            "raw_values",
            nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("rejected_at"),
        ),
        description="Rows that failed a silver rule: which rule, which file and row, and the raw values.",
    )
    # Reasons without the offending value: one count per rule, whatever the bad values were.
    counts: dict[str, int] = {}
    per_error = bad.group_by(ERROR_COLUMN).agg(nw.len().alias("n")).collect(backend="polars")
    for errors, n in per_error.iter_rows():
        for error in str(errors).split("; "):
            m = _REASON.match(error)
            reason = m.group(1) if m else "None"
            counts[reason] = counts.get(reason, 0) + int(n)
    return counts


def _quarantine_failed(lake: LakeIO, spec: RetailerSpec, table_name: str, rows, raw, now: datetime, result: SilverResult) -> None:
    """Quarantine the rows that broke a rule and count them, per reason, in `result`."""
    bad = rows.filter(~_ok()).select("_delivery_id", "_row_number", ERROR_COLUMN)
    n_bad = _count(bad)
    result.quarantined += n_bad
    if n_bad:
        for reason, n in quarantine_rows(lake, spec, table_name, bad, raw, now).items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n


def _dimension_rows(
    raw: nw.LazyFrame, spec: RetailerSpec, file_spec: FileSpec, table_name: str, dates: dict[str, date | None] | None = None
) -> tuple[nw.LazyFrame, str, dict[str, date | None] | None]:
    """A dimension's canonical rows, the column each row is observed on, and (snapshots named by
    their day) the observation date of each file (`dates`, read from `raw` when not given)."""
    lf = _canonical_rows(raw, spec, file_spec, table_name)
    names = lf.collect_schema().names()
    if "date" in names:
        return lf, "date", dates
    if "week_end_date" in names:
        return lf, "week_end_date", dates
    if file_spec.observed_on is not None:
        # Undated snapshots named by their day: each file is observed on the date in its name.
        if dates is None:
            files = raw.select("_source_file").unique().collect(backend="polars")["_source_file"].to_list()
            dates = {f: file_spec.observed_on.date_of(f) for f in files}
        return observed_from_file_names(lf, dates, "_observed_from_name"), "_observed_from_name", dates
    return lf.with_columns(nw.col("_ingested_at").cast(nw.Date).alias("_delivered_on")), "_delivered_on", dates


def _batch_order(files, batches: list[list[str] | None]):
    """The order rows of `batches` (of `_delivery_batches`; `files` as `_delivery_files`) are read
    in: batch, data file, row.

    Returns the order's columns, the function adding those bronze rows lack, and the data files
    in the order they are read. When a data file holds deliveries of several batches, there is no
    such file order (None): the order starts with `_batch`, the batch of each row's delivery.
    """
    batch_of = {d: i for i, deliveries in enumerate(batches) for d in deliveries or []}
    spans: dict[str, set[int]] = {}
    # Inside a batch, files are read in their deliveries' order (ingested, then file name), as
    # facts rank deliveries: data file names are random, so ordering by name would let either of
    # two deliveries observing the same entity on the same day win.
    delivered: dict[str, tuple] = {}
    for delivery, ingested, source, path in files.select("_delivery_id", "_ingested_at", "_source_file", ORDER_COLUMNS[0]).iter_rows():
        spans.setdefault(path, set()).add(batch_of.get(delivery, 0))
        delivered[path] = max(delivered.get(path, (ingested, source)), (ingested, source))
    if all(len(b) == 1 for b in spans.values()) and None not in spans:
        return ORDER_COLUMNS, lambda frame: frame, sorted(spans, key=lambda path: (min(spans[path]), *delivered[path], path))
    batch = nw.lit(len(batches) - 1, nw.Int64)
    for i in reversed(range(len(batches) - 1)):
        batch = nw.when(nw.col("_delivery_id").is_in(batches[i])).then(nw.lit(i, nw.Int64)).otherwise(batch)
    return ("_batch", *ORDER_COLUMNS), lambda frame: frame.with_columns(batch.alias("_batch")), None


def _raw_sources(raw: nw.LazyFrame, spec: RetailerSpec, file_spec: FileSpec, columns: list[str]) -> list[str] | None:
    """The bronze columns that `columns` of `_dimension_rows` are computed from, each from its own
    source alone (None when one is not found)."""
    names = [c for c in raw.collect_schema().names() if c not in ORDER_COLUMNS]
    renames, _ = resolve_columns(names, spec.columns.get(file_spec.name, {}), file_spec.holds)
    source = {target: name for name, target in renames.items()} | {"_observed_from_name": "_source_file", "_delivered_on": "_ingested_at"}
    return [source[c] for c in columns] if all(c in source for c in columns) else None


def refresh_dimension(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime, shared: dict | None = None) -> SilverResult:
    """Observe the dimension's entities in the new bronze rows and upsert their versions.

    `shared` (one dict for the dimensions of one refresh) keeps what several dimensions read from
    the same new bronze rows (the rows per delivery and data file), so it is computed once.
    """
    table = canonical.TABLES[table_name]
    uri = lake.silver(spec.name, table_name)
    key_column = KEY_COLUMN[table_name]
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    observations = []
    budget = silver_batch_rows()
    natural = table.natural_keys[0]
    ids = ["_delivery_id", "_row_number"]
    for file_spec, all_raw in new_bronze_batches(lake, spec, table_name, marks, result):
        engine = edges(all_raw)
        _, observed, dates = _dimension_rows(all_raw, spec, file_spec, table_name)
        bookmark = _bookmark(file_spec)
        reused = (bookmark, marks.get(bookmark), result.bronze_versions.get(bookmark))
        files = shared.get(reused) if shared is not None else None
        if files is None:
            files = _delivery_files(all_raw)
            if shared is not None:
                shared[reused] = files
        batches = list(_delivery_batches(files, budget))
        # Bad rows are counted in one streaming pass, and (if any) quarantined in batches of whole
        # deliveries (oldest first), so a large delivery is never parsed whole.
        checked = _dimension_rows(all_raw, spec, file_spec, table_name, dates)[0].filter(~_ok()).select(nw.len().alias("n"))
        any_bad = bool(engine.persist(checked).collect(backend="polars").item())
        bad = []
        for deliveries in batches if any_bad else []:
            raw = all_raw if deliveries is None else all_raw.filter(nw.col("_delivery_id").is_in(deliveries))
            lf = engine.reuse(_dimension_rows(raw, spec, file_spec, table_name, dates)[0])
            quarantined = result.quarantined
            _quarantine_failed(lake, spec, table_name, lf, raw, now, result)
            if result.quarantined > quarantined:
                bad.append(engine.persist(lf.filter(~_ok()).select(*ids)))
        # The observation of an entity and day is its last good row: of the latest batch (as if
        # the batches had arrived one after another), then the last read.
        order, batched, file_order = _batch_order(files, batches)
        good_raw = all_raw.join(nw.concat(bad, how="vertical"), on=ids, how="anti") if bad else all_raw
        texts = _raw_sources(all_raw, spec, file_spec, [natural, observed])
        if texts is not None:
            # All rows of one (key text, date text) pair parse to the same entity and day, so
            # the last row of an entity-day is the last of its pairs' last rows: the pairs are
            # narrowed on the raw text (a grouped maximum over a few columns), and only their
            # last rows are parsed in full.
            last = keep_last(batched(good_raw), texts, order, file_order)
            good_raw = last.drop("_batch") if "_batch" in order else last
        lf = _dimension_rows(good_raw, spec, file_spec, table_name, dates)[0]
        lf = batched(lf.filter(_ok() & ~nw.col(observed).is_null()))
        if texts is not None:  # a few rows, read three times
            lf = engine.persist(lf.select(*observation_columns(lf.collect_schema().names(), table, observed, order)))
        seen = dim_observations(lf, table, observed, order, file_order)
        observations.append(engine.persist(seen))
    if not observations:
        if result.bronze_versions and lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    obs = nw.concat(observations, how="diagonal") if len(observations) > 1 else observations[0]
    engine = edges(obs)
    obs = engine.persist(obs)
    result.input_rows = _count(obs)
    existing = engine.persist(lake.read(uri, table.schema).select([c.name for c in table.columns]))
    corp_column = next(c.name for c in table.derived_columns if c.name.startswith("corp_"))

    def _enrich(frame: nw.LazyFrame) -> nw.LazyFrame:
        enriched = engine.persist(enrich_dimension(frame, lake, table_name))
        total, matched = enriched.select(nw.len(), nw.col(corp_column).count()).collect(backend="polars").row(0)
        result.enrichment_matched, result.enrichment_missing = int(matched), int(total - matched)
        return enriched

    upserts = engine.persist(
        scd2_versions(obs, existing, table, spec.scd2.get(table_name, []), spec.retailer_id, key_column, now, enrich=_enrich)
    )
    if engine.is_empty(upserts) and lake.exists(uri):
        lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    known = existing.select(key_column)
    result.new_versions = _count(upserts.join(known, on=key_column, how="anti"))
    result.closed_versions = _count(upserts.join(known, on=key_column, how="semi").filter(~nw.col("is_current")))
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


def reenrich_current_versions(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime) -> int:
    """Current dimension versions whose corporate master attributes changed since they were written.

    A corrected or late product/site master reaches the rows it matches on the retailer's next
    silver refresh: their `corp_*` columns are rewritten in place (the retailer's own history is
    unchanged). Returns the number of versions updated.
    """
    table = canonical.TABLES[table_name]
    uri = lake.silver(spec.name, table_name)
    if not lake.exists(uri):
        return 0
    key_column = KEY_COLUMN[table_name]
    corp = [c.name for c in table.derived_columns if c.name.startswith("corp_")]

    def signature(frame: nw.LazyFrame) -> nw.LazyFrame:
        return frame.with_columns(nw.concat_str([nw.col(c).fill_null("\u2205") for c in corp], separator="\u241f").alias("_corp_sig"))

    current = lake.read(uri, table.schema).filter(nw.col("is_current")).select([c.name for c in table.columns])
    stored = signature(current).select(key_column, "_corp_sig")
    changed = signature(enrich_dimension(current, lake, table_name)).join(stored, on=[key_column, "_corp_sig"], how="anti")
    engine = edges(changed)
    changed = engine.persist(
        changed.select(key_column, *corp).with_columns(nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("_updated_at"))
    )
    n = _count(changed)
    if n:
        lake.merge(uri, changed, keys=[key_column], update_columns=[*corp, "_updated_at"], bookmarks=lake.bookmarks(uri))
    engine.release(changed)
    return n


def _measure_columns(measures) -> list[str]:
    """Measures and the columns derived from them (USD twins, antitrust-masked twins)."""
    cols = []
    for m in measures:
        cols.append(m)
        twins = [m.replace("_lc", "_usd")] if m in canonical.VALUE_MEASURES else []
        cols += twins + [f"at_masked_{c}" for c in (m, *twins)]
    return cols


def deduplicate_fact_batch(frame: nw.LazyFrame, keys: list[str], date_col: str, replaces: str) -> nw.LazyFrame:
    """Flag duplicate keys inside one file, and keep the newest delivery where deliveries overlap.

    Inside a file the last row of a key is loaded and earlier copies are quarantined (the file
    contradicts itself; its last word counts, the others stay visible with a reason). Across
    deliveries in one batch the newest one wins per store-day (or per row with `replaces: rows`),
    exactly as if they had been processed one after another.
    `frame` is read several times: pass a persisted one.
    """
    # Most batches repeat no key and no store-day across deliveries: two grouped counts show it
    # and spare the windows over every row below.
    repeated = frame.group_by(*keys).agg(nw.len().alias("_n")).filter(nw.col("_n") > 1)
    if _count(repeated) == 0 and (replaces != "site_days" or not _site_days_overlap(frame, date_col)):
        return frame
    frame = frame.with_columns(nw.when(_ok()).then(nw.col("_row_number")).alias("_ok_row"))
    frame = frame.with_columns(nw.col("_ok_row").max().over("_delivery_id", *keys).alias("_last_row"))
    frame = frame.with_columns(
        nw.when(_ok() & (nw.col("_row_number") != nw.col("_last_row")))
        .then(nw.lit("duplicate: superseded by a later row with the same key in this file"))
        .otherwise(nw.col(ERROR_COLUMN))
        .alias(ERROR_COLUMN)
    ).drop("_ok_row", "_last_row")
    deliveries = frame.select("_delivery_id", "_ingested_at", "_source_file").unique()
    if _count(deliveries) > 1:
        ranks = deliveries.with_row_index("_delivery_rank", order_by=["_ingested_at", "_source_file"]).select(
            "_delivery_id", "_delivery_rank"
        )
        scope = [date_col, "site_id"] if replaces == "site_days" else keys
        frame = (
            frame.join(ranks, on="_delivery_id", how="left")
            .with_columns(nw.when(_ok()).then(nw.col("_delivery_rank")).alias("_ok_rank"))
            .with_columns(nw.col("_ok_rank").max().over(*scope).alias("_newest"))
            .filter(~_ok() | (nw.col("_delivery_rank") == nw.col("_newest")))
            .drop("_delivery_rank", "_ok_rank", "_newest")
        )
    return frame


def _site_days_overlap(frame: nw.LazyFrame, date_col: str) -> bool:
    """Whether two deliveries of the batch hold the same store-day."""
    per_site_day = frame.group_by(date_col, "site_id").agg(nw.col("_delivery_id").n_unique().alias("_deliveries"))
    return _count(per_site_day.filter(nw.col("_deliveries") > 1)) > 0


def restated_away(
    lake: LakeIO, uri: str, good: nw.LazyFrame, keys: list[str], date_col: str, carried: list[str], lo: date, hi: date
) -> nw.LazyFrame | None:
    """Stored rows of the delivered store-days that the new delivery no longer contains.

    Such a row is deleted, unless another kind of file also fills it (sales and inventory
    apart): then only the measures this kind carries are cleared.
    """
    if not lake.exists(uri):
        return None
    pairs = good.select(date_col, "site_id").unique()
    stored = (
        lake.read(uri)
        .filter(nw.col(date_col).is_between(lo, hi))
        .join(pairs, on=[date_col, "site_id"], how="semi")
        .join(good.select(keys), on=keys, how="anti")
    )
    others = [m for m in canonical.MEASURES if m not in carried]
    filled_by_others = nw.any_horizontal(*[~nw.col(m).is_null() for m in others], ignore_nulls=True) if others else nw.lit(False)
    removals = stored.select(*keys, nw.when(filled_by_others).then(nw.lit("clear")).otherwise(nw.lit("delete")).alias("_action"))
    return edges(removals).persist(removals)


def refresh_facts(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime, batch_rows: int | None = None) -> SilverResult:
    """MERGE new bronze fact rows into silver, one kind of file at a time, in batches.

    A kind of file sets only the measures it carries (sales and inventory may arrive apart and
    fill the same rows), and a delivery restates the store-days it contains: rows of those
    store-days that it no longer holds are removed (see `FileSpec.replaces`).

    New rows are loaded in batches of at most `batch_rows` bronze rows (whole deliveries, oldest
    first; a bigger delivery is split by date), exactly as if the batches had arrived one after
    another, so memory follows the batch size and not the delivery's. Each batch is written once,
    with its FX-converted and antitrust-masked twins already computed (`_load_fact_batch`).
    """
    uri = lake.silver(spec.name, table_name)
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    committed = dict(marks)
    budget = batch_rows or silver_batch_rows()
    writes = _BatchWrites(background=lake.engine == "polars")
    try:
        for file_spec, raw in new_bronze_batches(lake, spec, table_name, marks, result):
            for deliveries, dates, with_undated, rows in _fact_batches(raw, spec, file_spec, table_name, budget):
                _load_fact_batch(lake, spec, file_spec, table_name, raw, deliveries, dates, with_undated, rows, now, result, marks, writes)
    finally:
        writes.close()
    # The consumed bronze versions advance once every batch (and its derived twins) is in.
    if result.bronze_versions != committed and lake.exists(uri):
        lake.commit_bookmarks(uri, result.bronze_versions)
    return result


def _fact_batches(raw: nw.LazyFrame, spec: RetailerSpec, file_spec: FileSpec, table_name: str, budget: int):
    """(delivery ids, dates or None, whether undated rows go with this batch, its bronze rows or None)
    per batch of at most `budget` rows (the bronze rows are known for batches of whole deliveries).

    Whole deliveries, oldest first (a later batch overrides an earlier one as a later run would);
    a delivery bigger than `budget` alone is split by its (parsed) dates, each date whole, so
    duplicates and restated store-days stay inside one batch.
    """
    date_col = canonical.TABLES[table_name].natural_keys[0]
    unit = ["_delivery_id", "_ingested_at", "_source_file"]
    sizes = raw.group_by(*unit).agg(nw.len().alias("_n")).sort("_ingested_at", "_source_file").collect(backend="polars")
    total = int(sizes["_n"].sum())
    if total <= budget:
        yield None, None, True, total
        return
    batch: list[str] = []
    size = 0
    for delivery, _, _, n in sizes.iter_rows():
        if batch and size + n > budget:
            yield batch, None, True, size
            batch, size = [], 0
        if n <= budget:
            batch.append(delivery)
            size += n
            continue
        one = raw.filter(nw.col("_delivery_id") == delivery)
        days = (
            _canonical_rows(one, spec, file_spec, table_name)
            .group_by(date_col)
            .agg(nw.len().alias("_n"))
            .sort(date_col, nulls_last=True)
            .collect(backend="polars")
        )
        part: list = []
        part_size, undated_done = 0, False
        for day, m in days.iter_rows():
            if day is None:  # unparseable dates (quarantined) ride with the delivery's first part
                continue
            if part and part_size + m > budget:
                yield [delivery], part, not undated_done, None
                undated_done, part, part_size = True, [], 0
            part.append(day)
            part_size += m
        yield [delivery], part, not undated_done, None
    if batch:
        yield batch, None, True, size


def _delivery_files(raw: nw.LazyFrame):
    """Rows per delivery and bronze data file (a Polars frame)."""
    unit = ["_delivery_id", "_ingested_at", "_source_file", ORDER_COLUMNS[0]]
    return raw.group_by(*unit).agg(nw.len().alias("_n")).collect(backend="polars")


def _delivery_batches(files, budget: int):
    """Lists of delivery ids of at most `budget` rows together, oldest first (a bigger delivery
    alone); one `None` (all rows at once) when everything fits. `files` as `_delivery_files`."""
    sizes = files.group_by("_delivery_id", "_ingested_at", "_source_file").agg(nw.col("_n").sum()).sort("_ingested_at", "_source_file")
    if int(sizes["_n"].sum()) <= budget:
        yield None
        return
    batch: list[str] = []
    size = 0
    for delivery, _, _, n in sizes.iter_rows():
        if batch and size + n > budget:
            yield batch
            batch, size = [], 0
        batch.append(delivery)
        size += n
    if batch:
        yield batch


def _block_start(day: date, blocks_back: int = 0) -> date:
    """First day of the antitrust block (two calendar months) holding `day`, `blocks_back` blocks earlier (negative: later)."""
    index = day.year * 12 + ((day.month - 1) // masking.BLOCK_MONTHS) * masking.BLOCK_MONTHS - blocks_back * masking.BLOCK_MONTHS
    return date(index // 12, index % 12 + 1, 1)


def _load_fact_batch(
    lake: LakeIO,
    spec: RetailerSpec,
    file_spec: FileSpec,
    table_name: str,
    raw: nw.LazyFrame,
    deliveries: list[str] | None,
    dates: list | None,
    with_undated: bool,
    bronze_rows: int | None,
    now: datetime,
    result: SilverResult,
    marks: dict[str, str],
    writes: _BatchWrites,
) -> None:
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    keys = list(table.natural_keys)
    uri = lake.silver(spec.name, table_name)
    if deliveries is not None:
        raw = raw.filter(nw.col("_delivery_id").is_in(deliveries))
    engine = edges(raw)
    lf = _canonical_rows(raw, spec, file_spec, table_name)
    if dates is not None:
        in_part = nw.col(date_col).is_in(dates)
        lf = lf.filter(in_part | nw.col(date_col).is_null()) if with_undated else lf.filter(in_part)
    names = lf.collect_schema().names()
    carried = [m for m in canonical.MEASURES if m in names]
    currency = nw.col("currency").fill_null(spec.currency) if "currency" in names else nw.lit(spec.currency)
    # Keys are attached next; an unknown product or store is a row-level problem. Rows without
    # a date (already flagged) look up the first version, so the point-in-time join keeps them
    # (it would drop them otherwise) in the same single pass over the data.
    # Row rules: a weekly file's dates become week ends by its explicit rule; a row dated in
    # the future, with a bad currency or a measure out of range is quarantined, never blocking.
    if date_col == "week_end_date":
        lf = align_week_dates(lf, date_col, spec.week_ends_on, file_spec.week_date, file_spec.misaligned_weeks)
    lf = fact_row_rules(lf.with_columns(currency.alias("currency")), date_col, now.date(), carried)
    lf = lf.with_columns(nw.col(date_col).fill_null(START_OF_HISTORY).alias("_lookup_date"))
    for natural, dim_name in DIM_FOR_ID.items():
        dim = lake.read(lake.silver(spec.name, dim_name), canonical.TABLES[dim_name].schema)
        lf = point_in_time_keys(lf, dim, natural, KEY_COLUMN[dim_name], "_lookup_date")
        unknown = nw.col(KEY_COLUMN[dim_name]).is_null() & _ok()
        lf = lf.with_columns(
            nw.when(unknown)
            .then(nw.concat_str([nw.lit(f"{natural}: unknown "), nw.col(natural), nw.lit(f" (no {dim_name} version on this date)")]))
            .otherwise(nw.col(ERROR_COLUMN))
            .alias(ERROR_COLUMN)
        )
    # Only the columns silver stores (plus the row's identity) are materialized.
    have = set(lf.collect_schema().names())
    wanted = [c.name for c in table.columns if c.name in have]
    frame = engine.persist(lf.select(*wanted, "_row_number", ERROR_COLUMN))
    before_dedup = _count(frame)
    result.input_rows += before_dedup
    # A delivery split by date: its bronze rows are this part's rows (one per canonical row).
    result.bronze_rows += before_dedup if bronze_rows is None else bronze_rows
    deduplicated = deduplicate_fact_batch(frame, keys, date_col, file_spec.replaces)
    if deduplicated is not frame:
        deduplicated = engine.persist(deduplicated)
        engine.release(frame)
    frame, deduplicated = deduplicated, None
    result.superseded += before_dedup - _count(frame)
    _quarantine_failed(lake, spec, table_name, frame, raw, now, result)
    facts = (
        frame.filter(_ok()).drop("_row_number", ERROR_COLUMN).with_columns(nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("_updated_at"))
    )
    if "is_complete" in {c.name for c in table.columns}:
        # Delivered weeks are whole weeks (a week not yet ended is quarantined as future-dated).
        facts = facts.with_columns(nw.lit(True).alias("is_complete"), nw.lit(7, nw.Int64).alias("days_covered"))
    n, lo, hi = (
        facts.select(nw.len(), nw.col(date_col).min().alias("lo"), nw.col(date_col).max().alias("hi")).collect(backend="polars").row(0)
    )
    result.loaded += n
    if n == 0:
        engine.release(frame)
        return
    result.min_date = lo if result.min_date is None else min(result.min_date, lo)
    result.max_date = hi if result.max_date is None else max(result.max_date, hi)
    grain = GRAIN[table_name]
    masked = list(masked_measures(spec.antitrust))
    fx = reference_frame(lake, "fx_rates")
    # Masks read the previous block's records, and a change reaches the next block's.
    history_from = _block_start(lo, 1) if grain == "day" else lo
    reach_to = _block_start(hi, -2) - timedelta(days=1) if grain == "day" else hi
    # From here on the stored table is read: the previous batch's append must be in it.
    writes.wait()
    stored = lake.read(uri, table.schema) if lake.exists(uri) else None
    nearby = 0
    if stored is not None:
        # A list (not a join) so the reader can skip data files by their site_id bounds; one row is enough.
        sites = facts.select("site_id").unique().collect(backend="polars")["site_id"].to_list()
        near = stored.filter(nw.col(date_col).is_between(history_from, reach_to) & nw.col("site_id").is_in(sites))
        nearby = _count(near.head(1))
    if nearby == 0:
        # Nothing stored for these stores near these dates: no row to update, restate or re-mask.
        # The rows in hand are all the masks read; they are written with their twins by an append.
        source = conform(facts, table)
        # Measures this kind of file does not carry are null in every row here, and so are their
        # twins (conform adds them): masks are computed for the carried ones only.
        in_hand = [m for m in masked if m.replace("_usd", "_lc") in carried]
        source = mask_measures(convert_to_usd(source, fx, date_col), date_col, grain, in_hand)
        source = engine.persist(conform(source, table))
        result.fx_missing += _count(source.filter(nw.col("fx_rate_to_usd").is_null()))
        # The batch's rows are all in `source` now: free them before the write (a copy less at the peak).
        engine.release(frame)
        del frame, facts
        description = f"{spec.name}: {table.description}"
        descriptions = {c.name: c.description for c in table.columns}
        day, creates = fact_partitions(table_name)[0], stored is None

        def write(source=source) -> None:
            # A file per day written by the engine itself where it can (Polars, a table laid out by
            # date), else a Delta append (or the table's creation with its first rows).
            if not lake.append_by_partition(uri, day, source, bookmarks=marks, description=description, column_descriptions=descriptions):
                if creates:
                    action = source.with_columns(nw.lit("upsert").alias("_action"))
                    lake.merge(
                        uri,
                        action,
                        keys=keys,
                        action_column="_action",
                        bookmarks=marks,
                        partition_by=[day],
                        description=description,
                        column_descriptions=descriptions,
                    )
                else:
                    lake.append(uri, source, bookmarks=marks, partition_by=[day], description=description)
            engine.release(source)

        writes.submit(write)
        result.inserted += n
        return
    _merge_fact_batch(lake, spec, file_spec, table, uri, facts, carried, lo, hi, history_from, now, result, marks)
    engine.release(frame)


def _merge_fact_batch(
    lake: LakeIO,
    spec: RetailerSpec,
    file_spec: FileSpec,
    table: canonical.CanonicalTable,
    uri: str,
    facts: nw.LazyFrame,
    carried: list[str],
    lo: date,
    hi: date,
    history_from: date,
    now: datetime,
    result: SilverResult,
    marks: dict[str, str],
) -> None:
    """One MERGE of a batch into stored rows, FX and masked twins computed from the rows after it.

    The twins of the rows written are computed on the table as it will be after this MERGE (stored
    rows of the masks' history, the batch's rows with the measures it does not carry taken from
    the stored row, restated rows cleared), so no second pass rewrites them. Stored rows of the
    following block whose masks read a changed block are re-masked afterwards (none when a
    delivery extends the history forward).
    """
    table_name = table.name
    date_col = table.natural_keys[0]
    keys = list(table.natural_keys)
    grain = GRAIN[table_name]
    engine = edges(facts)
    removals = restated_away(lake, uri, facts, keys, date_col, carried, lo, hi) if file_spec.replaces == "site_days" else None
    n_removed = _count(removals) if removals is not None else 0
    not_carried_measures = [m for m in canonical.MEASURES if m not in carried]
    stored = lake.read(uri, table.schema).filter(nw.col(date_col).is_between(history_from, hi))
    view_cols = [*keys, "currency", *canonical.MEASURES]
    upserts = facts.select(*keys, "currency", *carried)
    if not_carried_measures:
        upserts = upserts.join(stored.select(*keys, *not_carried_measures), on=keys, how="left")
    parts = [conform(upserts, table).select(*view_cols).with_columns(nw.lit(True).alias("_mine"))]
    touched_keys = facts.select(keys)
    pairs = facts.select("prod_id", "site_id")
    if n_removed:
        cleared = removals.filter(nw.col("_action") == "clear").select(keys)
        clears = stored.join(cleared, on=keys, how="semi").with_columns(*[nw.lit(None).cast(nw.Float64).alias(m) for m in carried])
        parts.append(conform(clears, table).select(*view_cols).with_columns(nw.lit(True).alias("_mine")))
        touched_keys = nw.concat([touched_keys, removals.select(keys)], how="vertical")
        pairs = nw.concat([pairs, removals.select("prod_id", "site_id")], how="vertical")
    pairs = pairs.unique()
    untouched = stored.join(pairs, on=["prod_id", "site_id"], how="semi").join(touched_keys, on=keys, how="anti")
    parts.append(untouched.select(*view_cols).with_columns(nw.lit(False).alias("_mine")))
    view = nw.concat(parts, how="vertical")
    view = convert_to_usd(view, reference_frame(lake, "fx_rates"), date_col)
    view = mask_measures(view, date_col, grain, list(masked_measures(spec.antitrust)))
    derived = [c for c in DERIVED_MEASURE_COLUMNS if c in view.collect_schema().names()]
    twins = engine.persist(view.filter(nw.col("_mine")).select(*keys, *derived))
    measured = facts.drop(*[c for c in derived if c in facts.collect_schema().names()]).join(twins, on=keys, how="left")
    result.fx_missing += _count(measured.filter(nw.col("fx_rate_to_usd").is_null()))
    source = conform(measured, table).with_columns(nw.lit("upsert").alias("_action"))
    if n_removed:
        result.removed += n_removed
        # Removals carry the lineage of the newest delivery of the batch.
        lineage = (
            facts.select("_source_file", "_delivery_id", "_ingested_at")
            .unique()
            .sort("_ingested_at", "_source_file")
            .collect(backend="polars")
            .row(-1)
        )
        removal_rows = removals.join(twins, on=keys, how="left").with_columns(
            nw.lit(now).alias("_updated_at"),
            nw.lit(lineage[0]).alias("_source_file"),
            nw.lit(lineage[1]).alias("_delivery_id"),
            nw.lit(lineage[2]).alias("_ingested_at"),
        )
        source = nw.concat([source, _conform_with_action(removal_rows, table)], how="vertical")
    not_carried = set(_measure_columns(not_carried_measures)) - set(derived)
    stats = lake.merge(
        uri,
        source,
        keys=keys,
        restrict=f"t.{date_col} >= '{lo}' AND t.{date_col} <= '{hi}'",
        bookmarks=marks,
        partition_by=fact_partitions(table_name),
        description=f"{spec.name}: {table.description}",
        column_descriptions={c.name: c.description for c in table.columns},
        update_columns=[c.name for c in table.columns if c.name not in not_carried],
        action_column="_action",
        clear_columns=[*carried, *derived, "_updated_at", "_source_file", "_delivery_id", "_ingested_at"],
    )
    result.inserted += int(stats.get("num_target_rows_inserted", 0))
    result.updated += int(stats.get("num_target_rows_updated", 0))
    engine.release(twins)
    if grain != "day":
        return
    # Stored rows of the blocks after the changed ones read the changed blocks' means.
    next_from, next_to = _block_start(lo, -1), _block_start(hi, -2) - timedelta(days=1)
    later = (
        lake.read(uri, table.schema)
        .filter(nw.col(date_col).is_between(next_from, next_to))
        .join(pairs, on=["prod_id", "site_id"], how="semi")
        .join(touched_keys, on=keys, how="anti")
        .select(nw.col(date_col).min().alias("lo"), nw.col(date_col).max().alias("hi"))
        .collect(backend="polars")
        .row(0)
    )
    if later[0] is not None:
        refresh_derived_measures(lake, spec, table_name, later[0], later[1], now)


def _conform_with_action(frame: nw.LazyFrame, table: canonical.CanonicalTable) -> nw.LazyFrame:
    have = set(frame.collect_schema().names())
    return frame.select(
        *[(nw.col(c.name) if c.name in have else nw.lit(None)).cast(c.nw_dtype).alias(c.name) for c in table.columns], "_action"
    )


def refresh_silver(lake: LakeIO, spec: RetailerSpec, tables: list[str], now: datetime | None = None) -> dict[str, SilverResult]:
    """Bring the given silver tables up to date with bronze; dimensions before facts."""
    now = now or datetime.now(UTC)
    results = {}
    shared: dict = {}
    for name in spec.canonical_tables:
        if name not in tables:
            continue
        if name in canonical.DIMENSIONS:
            results[name] = refresh_dimension(lake, spec, name, now, shared)
            results[name].reenriched = reenrich_current_versions(lake, spec, name, now)
        else:
            results[name] = refresh_facts(lake, spec, name, now)
            results[name].fx_filled = refill_late_fx(lake, spec, name, now)
    for name in spec.derived_tables:
        if name in tables:
            results[name] = refresh_period_facts(lake, spec, name, now)
    return results


GRAIN = {"store_day_fact": "day", "store_week_fact": "week", "store_month_fact": "month"}
DERIVED_MEASURE_COLUMNS = [
    c.name
    for c in canonical.STORE_DAY_FACT.derived_columns
    if c.name.endswith("_usd") or c.name.startswith("at_masked_") or c.name == "fx_rate_to_usd"
]


def refresh_derived_measures(
    lake: LakeIO, spec: RetailerSpec, table_name: str, first: date, last: date, now: datetime, bookmarks: dict[str, str] | None = None
) -> int:
    """Recompute FX-converted and antitrust-masked columns for the dates a refresh touched.

    Runs after the fact MERGE, on the silver rows themselves, so it is right whichever file kinds
    set which measures. Masks look back over their window, so history is read and the dates up to
    one window after `last` are refreshed too. Returns the number of rows without an FX rate.
    `bookmarks` (the bronze versions the fact MERGE consumed) are committed with this write.
    """
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    grain = GRAIN[table_name]
    reach = masking.history_window(grain)
    uri = lake.silver(spec.name, table_name)
    rows = (
        lake.read(uri, table.schema)
        .filter(nw.col(date_col).is_between(first - reach, last + reach))
        # Only what FX and masks read: a wide fact table over a long range would not fit in memory.
        .select(*table.natural_keys, "currency", *canonical.MEASURES)
    )
    rows = convert_to_usd(rows, reference_frame(lake, "fx_rates"), date_col)
    rows = mask_measures(rows, date_col, grain, list(masked_measures(spec.antitrust)))
    touched = rows.filter(nw.col(date_col).is_between(first, last + reach))
    engine = edges(touched)
    touched = engine.persist(touched)
    n, fx_missing = (
        touched.with_columns(nw.when(nw.col("fx_rate_to_usd").is_null()).then(1).otherwise(0).alias("_no_fx"))
        .select(nw.len(), nw.col("_no_fx").sum())
        .collect(backend="polars")
        .row(0)
    )
    if n == 0:
        if bookmarks:
            lake.commit_bookmarks(uri, bookmarks)
        return 0
    keys = list(table.natural_keys)
    derived = [c for c in DERIVED_MEASURE_COLUMNS if c in touched.collect_schema().names()]
    update = conform(touched, table).select(*keys, *derived).with_columns(nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("_updated_at"))
    lake.merge(
        uri,
        update,
        keys=keys,
        restrict=f"t.{date_col} >= '{first}' AND t.{date_col} <= '{last + reach}'",
        update_columns=[*derived, "_updated_at"],
        bookmarks={**lake.bookmarks(uri), **(bookmarks or {})},
    )
    engine.release(touched)
    return int(fx_missing or 0)


def refill_late_fx(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime) -> int:
    """Stored fact rows without an FX rate whose date and currency have one now (rates that came late).

    Their `fx_rate_to_usd`, `*_usd` and masked USD twins are recomputed; the rewritten rows carry a
    new `_updated_at`, so period facts and gold pick them up. Returns the number of rows filled.
    """
    table = canonical.TABLES[table_name]
    date_col = table.natural_keys[0]
    uri = lake.silver(spec.name, table_name)
    if not lake.exists(uri):
        return 0
    rates = reference_frame(lake, "fx_rates").select(nw.col("date").alias(date_col), "currency")
    fillable = (
        lake.read(uri, table.schema)
        .filter(nw.col("fx_rate_to_usd").is_null())
        .select(date_col, "currency")
        .join(rates, on=[date_col, "currency"], how="semi")
    )
    n, lo, hi = (
        fillable.select(nw.len(), nw.col(date_col).min().alias("lo"), nw.col(date_col).max().alias("hi")).collect(backend="polars").row(0)
    )
    if not n:
        return 0
    refresh_derived_measures(lake, spec, table_name, lo, hi, now)
    return int(n)


def refresh_period_facts(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime) -> SilverResult:
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
    daily = lake.read(day_uri, canonical.STORE_DAY_FACT.schema)
    # One scan of two columns: the changed days' range and newest update, and the latest day of all.
    changed = nw.lit(True) if watermark is None else nw.col("_updated_at") > datetime.fromisoformat(watermark)
    lo, hi, mark, as_of = (
        daily.select(
            nw.when(changed).then(nw.col("date")).alias("_changed_date"),
            nw.when(changed).then(nw.col("_updated_at")).alias("_changed_at"),
            "date",
        )
        .select(
            nw.col("_changed_date").min().alias("lo"),
            nw.col("_changed_date").max().alias("hi"),
            nw.col("_changed_at").max().alias("mark"),
            nw.col("date").max().alias("as_of"),
        )
        .collect(backend="polars")
        .row(0)
    )
    if lo is None:
        return result
    first_end = period_end_of(lo, grain, spec.week_ends_on)
    last_end = period_end_of(hi, grain, spec.week_ends_on)
    # The period in progress is published period-to-date (`as_of`); once the retailer's days reach
    # its end (or pass it) it is recomputed as complete, even when no day of it changed.
    stored = lake.exists(uri)
    if stored:
        closing = (
            lake.read(uri, table.schema)
            .filter(~nw.col("is_complete") & (nw.col(end_col) <= as_of))
            .select(nw.col(end_col).min())
            .collect(backend="polars")
            .item()
        )
        if closing is not None and closing < first_end:
            first_end = closing
    # Whole periods: from the day after the previous period's end.
    first_day = first_end - timedelta(days=6) if grain == "week" else first_end.replace(day=1)
    days = daily.filter(nw.col("date").is_between(first_day, last_end))
    engine = edges(days)
    # Aggregated a run of whole periods at a time (at most a batch of daily rows each), so the
    # peak follows the batch size, not the history's; the period rows are a fraction of the days.
    sizes = _period_sizes(days, grain, spec.week_ends_on)
    parts = []
    for lo_end, hi_end in ranges_within(sizes.iter_rows(), silver_batch_rows()):
        chunk = daily.filter(nw.col("date").is_between(period_start_of(lo_end, grain, spec.week_ends_on), hi_end))
        periods = with_period_coverage(aggregate_period(chunk, grain, spec.week_ends_on), end_col, grain, as_of, spec.week_ends_on)
        parts.append(engine.persist(conform(periods, table)))
    aggregated = nw.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    reach = history_window(grain)
    # Masks read the stored periods around the recomputed ones (none on a first load).
    history = (
        conform(
            lake.read(uri, table.schema).filter(
                nw.col(end_col).is_between(first_end - reach, last_end + reach) & ~nw.col(end_col).is_between(first_end, last_end)
            ),
            table,
        )
        if stored
        else None
    )
    combined = nw.concat([aggregated, history], how="vertical") if history is not None else aggregated
    combined = mask_measures(combined, end_col, grain, list(masked_measures(spec.antitrust)))
    out = conform(
        combined.filter(nw.col(end_col).is_between(first_end, last_end + reach)).with_columns(
            nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("_updated_at")
        ),
        table,
    )
    result.input_rows = int(sizes["_n"].sum())
    result.min_date, result.max_date = first_end, last_end
    if mark.tzinfo is None:  # engines hand timestamps back in UTC
        mark = mark.replace(tzinfo=UTC)
    bookmarks = {**marks, "day_updated_at": mark.isoformat()}
    description = f"{spec.name}: {table.description} Derived from store_day_fact."
    column_descriptions = {c.name: c.description for c in table.columns}
    # A first load has nothing to match: each period end's rows go straight into its partition,
    # in one commit, where the Lake can (a partitioned write holds its whole input otherwise).
    if not stored and lake.append_by_partition(
        uri, end_col, out, bookmarks=bookmarks, description=description, column_descriptions=column_descriptions
    ):
        stats = {"num_target_rows_inserted": _count(aggregated)}
    else:
        stats = lake.merge(
            uri,
            out,
            keys=list(table.natural_keys),
            restrict=f"t.{end_col} >= '{first_end}' AND t.{end_col} <= '{last_end + reach}'",
            # A product/store that no longer has days in a recomputed period loses its period row.
            delete_unmatched=f"t.{end_col} >= '{first_end}' AND t.{end_col} <= '{last_end}'",
            bookmarks=bookmarks,
            partition_by=fact_partitions(table_name),
            description=description,
            column_descriptions=column_descriptions,
        )
    for part in parts:
        engine.release(part)
    result.inserted = int(stats.get("num_target_rows_inserted", 0))
    result.updated = int(stats.get("num_target_rows_updated", 0))
    return result


def _period_sizes(days: nw.LazyFrame, grain, week_ends_on: str):
    """(period end, daily rows) of the periods holding `days`, oldest first (a Polars frame)."""
    return (
        days.group_by(period_end(nw.col("date"), grain, week_ends_on).alias("_end"))
        .agg(nw.len().alias("_n"))
        .sort("_end")
        .collect(backend="polars")
    )


def silver_metadata(result: SilverResult, row_count: int, uri: str, engine: str) -> dict:
    """The silver asset's materialization metadata, the same for both engines.

    Plain values; dicts are JSON metadata (the Dagster side and the Pipes side each wrap them).
    """
    return {
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
        "quarantine_reasons": dict(result.quarantine_reasons),
        "new_versions": result.new_versions,
        "closed_versions": result.closed_versions,
        "corporate_master_matched": result.enrichment_matched,
        "corporate_master_missing": result.enrichment_missing,
        "rows_without_fx_rate": result.fx_missing,
        "rows_filled_by_late_fx": result.fx_filled,
        "versions_reenriched_from_master": result.reenriched,
        "dates_from": str(result.min_date) if result.min_date else "-",
        "dates_to": str(result.max_date) if result.max_date else "-",
        "bronze_versions_consumed": dict(result.bronze_versions),
    }


def silver_result_from_dict(data: dict) -> SilverResult:
    """A `SilverResult` sent as JSON (the Spark job's report) back as the dataclass."""
    values = dict(data)
    for key in ("min_date", "max_date"):
        if values.get(key):
            values[key] = date.fromisoformat(str(values[key]))
    return SilverResult(**values)
