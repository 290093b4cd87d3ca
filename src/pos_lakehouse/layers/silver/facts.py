"""Silver facts: new bronze fact rows -> keyed, checked, deduplicated rows, written with their FX and masked twins.

A kind of file sets only the measures it carries (sales and inventory may arrive apart and fill
the same rows), and a delivery restates the store-days it contains: rows of those store-days
that it no longer holds are removed (see `FileSpec.replaces`).

Read top-down: `refresh_facts` walks each kind of file's new rows batch by batch; a batch
(`_load_fact_batch`) is gathered (its canonical rows), transformed (`_keyed_rows`: row rules and
point-in-time keys; then duplicates, and the bad rows quarantined) and written: appended with
its twins when nothing stored is near its dates, else MERGEd (`_merge_fact_batch`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.layers.reference import reference_frame
from pos_lakehouse.layers.silver.batches import BatchWrites, FactBatch, fact_batches
from pos_lakehouse.layers.silver.derived import refresh_derived_measures
from pos_lakehouse.layers.silver.plan import FilePlan, count, new_bronze_batches, ok
from pos_lakehouse.layers.silver.quarantine import quarantine_failed
from pos_lakehouse.layers.silver.result import SilverResult
from pos_lakehouse.profiling import stage
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import silver_batch_rows
from pos_lakehouse.storage.interface import LakeIO, Stale
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.canonical import DERIVED_MEASURE_COLUMNS, DIM_FOR_ID, KEY_COLUMN, fact_partitions, measure_columns
from pos_lakehouse.transform.mapping import ERROR_COLUMN, conform
from pos_lakehouse.transform.masking import block_start, mask_measures
from pos_lakehouse.transform.measures import convert_to_usd, masked_measures
from pos_lakehouse.transform.row_rules import align_week_dates, deduplicate_fact_batch, fact_row_rules
from pos_lakehouse.transform.scd2 import START_OF_HISTORY, point_in_time_keys


def refresh_facts(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime, batch_rows: int | None = None) -> SilverResult:
    """MERGE new bronze fact rows into silver, one kind of file at a time, in batches.

    New rows are loaded in batches of at most `batch_rows` bronze rows (whole deliveries, oldest
    first; a bigger delivery is split by date), exactly as if the batches had arrived one after
    another, so memory follows the batch size and not the delivery's. Each batch is written once,
    with its FX-converted and antitrust-masked twins already computed (`_load_fact_batch`).
    """
    uri = lake.silver(spec.name, table_name)
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    committed = dict(marks)
    # A table this refresh creates cannot hold a key twice: nothing to check, now or later.
    created = not lake.exists(uri)
    budget = batch_rows or silver_batch_rows()
    writes = BatchWrites(background=lake.engine == "polars")
    try:
        for n, (plan, raw) in enumerate(new_bronze_batches(lake, spec, table_name, marks, result)):
            if n == 0 and UNIQUE_KEYS_MARK not in marks:
                if created:
                    result.bronze_versions[UNIQUE_KEYS_MARK] = "checked"
                else:
                    with stage("facts: duplicate-key check"):
                        _repair_duplicate_keys(lake, plan, result)
            run = _FactRun(lake, plan, now, result, marks, writes)
            with stage("facts: batch plan"):
                batches = list(fact_batches(plan, raw, budget))
            for batch in batches:
                _load_fact_batch(run, raw, batch)
    finally:
        with stage("facts: last write (waited for)"):
            writes.close()
    # The consumed bronze versions advance once every batch (and its derived twins) is in.
    if result.bronze_versions != committed and lake.exists(uri):
        with stage("facts: bookmarks"):
            lake.commit_bookmarks(uri, result.bronze_versions)
    return result


log = logging.getLogger(__name__)

# The bookmark of a table known to hold each key once: created by this code (whose appends land on
# the snapshot they were decided on, so two processes never store a batch twice), or checked.
UNIQUE_KEYS_MARK = "unique_keys"


def _repair_duplicate_keys(lake: LakeIO, plan: FilePlan, result: SilverResult) -> None:
    """A table an earlier version left with a key stored twice (two processes appending the same
    batch) keeps one row per key, before new rows are added. Checked once (a grouped count over the
    whole table), then marked in the table's bookmarks. Both engines mark the tables they create,
    so a table's bookmarks are the same whichever engine wrote it."""
    removed = lake.remove_duplicate_keys(plan.uri, plan.keys, rewrite_by=plan.date_col)
    if removed is None:  # a Lake that cannot tell (Spark): the Lake that can checks on its next refresh
        return
    if removed:
        log.warning("%s: removed %d rows of keys stored twice", plan.uri, removed)
        result.duplicates_removed += removed
    result.bronze_versions[UNIQUE_KEYS_MARK] = "checked"


@dataclass(frozen=True)
class _FactRun:
    """What every batch of one kind of file shares: the lake, the plan, the refresh's time and tallies."""

    lake: LakeIO
    plan: FilePlan
    now: datetime
    result: SilverResult
    marks: dict[str, str]  # bookmarks committed with each write (the bronze versions consumed before)
    writes: BatchWrites


def _load_fact_batch(run: _FactRun, raw: nw.LazyFrame, batch: FactBatch) -> None:
    lake, plan, result, now = run.lake, run.plan, run.result, run.now
    spec, table, date_col, keys = plan.spec, plan.table, plan.date_col, plan.keys
    # Gather: the batch's bronze rows.
    if batch.deliveries is not None:
        raw = raw.filter(nw.col("_delivery_id").is_in(batch.deliveries))
    engine = edges(raw)
    # Transform: canonical, checked and keyed rows; only the columns silver stores (plus the
    # row's identity) are materialized.
    with stage("facts: typing and keys"):
        lf, carried = _keyed_rows(run, raw, batch)
        have = set(lf.collect_schema().names())
        wanted = [c.name for c in table.columns if c.name in have]
        frame = engine.persist(lf.select(*wanted, "_row_number", ERROR_COLUMN))
        before_dedup = count(frame)
    result.input_rows += before_dedup
    # A delivery split by date: its bronze rows are this part's rows (one per canonical row).
    result.bronze_rows += before_dedup if batch.bronze_rows is None else batch.bronze_rows
    with stage("facts: dedup"):
        deduplicated = deduplicate_fact_batch(frame, keys, date_col, plan.file_spec.replaces)
        if deduplicated is not frame:
            deduplicated = engine.persist(deduplicated)
            engine.release(frame)
        frame, deduplicated = deduplicated, None
    with stage("facts: counts and dates"):
        # One pass answers how many rows are left, how many broke a rule and the good rows' dates
        # (each a Spark job, and a round trip over Spark Connect, when asked apart).
        good_date = nw.when(ok()).then(nw.col(date_col))
        left, n_bad, lo, hi = (
            frame.select(
                nw.len().alias("n"),
                nw.when(ok()).then(0).otherwise(1).sum().alias("bad"),
                good_date.min().alias("lo"),
                good_date.max().alias("hi"),
            )
            .collect(backend="polars")
            .row(0)
        )
    result.superseded += before_dedup - left
    with stage("facts: quarantine"):
        quarantine_failed(lake, spec, plan.table_name, frame, raw, now, result, n_bad=int(n_bad or 0))
    facts = (
        frame.filter(ok()).drop("_row_number", ERROR_COLUMN).with_columns(nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("_updated_at"))
    )
    if "is_complete" in {c.name for c in table.columns}:
        # Delivered weeks are whole weeks (a week not yet ended is quarantined as future-dated).
        facts = facts.with_columns(
            nw.lit(True).alias("is_complete"), *(nw.lit(7, nw.Int64).alias(c) for c in ("days_covered", "days_expected"))
        )
    n = left - int(n_bad or 0)
    result.loaded += n
    if n == 0:
        engine.release(frame)
        return
    result.min_date = lo if result.min_date is None else min(result.min_date, lo)
    result.max_date = hi if result.max_date is None else max(result.max_date, hi)
    # Write. Masks read the previous block's records, and a change reaches the next block's.
    day_grain = plan.grain == "day"
    history_from = block_start(lo, 1) if day_grain else lo
    reach_to = block_start(hi, -2) - timedelta(days=1) if day_grain else hi
    # From here on the stored table is read: the previous batch's append must be in it.
    with stage("facts: previous write (waited for)"):
        run.writes.wait()
    with stage("facts: nearby stored rows"):
        # The snapshot "nothing stored near these rows" is decided on: their append lands on it or not at all.
        pin = lake.pin(plan.uri)
        stored = lake.read(plan.uri, table.schema) if lake.exists(plan.uri) else None
        nearby = 0
        if stored is not None:
            # A list (not a join) so the reader can skip data files by their site_id bounds; one row is enough.
            sites = facts.select("site_id").unique().collect(backend="polars")["site_id"].to_list()
            near = stored.filter(nw.col(date_col).is_between(history_from, reach_to) & nw.col("site_id").is_in(sites))
            nearby = count(near.head(1))
    if nearby:
        quarantined = frame.filter(~ok()).select(*keys, ERROR_COLUMN)
        with stage("facts: MERGE"):
            _merge_fact_batch(run, facts, carried, lo, hi, history_from, quarantined)
        engine.release(frame)
        return
    # Nothing stored for these stores near these dates: no row to update, restate or re-mask.
    # The rows in hand are all the masks read; they are written with their twins by an append.
    source = conform(facts, table)
    # Measures this kind of file does not carry are null in every row here, and so are their
    # twins (conform adds them): masks are computed for the carried ones only.
    in_hand = [m for m in masked_measures(spec.antitrust) if m.replace("_usd", "_lc") in carried]
    with stage("facts: FX and masks"):
        only_usd = count(facts.filter(nw.col("currency") != "USD").head(1)) == 0
        usd = convert_to_usd(source, reference_frame(lake, "fx_rates"), date_col, only_usd=only_usd)
        source = mask_measures(usd, date_col, plan.grain, in_hand)
        source = engine.persist(conform(source, table))
        result.fx_missing += count(source.filter(nw.col("fx_rate_to_usd").is_null()))
    # The batch's rows are all in `source` now: free them before the write (a copy less at the peak).
    engine.release(frame)
    del frame, facts
    run.writes.submit(lambda: _append_new_rows(run, source, creates=stored is None, pin=pin))
    result.inserted += n


def _keyed_rows(run: _FactRun, raw: nw.LazyFrame, batch: FactBatch) -> tuple[nw.LazyFrame, list[str]]:
    """The batch's canonical rows with the row rules applied and the dimension keys attached, and
    the measures this kind of file carries."""
    lake, plan = run.lake, run.plan
    spec, date_col = plan.spec, plan.date_col
    lf = plan.canonical_rows(raw)
    if batch.dates is not None:
        in_part = nw.col(date_col).is_in(batch.dates)
        lf = lf.filter(in_part | nw.col(date_col).is_null()) if batch.with_undated else lf.filter(in_part)
    names = lf.collect_schema().names()
    carried = [m for m in canonical.MEASURES if m in names]
    currency = nw.col("currency").fill_null(spec.currency) if "currency" in names else nw.lit(spec.currency)
    # Keys are attached next; an unknown product or store is a row-level problem. Rows without
    # a date (already flagged) look up the first version, so the point-in-time join keeps them
    # (it would drop them otherwise) in the same single pass over the data.
    # Row rules: a weekly file's dates become week ends by its explicit rule; a row dated in
    # the future, with a bad currency or a measure out of range is quarantined, never blocking.
    if date_col == "week_end_date":
        lf = align_week_dates(lf, date_col, spec.week_ends_on, plan.file_spec.week_date, plan.file_spec.misaligned_weeks)
    lf = fact_row_rules(lf.with_columns(currency.alias("currency")), date_col, run.now.date(), carried)
    lf = lf.with_columns(nw.col(date_col).fill_null(START_OF_HISTORY).alias("_lookup_date"))
    for natural, dim_name in DIM_FOR_ID.items():
        dim = lake.read(lake.silver(spec.name, dim_name), canonical.TABLES[dim_name].schema)
        lf = point_in_time_keys(lf, dim, natural, KEY_COLUMN[dim_name], "_lookup_date")
        unknown = nw.col(KEY_COLUMN[dim_name]).is_null() & ok()
        lf = lf.with_columns(
            nw.when(unknown)
            .then(nw.concat_str([nw.lit(f"{natural}: unknown "), nw.col(natural), nw.lit(f" (no {dim_name} version on this date)")]))
            .otherwise(nw.col(ERROR_COLUMN))
            .alias(ERROR_COLUMN)
        )
    return lf, carried


def _append_new_rows(run: _FactRun, source: nw.LazyFrame, creates: bool, pin) -> None:
    """Write a batch with nothing stored near it: a file per day written by the engine itself where
    it can (Polars, a table laid out by date), else a Delta append (or the table's creation).

    The append lands on the snapshot the batch was decided on (`pin`, where the Lake can pin): if
    another process wrote to the table since (the same batch, run twice at once), the rows are
    MERGEd by key instead, so they are stored once whoever ran them."""
    lake, plan, marks = run.lake, run.plan, run.marks
    description = f"{plan.spec.name}: {plan.table.description}"
    descriptions = {c.name: c.description for c in plan.table.columns}
    day = fact_partitions(plan.table_name)[0]
    pinned = {"pin": pin} if pin is not None else {}
    with stage("facts: per-day write (in the background)"):
        appended = lake.append_by_partition(
            plan.uri, day, source, bookmarks=marks, description=description, column_descriptions=descriptions, **pinned
        )
    if not appended and not creates:
        try:
            lake.append(plan.uri, source, bookmarks=marks, partition_by=[day], description=description, **pinned)
            appended = True
        except Stale:
            appended = False
    if not appended:
        # A new table's first rows, or rows another process stored meanwhile: MERGEd by key.
        lake.merge(
            plan.uri,
            source.with_columns(nw.lit("upsert").alias("_action")),
            keys=plan.keys,
            action_column="_action",
            bookmarks=marks,
            partition_by=[day],
            description=description,
            column_descriptions=descriptions,
        )
    edges(source).release(source)


def _merge_fact_batch(
    run: _FactRun, facts: nw.LazyFrame, carried: list[str], lo: date, hi: date, history_from: date, quarantined: nw.LazyFrame
) -> None:
    """One MERGE of a batch into stored rows, FX and masked twins computed from the rows after it.

    The twins of the rows written are computed on the table as it will be after this MERGE (stored
    rows of the masks' history, the batch's rows with the measures it does not carry taken from
    the stored row, restated rows cleared), so no second pass rewrites them. Stored rows of the
    following block whose masks read a changed block are re-masked afterwards (none when a
    delivery extends the history forward).
    """
    lake, plan, result, now, marks = run.lake, run.plan, run.result, run.now, run.marks
    spec, table, uri, table_name = plan.spec, plan.table, plan.uri, plan.table_name
    date_col, keys, grain = plan.date_col, plan.keys, plan.grain
    engine = edges(facts)
    removals = (
        restated_away(lake, uri, facts, keys, date_col, carried, lo, hi, quarantined) if plan.file_spec.replaces == "site_days" else None
    )
    n_removed = count(removals) if removals is not None else 0
    not_carried_measures = [m for m in canonical.MEASURES if m not in carried]
    stored = lake.read(uri, table.schema).filter(nw.col(date_col).is_between(history_from, hi))
    view_cols = [*keys, "currency", *canonical.MEASURES]
    upserts = facts.select(*keys, "currency", *carried)
    if not_carried_measures:
        upserts = upserts.join(stored.select(*keys, *not_carried_measures), on=keys, how="left")
    parts = [conform(upserts, table).select(*view_cols).with_columns(nw.lit(True).alias("_mine"))]
    touched_keys = facts.select(keys)
    pairs = facts.select("prod_id", "site_id")
    if removals is not None and n_removed:
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
    result.fx_missing += count(measured.filter(nw.col("fx_rate_to_usd").is_null()))
    source = conform(measured, table).with_columns(nw.lit("upsert").alias("_action"))
    if removals is not None and n_removed:
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
    not_carried = set(measure_columns(not_carried_measures)) - set(derived)
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
    next_from, next_to = block_start(lo, -1), block_start(hi, -2) - timedelta(days=1)
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


def restated_away(
    lake: LakeIO,
    uri: str,
    good: nw.LazyFrame,
    keys: list[str],
    date_col: str,
    carried: list[str],
    lo: date,
    hi: date,
    quarantined: nw.LazyFrame | None = None,
) -> nw.LazyFrame | None:
    """Stored rows of the delivered store-days that the new delivery no longer contains.

    Such a row is deleted, unless another kind of file also fills it (sales and inventory
    apart): then only the measures this kind carries are cleared. A row the delivery holds but
    that broke a rule (`quarantined`) is no restatement: the stored row it may stand for stays
    until a good row replaces it (see `kept_for_quarantined`).
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
    if quarantined is not None:
        stored = kept_for_quarantined(stored, quarantined, date_col)
    others = [m for m in canonical.MEASURES if m not in carried]
    filled_by_others = nw.any_horizontal(*[~nw.col(m).is_null() for m in others], ignore_nulls=True) if others else nw.lit(False)
    removals = stored.select(*keys, nw.when(filled_by_others).then(nw.lit("clear")).otherwise(nw.lit("delete")).alias("_action"))
    return edges(removals).persist(removals)


def kept_for_quarantined(candidates: nw.LazyFrame, quarantined: nw.LazyFrame, date_col: str) -> nw.LazyFrame:
    """`candidates` (stored rows a restatement would remove) less those a quarantined row may stand for.

    A quarantined row names its key as far as its values can be trusted: its date only when no
    rule about the date failed (a future or misaligned date may be a typo of a restated day),
    its store and product when present. It keeps every stored row matching the parts it names:
    a row with a broken date keeps its store's product on every restated day, one naming nothing
    keeps them all. Which parts are named is read once (a few distinct patterns), so the usual
    clean delivery costs one small count.
    """
    date_broken = nw.col(ERROR_COLUMN).str.contains(f"(^|; ){date_col}:")
    named = quarantined.select(
        nw.when(nw.col(date_col).is_null() | date_broken).then(nw.lit(None).cast(nw.Date)).otherwise(nw.col(date_col)).alias(date_col),
        "site_id",
        "prod_id",
    )
    parts = [date_col, "site_id", "prod_id"]
    known = named.select(*[nw.col(c).is_null().alias(f"_no_{c}") for c in parts]).unique().collect(backend="polars")
    for pattern in known.iter_rows():
        on = [c for c, missing in zip(parts, pattern, strict=True) if not missing]
        if not on:
            return candidates.filter(nw.lit(False))
        these = named.filter(
            nw.all_horizontal(*[nw.col(c).is_null() == missing for c, missing in zip(parts, pattern, strict=True)], ignore_nulls=True)
        )
        candidates = candidates.join(these.select(on).unique(), on=on, how="anti")
    return candidates


def _conform_with_action(frame: nw.LazyFrame, table: canonical.CanonicalTable) -> nw.LazyFrame:
    have = set(frame.collect_schema().names())
    return frame.select(
        *[(nw.col(c.name) if c.name in have else nw.lit(None)).cast(c.nw_dtype).alias(c.name) for c in table.columns], "_action"
    )
