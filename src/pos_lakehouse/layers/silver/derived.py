"""Measures silver derives from stored fact rows: FX-converted and antitrust-masked twins, late FX
rates filled in, and the weekly and monthly facts aggregated from the daily ones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.layers.reference import reference_frame
from pos_lakehouse.layers.silver.plan import count
from pos_lakehouse.layers.silver.result import SilverResult
from pos_lakehouse.profiling import stage
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import silver_batch_rows
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform import canonical, masking
from pos_lakehouse.transform.canonical import DERIVED_MEASURE_COLUMNS, GRAIN, fact_partitions
from pos_lakehouse.transform.chunks import ranges_within
from pos_lakehouse.transform.mapping import conform
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
    assert grain != "day", f"{table_name} is daily: it is delivered, not derived"
    table = canonical.TABLES[table_name]
    end_col = table.natural_keys[0]
    uri = lake.silver(spec.name, table_name)
    day_uri = lake.silver(spec.name, "store_day_fact")
    marks = lake.bookmarks(uri)
    result = SilverResult(table_name, bronze_versions=dict(marks))
    watermark = marks.get("day_updated_at")
    daily = lake.read(day_uri, canonical.STORE_DAY_FACT.schema)
    # One scan of two columns: the changed days' range and their newest update. A period's
    # coverage follows from its own days, so only periods with a changed day are recomputed.
    changed = daily if watermark is None else daily.filter(nw.col("_updated_at") > datetime.fromisoformat(watermark))
    with stage(f"{table_name}: changed days"):
        lo, hi, mark = (
            changed.select(nw.col("date").min().alias("lo"), nw.col("date").max().alias("hi"), nw.col("_updated_at").max().alias("mark"))
            .collect(backend="polars")
            .row(0)
        )
    if lo is None:
        return result
    first_end = period_end_of(lo, grain, spec.week_ends_on)
    last_end = period_end_of(hi, grain, spec.week_ends_on)
    pin = lake.pin(uri)  # a first load appends on this snapshot, or MERGEs if another process wrote since
    stored = lake.exists(uri)
    # Whole periods: from the day after the previous period's end.
    first_day = first_end - timedelta(days=6) if grain == "week" else first_end.replace(day=1)
    days = daily.filter(nw.col("date").is_between(first_day, last_end))
    engine = edges(days)
    # Aggregated a run of whole periods at a time (at most a batch of daily rows each), so the
    # peak follows the batch size, not the history's; the period rows are a fraction of the days.
    with stage(f"{table_name}: sizes"):
        sizes = _period_sizes(days, grain, spec.week_ends_on)
    parts = []
    for lo_end, hi_end in ranges_within(sizes.iter_rows(), silver_batch_rows()):
        chunk = daily.filter(nw.col("date").is_between(period_start_of(lo_end, grain, spec.week_ends_on), hi_end))
        periods = with_period_coverage(aggregate_period(chunk, grain, spec.week_ends_on), end_col, grain)
        with stage(f"{table_name}: aggregate"):
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
    with stage(f"{table_name}: masks and write"):
        appended = not stored and lake.append_by_partition(
            uri, end_col, out, bookmarks=bookmarks, description=description, column_descriptions=column_descriptions, **pinned(pin)
        )
    if appended:
        stats = {"num_target_rows_inserted": count(aggregated)}
    else:
        with stage(f"{table_name}: masks and MERGE"):
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


def pinned(pin) -> dict:
    """The `pin` argument of a Lake that pins its appends (`Lake.pin`); nothing for one that does not."""
    return {"pin": pin} if pin is not None else {}


def _period_sizes(days: nw.LazyFrame, grain, week_ends_on: str):
    """(period end, daily rows) of the periods holding `days`, oldest first (a Polars frame)."""
    return (
        days.group_by(period_end(nw.col("date"), grain, week_ends_on).alias("_end"))
        .agg(nw.len().alias("_n"))
        .sort("_end")
        .collect(backend="polars")
    )
