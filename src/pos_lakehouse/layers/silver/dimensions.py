"""Silver dimensions: the entities observed in new bronze rows become SCD2 versions, MERGEd by key.

Read top-down: `refresh_dimension` gathers each kind of file's new rows into observations
(`_observe`: quarantine, then the last good row of each entity and day), then writes the
versions they make (`_upsert_versions`). `reenrich_current_versions` rewrites the corporate
master attributes of current versions when the master changed.
"""

from __future__ import annotations

from datetime import date, datetime

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.layers.reference import enrich_dimension
from pos_lakehouse.layers.silver.batches import batch_order, delivery_batches, delivery_files
from pos_lakehouse.layers.silver.plan import FilePlan, count, new_bronze_batches, ok
from pos_lakehouse.layers.silver.quarantine import quarantine_failed
from pos_lakehouse.layers.silver.result import SilverResult
from pos_lakehouse.profiling import stage
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import silver_batch_rows
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.mapping import ORDER_COLUMNS, resolve_columns
from pos_lakehouse.transform.scd2 import dim_observations, keep_last, observation_columns, observed_from_file_names, scd2_versions


def refresh_dimension(lake: LakeIO, spec: RetailerSpec, table_name: str, now: datetime, shared: dict | None = None) -> SilverResult:
    """Observe the dimension's entities in the new bronze rows and upsert their versions.

    `shared` (one dict for the dimensions of one refresh) keeps what several dimensions read from
    the same new bronze rows (the rows per delivery and data file), so it is computed once.
    """
    uri = lake.silver(spec.name, table_name)
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    with stage(f"{table_name}: observe"):
        observations = [
            _observe(lake, plan, raw, marks, now, result, shared) for plan, raw in new_bronze_batches(lake, spec, table_name, marks, result)
        ]
    if not observations:
        if result.bronze_versions and lake.exists(uri):
            lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    with stage(f"{table_name}: versions"):
        return _upsert_versions(lake, spec, canonical.TABLES[table_name], uri, observations, now, result)


def _one_snapshot_per_day(plan: FilePlan, files) -> None:
    """Undated snapshot files are observed on their ingestion day: several of one day would collapse
    into the last one (every change between them lost, versions starting after the facts they
    describe). Such a batch fails, naming the setting that dates each snapshot by its file name."""
    file_spec = plan.file_spec
    if file_spec.observed_on is not None or file_spec.incremental or any(t in canonical.FACTS for t in file_spec.holds):
        return
    if plan.spec.delivery.channel not in ("landing", "sftp"):
        return
    per_day = files.group_by(nw.col("_ingested_at").dt.date().alias("day")).agg(
        nw.col("_delivery_id").n_unique().alias("snapshots"),
        nw.col("_source_file").min().alias("first"),
        nw.col("_source_file").max().alias("last"),
    )
    crowded = per_day.filter(nw.col("snapshots") > 1).sort("snapshots", descending=True)
    if len(crowded):
        day, n, first, last = crowded.row(0)
        raise ValueError(
            f"{plan.spec.name}.{plan.table_name}: {n} `{file_spec.name}` snapshots ingested on {day} ({first} ... {last}) "
            f"and no `observed_on` on the file kind: each would be observed on its ingestion day and only the last kept; "
            "set `observed_on: {pattern: '<regex with the date group>', format: '<strftime>'}` to date each by its file name"
        )


def _observe(
    lake: LakeIO, plan: FilePlan, all_raw: nw.LazyFrame, marks: dict[str, str], now: datetime, result: SilverResult, shared: dict | None
) -> nw.LazyFrame:
    """The observations (entity, day, attributes) in one kind of file's new rows; bad rows quarantined."""
    spec, table_name = plan.spec, plan.table_name
    budget = silver_batch_rows()
    natural = plan.table.natural_keys[0]
    ids = ["_delivery_id", "_row_number"]
    engine = edges(all_raw)
    _, observed, dates = dimension_rows(plan, all_raw)
    reused = (plan.bookmark, marks.get(plan.bookmark), result.bronze_versions.get(plan.bookmark))
    files = shared.get(reused) if shared is not None else None
    if files is None:
        files = delivery_files(all_raw)
        if shared is not None:
            shared[reused] = files
    _one_snapshot_per_day(plan, files)
    batches = list(delivery_batches(files, budget))
    # Bad rows are counted in one streaming pass, and (if any) quarantined in batches of whole
    # deliveries (oldest first), so a large delivery is never parsed whole.
    checked = dimension_rows(plan, all_raw, dates)[0].filter(~ok()).select(nw.len().alias("n"))
    any_bad = bool(engine.persist(checked).collect(backend="polars").item())
    bad = []
    for deliveries in batches if any_bad else []:
        raw = all_raw if deliveries is None else all_raw.filter(nw.col("_delivery_id").is_in(deliveries))
        lf = engine.reuse(dimension_rows(plan, raw, dates)[0])
        quarantined = result.quarantined
        quarantine_failed(lake, spec, table_name, lf, raw, now, result)
        if result.quarantined > quarantined:
            bad.append(engine.persist(lf.filter(~ok()).select(*ids)))
    # The observation of an entity and day is its last good row: of the latest batch (as if
    # the batches had arrived one after another), then the last read.
    order, batched, file_order = batch_order(files, batches)
    good_raw = all_raw.join(nw.concat(bad, how="vertical"), on=ids, how="anti") if bad else all_raw
    texts = raw_sources(plan, all_raw, [natural, observed])
    if texts is not None:
        # All rows of one (key text, date text) pair parse to the same entity and day, so
        # the last row of an entity-day is the last of its pairs' last rows: the pairs are
        # narrowed on the raw text (a grouped maximum over a few columns), and only their
        # last rows are parsed in full.
        last = keep_last(batched(good_raw), texts, order, file_order)
        good_raw = last.drop("_batch") if "_batch" in order else last
    lf = dimension_rows(plan, good_raw, dates)[0]
    lf = batched(lf.filter(ok() & ~nw.col(observed).is_null()))
    if texts is not None:  # a few rows, read three times
        lf = engine.persist(lf.select(*observation_columns(lf.collect_schema().names(), plan.table, observed, order)))
    seen = dim_observations(lf, plan.table, observed, order, file_order)
    return engine.persist(seen)


def dimension_rows(
    plan: FilePlan, raw: nw.LazyFrame, dates: dict[str, date | None] | None = None
) -> tuple[nw.LazyFrame, str, dict[str, date | None] | None]:
    """A dimension's canonical rows, the column each row is observed on, and (snapshots named by
    their day) the observation date of each file (`dates`, read from `raw` when not given)."""
    lf = plan.canonical_rows(raw)
    names = lf.collect_schema().names()
    if "date" in names:
        return lf, "date", dates
    if "week_end_date" in names:
        return lf, "week_end_date", dates
    observed_on = plan.file_spec.observed_on
    if observed_on is not None:
        # Undated snapshots named by their day: each file is observed on the date in its name.
        if dates is None:
            files = raw.select("_source_file").unique().collect(backend="polars")["_source_file"].to_list()
            dates = {f: observed_on.date_of(f) for f in files}
        return observed_from_file_names(lf, dates, "_observed_from_name"), "_observed_from_name", dates
    return lf.with_columns(nw.col("_ingested_at").cast(nw.Date).alias("_delivered_on")), "_delivered_on", dates


def raw_sources(plan: FilePlan, raw: nw.LazyFrame, columns: list[str]) -> list[str] | None:
    """The bronze columns that `columns` of `dimension_rows` are computed from, each from its own
    source alone (None when one is not found)."""
    names = [c for c in raw.collect_schema().names() if c not in ORDER_COLUMNS]
    renames, _ = resolve_columns(names, plan.spec.columns.get(plan.file_spec.name, {}), plan.file_spec.holds)
    source = {target: name for name, target in renames.items()} | {"_observed_from_name": "_source_file", "_delivered_on": "_ingested_at"}
    return [source[c] for c in columns] if all(c in source for c in columns) else None


def _upsert_versions(
    lake: LakeIO, spec: RetailerSpec, table: canonical.CanonicalTable, uri: str, observations: list, now: datetime, result: SilverResult
) -> SilverResult:
    """The versions the observations make (enriched from the corporate master), MERGEd by key."""
    table_name = table.name
    key_column = canonical.KEY_COLUMN[table_name]
    obs = nw.concat(observations, how="diagonal") if len(observations) > 1 else observations[0]
    engine = edges(obs)
    obs = engine.persist(obs)
    result.input_rows = count(obs)
    existing = engine.persist(lake.read(uri, table.schema).select([c.name for c in table.columns]))
    corp_column = next(c.name for c in table.derived_columns if c.name.startswith("corp_"))

    def _enrich(frame: nw.LazyFrame) -> nw.LazyFrame:
        enriched = engine.persist(enrich_dimension(frame, lake, table_name))
        total, matched = enriched.select(nw.len(), nw.col(corp_column).count()).collect(backend="polars").row(0)
        result.enrichment_matched, result.enrichment_missing = int(matched), int(total - matched)
        return enriched

    scd2_attributes = spec.scd2.get(table_name, [])  # pyright: ignore[reportCallIssue, reportArgumentType] -- a dimension's name
    # Source columns the YAML maps are not extra (any more): a mapping fixed after the fact clears them.
    mapped = sorted({source for columns in spec.columns.values() for source in columns})
    upserts = engine.persist(
        scd2_versions(obs, existing, table, scd2_attributes, spec.retailer_id, key_column, now, enrich=_enrich, retired_extras=mapped)
    )
    # One pass answers whether there is anything to write, and how many versions are new or closed
    # (a stored key is one version: the left join keeps one row per upsert).
    known = existing.select(key_column, nw.lit(1).alias("_known"))
    flagged = upserts.select(key_column, "is_current").join(known, on=key_column, how="left")
    n, new_versions, closed_versions = (
        flagged.select(
            nw.len().alias("n"),
            nw.when(nw.col("_known").is_null()).then(1).otherwise(0).sum().alias("new"),
            nw.when(~nw.col("_known").is_null() & ~nw.col("is_current")).then(1).otherwise(0).sum().alias("closed"),
        )
        .collect(backend="polars")
        .row(0)
    )
    if not n and lake.exists(uri):
        lake.commit_bookmarks(uri, result.bronze_versions)
        return result
    result.new_versions, result.closed_versions = int(new_versions or 0), int(closed_versions or 0)
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
    key_column = canonical.KEY_COLUMN[table_name]
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
    n = count(changed)
    if n:
        lake.merge(uri, changed, keys=[key_column], update_columns=[*corp, "_updated_at"], bookmarks=lake.bookmarks(uri))
    engine.release(changed)
    return n
