"""Slowly changing dimensions (type 2): versions from observations. Pure functions on narwhals frames."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.transform.canonical import CanonicalTable
from pos_lakehouse.transform.mapping import ERROR_COLUMN, ORDER_COLUMNS

# New entities are valid from the start of history, so facts older than the first
# delivery that mentions them still find a version.
START_OF_HISTORY = date(1900, 1, 1)
_ATTRS = "_tracked"
_META = ("data_provider_code", "secure_group_key", "_source_file", "_delivery_id", "_ingested_at")


def _attr_string(columns: Sequence[str]) -> nw.Expr:
    if not columns:
        return nw.lit("")
    return nw.concat_str([nw.col(c).cast(nw.String).fill_null("\u2205") for c in columns], separator="\u241f")


def observed_from_file_names(lf: nw.LazyFrame, dates: Mapping[str, date | None], alias: str) -> nw.LazyFrame:
    """`alias` = the observation date of each row's delivered file (`dates`: file -> date it names).

    A file whose name carries no date leaves its rows undated and flagged in `_errors`, so they
    are quarantined with the reason instead of being observed on an arbitrary day.
    """
    observed = nw.lit(None, nw.Date)
    for source_file, day in sorted(dates.items()):
        if day is not None:
            observed = nw.when(nw.col("_source_file") == source_file).then(nw.lit(day, nw.Date)).otherwise(observed)
    lf = lf.with_columns(observed.alias(alias))
    return lf.with_columns(
        nw.when(nw.col(alias).is_null())
        .then(
            nw.concat_str(
                [nw.col(ERROR_COLUMN), nw.lit("_source_file: no observation date in the file name")], separator="; ", ignore_nulls=True
            )
        )
        .otherwise(nw.col(ERROR_COLUMN))
        .alias(ERROR_COLUMN)
    )


def keep_last(lf: nw.LazyFrame, keys: Sequence[str], order: Sequence[str], file_order: Sequence[str] | None = None) -> nw.LazyFrame:
    """One row per `keys`: the one with the greatest `order` (compared column by column).

    The same rows as `unique(keys, keep="last", order_by=order)` when `order` is unique within
    `keys`, without sorting the frame. An order ending with a row's place in bronze
    (`ORDER_COLUMNS`, unique per row) goes to the engine's grouped maximum (`last_of_groups`);
    other orders are narrowed column by column by a maximum over the keys. `file_order` (every
    data file in the order read) orders the files instead of their names.
    """
    if tuple(order[-2:]) == ORDER_COLUMNS:
        last = edges(lf).last_of_groups(lf, keys, order, file_order)
        if last is not None:
            return last
    if file_order is not None:
        rank = nw.lit(None, nw.Int64)
        for i, path in enumerate(file_order):
            rank = nw.when(nw.col(ORDER_COLUMNS[0]) == path).then(nw.lit(i, nw.Int64)).otherwise(rank)
        lf = lf.with_columns(rank.alias("_file_rank"))
        order = [*order[:-2], "_file_rank", ORDER_COLUMNS[1]]
    for col in order:
        # A window in a column first, then the filter: not every engine filters on a window.
        lf = (
            lf.with_columns(nw.col(col).max().over(*keys).alias("_keep_last"))
            .filter(nw.col(col) == nw.col("_keep_last"))
            .drop("_keep_last")
        )
    return lf.drop("_file_rank") if file_order is not None else lf


def observation_columns(have: Sequence[str], table: CanonicalTable, observed_on: str, order: Sequence[str] = ORDER_COLUMNS) -> list[str]:
    """The columns of `have` (canonical rows) that `dim_observations` reads."""
    key = table.natural_keys[0]
    attrs = [c.name for c in table.source_columns if c.name in have and c.name != key]
    extra = ["extra_attributes"] if "extra_attributes" in have else []
    meta = [c for c in _META if c in have]
    return [key, observed_on, *attrs, *extra, *meta, *order]


def dim_observations(
    lf: nw.LazyFrame, table: CanonicalTable, observed_on: str, order: Sequence[str] = ORDER_COLUMNS, file_order: Sequence[str] | None = None
) -> nw.LazyFrame:
    """One row per entity and observation date (the last one in `order` wins) with the table's attributes."""
    key = table.natural_keys[0]
    columns = observation_columns(lf.collect_schema().names(), table, observed_on, order)
    rows = lf.filter(~nw.col(key).is_null()).select(*columns).rename({observed_on: "_observed_on"})
    return keep_last(rows, [key, "_observed_on"], order, file_order).drop(*order)


def scd2_versions(
    observations: nw.LazyFrame,
    existing: nw.LazyFrame,
    table: CanonicalTable,
    tracked: Sequence[str],
    retailer_id: int,
    key_column: str,
    now: datetime,
    enrich: Callable[[nw.LazyFrame], nw.LazyFrame] | None = None,
    retired_extras: Sequence[str] = (),
) -> nw.LazyFrame:
    """Rows to upsert so the dimension reflects `observations`.

    - a change of a tracked attribute opens a version valid from the observation date and
      closes the previous one the day before;
    - an unchanged re-delivery yields no rows;
    - other attributes are updated in place on the current version (type 1);
    - a new entity's first version is valid from `START_OF_HISTORY`.
    Observations older than the entity's current version are ignored (late arrivals do not rewrite history).
    `retired_extras`: source columns the YAML maps now; they leave the stored `extra_attributes`.
    `enrich` adds derived attributes (corporate master) before comparing with what is stored.
    """
    natural = table.natural_keys[0]
    columns = [c.name for c in table.columns]
    attr_cols = [c.name for c in table.source_columns if c.name != natural] + ["extra_attributes"]
    tracked = [t for t in tracked if t in attr_cols]
    type1 = [c for c in attr_cols if c not in tracked]
    dtype = {c: table.column(c).nw_dtype for c in columns}

    have = set(observations.collect_schema().names())
    if retired_extras and "extra_attributes" not in have:
        # No extra column this time, but stored objects may hold keys the YAML now maps: they leave.
        observations = observations.with_columns(nw.lit(None, nw.String()).alias("extra_attributes"))
        have.add("extra_attributes")
    absent = [c for c in attr_cols if c not in have]
    current = existing.filter(nw.col("is_current")).join(observations.select(natural).unique(), on=natural, how="semi")
    obs = observations.with_columns(nw.col(c).cast(dtype[c]).alias(c) for c in attr_cols if c in have)
    if absent:
        # A delivery without a column says nothing about it (e.g. no extra columns this time):
        # the stored value stands instead of being reset to null on every row.
        obs = obs.join(current.select(natural, *absent), on=natural, how="left").with_columns(
            nw.col(c).cast(dtype[c]).alias(c) for c in absent
        )
    if "extra_attributes" in have:
        # A file speaks only for the extra columns it carries and fills: the stored ones stand.
        obs = obs.join(current.select(natural, nw.col("extra_attributes").alias("_stored_extra")), on=natural, how="left")
        obs = edges(obs).merge_json(obs, "extra_attributes", "_stored_extra", "extra_attributes", retired_extras).drop("_stored_extra")
    # Late observations (before the current version started) cannot reopen history.
    obs = (
        obs.join(current.select(natural, nw.col("valid_from").alias("_cur_from")), on=natural, how="left")
        .filter(nw.col("_cur_from").is_null() | (nw.col("_observed_on") >= nw.col("_cur_from")))
        .drop("_cur_from")
    )
    # On one date the stored version comes before a new observation.
    order = ["_observed_on", "_rank"]
    timeline = nw.concat(
        [
            current.select(natural, nw.col("valid_from").alias("_observed_on"), *attr_cols, nw.lit(0).cast(nw.Int32).alias("_rank")),
            obs.select(natural, "_observed_on", *attr_cols, nw.lit(1).cast(nw.Int32).alias("_rank")),
        ],
        how="vertical",
    ).with_columns(_attr_string(tracked).alias(_ATTRS))
    timeline = timeline.with_columns(
        (nw.col(_ATTRS) != nw.col(_ATTRS).shift(1).over(natural, order_by=order)).fill_null(True).alias("_opens")
    )
    latest_type1 = obs.unique([natural], keep="last", order_by=["_observed_on"]).select(
        natural, *[nw.col(c).alias(f"{c}_new") for c in type1]
    )
    versions = timeline.filter(nw.col("_opens")).with_columns(
        nw.when((nw.col("_rank") == 0) | ~nw.col("_observed_on").shift(1).over(natural, order_by=order).is_null())
        .then(nw.col("_observed_on"))
        .otherwise(nw.lit(START_OF_HISTORY))
        .alias("valid_from")
    )
    versions = versions.with_columns(
        nw.col("valid_from").shift(-1).over(natural, order_by=order).dt.offset_by("-1d").alias("valid_to")
    ).with_columns(nw.col("valid_to").is_null().alias("is_current"))
    # Current versions take the newest type-1 attributes.
    versions = versions.join(latest_type1, on=natural, how="left").with_columns(
        nw.when(nw.col("is_current")).then(nw.col(f"{c}_new")).otherwise(nw.col(c)).alias(c) for c in type1
    )
    versions = edges(versions).with_surrogate_key(versions, key_column, retailer_id, [natural], "valid_from")
    meta_cols = [c for c in _META if c in have]
    newest = observations.unique([natural], keep="last", order_by=["_observed_on"]).select(natural, *meta_cols)
    versions = versions.join(newest, on=natural, how="left").with_columns(nw.lit(now).alias("_updated_at"))
    have_v = set(versions.collect_schema().names())
    out = versions.select((nw.col(c) if c in have_v else nw.lit(None)).cast(dtype[c]).alias(c) for c in columns)
    if enrich is not None:
        out = enrich(out).select(columns)
    # Only rows that differ from what is stored need writing.
    compare = [c for c in columns if c not in ("_updated_at", "_source_file", "_delivery_id", "_ingested_at")]
    stored = existing.select(key_column, _attr_string(compare).alias("_sig"))
    return out.with_columns(_attr_string(compare).alias("_sig")).join(stored, on=[key_column, "_sig"], how="anti").drop("_sig")


def point_in_time_keys(facts: nw.LazyFrame, dim: nw.LazyFrame, natural: str, key_column: str, date_column: str) -> nw.LazyFrame:
    """Attach the dimension version in force on each fact's date; null when the entity is unknown.

    Versions of an entity are contiguous from `START_OF_HISTORY` to open-ended, so a known
    entity matches exactly one version and the join keeps one row per fact.
    """
    versions = dim.select(natural, key_column, nw.col("valid_from").alias("_vf"), nw.col("valid_to").alias("_vt"))
    if key_column in facts.collect_schema().names():
        facts = facts.drop(key_column)
    single = _single_versions(versions, natural, key_column) if facts.implementation.is_polars() else None
    if single is not None:
        # One version per entity, valid from START_OF_HISTORY on: each fact's key is its entity's,
        # looked up by value instead of joined (a join copies every column of the facts). As the
        # join's filter, a known entity's row dated before its version is dropped.
        ids, keys, dtype = single
        key = nw.col(natural).replace_strict(ids, keys, default=None, return_dtype=dtype)
        known_then = nw.col(date_column) >= nw.lit(START_OF_HISTORY, nw.Date)
        return facts.with_columns(key.alias(key_column)).filter(nw.col(key_column).is_null() | known_then)
    return (
        facts.join(versions, on=natural, how="left")
        .filter(
            nw.col(key_column).is_null()
            | ((nw.col("_vf") <= nw.col(date_column)) & (nw.col("_vt").is_null() | (nw.col(date_column) <= nw.col("_vt"))))
        )
        .drop("_vf", "_vt")
    )


def _single_versions(versions: nw.LazyFrame, natural: str, key_column: str):
    """(entities, their keys, the key's type) when every entity has one version, valid from
    START_OF_HISTORY and open-ended; else None. Read in-process: a dimension is small."""
    frame = versions.collect(backend="polars")
    one_each = frame[natural].n_unique() == len(frame) and frame[natural].null_count() == 0
    if not one_each or frame["_vt"].null_count() != len(frame) or (frame["_vf"] != START_OF_HISTORY).any():
        return None
    return frame[natural].to_list(), frame[key_column].to_list(), frame.schema[key_column]
