"""Slowly changing dimensions (type 2): versions from observations. Pure functions on frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta

import polars as pl

from pos_lakehouse.transform.canonical import CanonicalTable
from pos_lakehouse.transform.keys import surrogate_key_expr

# New entities are valid from the start of history, so facts older than the first
# delivery that mentions them still find a version.
START_OF_HISTORY = date(1900, 1, 1)
_ATTRS = "_tracked"
_ALL = "_all_attrs"


def _attr_string(columns: Sequence[str]) -> pl.Expr:
    if not columns:
        return pl.lit("")
    return pl.concat_str([pl.col(c).cast(pl.String).fill_null("\u2205") for c in columns], separator="\u241f")


def dim_observations(lf: pl.LazyFrame, table: CanonicalTable, observed_on: str) -> pl.LazyFrame:
    """One row per entity and observation date (the last one wins) with the table's attributes."""
    key = table.natural_keys[0]
    have = lf.collect_schema().names()
    attrs = [c.name for c in table.source_columns if c.name in have and c.name != key]
    extra = ["extra_attributes"] if "extra_attributes" in have else []
    meta = [c for c in ("data_provider_code", "secure_group_key", "_source_file", "_delivery_id", "_ingested_at") if c in have]
    return (
        lf.filter(pl.col(key).is_not_null())
        .select([key, pl.col(observed_on).alias("_observed_on"), *attrs, *extra, *meta])
        .unique(subset=[key, "_observed_on"], keep="last", maintain_order=True)
    )


def scd2_versions(
    observations: pl.DataFrame,
    existing: pl.DataFrame,
    table: CanonicalTable,
    tracked: Sequence[str],
    retailer_id: int,
    key_column: str,
    now,
    enrich: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """Rows to upsert so the dimension reflects `observations`.

    - a change of a tracked attribute opens a version valid from the observation date and
      closes the previous one the day before;
    - an unchanged re-delivery yields no rows;
    - other attributes are updated in place on the current version (type 1);
    - a new entity's first version is valid from `START_OF_HISTORY`.
    Observations older than the entity's current version are ignored (late arrivals do not rewrite history).
    `enrich` adds derived attributes (corporate master) before comparing with what is stored.
    """
    natural = table.natural_keys[0]
    if observations.is_empty():
        return existing.clear()
    columns = [c.name for c in table.columns]
    attr_cols = [c.name for c in table.source_columns if c.name != natural] + ["extra_attributes"]
    tracked = [t for t in tracked if t in attr_cols]
    type1 = [c for c in attr_cols if c not in tracked]

    current = existing.filter(pl.col("is_current")).filter(pl.col(natural).is_in(observations[natural].implode()))
    absent = [c for c in attr_cols if c not in observations.columns]
    obs = observations.with_columns([pl.lit(None, table.column(c).dtype).alias(c) for c in absent])
    if absent and not current.is_empty():
        # A delivery without a column says nothing about it (e.g. no extra columns this time):
        # the stored value stands instead of being reset to null on every row.
        obs = obs.drop(absent).join(current.select(natural, *absent), on=natural, how="left")
    # Late observations (before the current version started) cannot reopen history.
    if not current.is_empty():
        obs = obs.join(current.select(natural, pl.col("valid_from").alias("_cur_from")), on=natural, how="left").filter(
            pl.col("_cur_from").is_null() | (pl.col("_observed_on") >= pl.col("_cur_from"))
        ).drop("_cur_from")

    timeline = pl.concat(
        [
            current.select(natural, pl.col("valid_from").alias("_observed_on"), *attr_cols, pl.lit(True).alias("_existing")),
            obs.select(natural, "_observed_on", *attr_cols, pl.lit(False).alias("_existing")),
        ],
        how="diagonal_relaxed",
    ).sort([natural, "_observed_on", "_existing"], descending=[False, False, True])
    timeline = timeline.with_columns(_attr_string(tracked).alias(_ATTRS))
    timeline = timeline.with_columns(
        (pl.col(_ATTRS) != pl.col(_ATTRS).shift(1).over(natural)).fill_null(True).alias("_opens")
    )
    # Latest type-1 values per entity (from the newest observation).
    latest_type1 = (
        obs.sort("_observed_on").group_by(natural, maintain_order=True).last().select(natural, *type1)
    )
    versions = timeline.filter(pl.col("_opens")).with_columns(
        pl.when(pl.col("_existing") | (pl.int_range(pl.len()).over(natural) > 0))
        .then(pl.col("_observed_on"))
        .otherwise(pl.lit(START_OF_HISTORY))
        .alias("valid_from")
    )
    versions = versions.with_columns(
        (pl.col("valid_from").shift(-1).over(natural) - timedelta(days=1)).alias("valid_to"),
    ).with_columns(pl.col("valid_to").is_null().alias("is_current"))
    # Current versions take the newest type-1 attributes.
    versions = versions.join(latest_type1, on=natural, how="left", suffix="_new").with_columns(
        [
            pl.when(pl.col("is_current")).then(pl.col(f"{c}_new")).otherwise(pl.col(c)).alias(c)
            for c in type1
        ]
    )
    versions = versions.with_columns(surrogate_key_expr(retailer_id, [natural], "valid_from").alias(key_column))
    meta_src = observations.sort("_observed_on").group_by(natural, maintain_order=True).last()
    meta_cols = [c for c in ("data_provider_code", "secure_group_key", "_source_file", "_delivery_id", "_ingested_at") if c in meta_src.columns]
    versions = versions.join(meta_src.select(natural, *meta_cols), on=natural, how="left")
    versions = versions.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_updated_at"))
    out = versions.select(
        [
            (pl.col(c) if c in versions.columns else pl.lit(None)).cast(table.column(c).dtype).alias(c)
            for c in columns
        ]
    )
    if enrich is not None:
        out = enrich(out).select(columns)
    # Only rows that differ from what is stored need writing.
    if existing.is_empty():
        return out
    compare = [c for c in columns if c not in ("_updated_at", "_source_file", "_delivery_id", "_ingested_at")]
    stored = existing.select(compare).with_columns(_attr_string(compare).alias("_sig"))
    return (
        out.with_columns(_attr_string(compare).alias("_sig"))
        .join(stored.select(key_column, "_sig"), on=[key_column, "_sig"], how="anti")
        .drop("_sig")
    )


def point_in_time_keys(
    facts: pl.LazyFrame, dim: pl.LazyFrame, natural: str, key_column: str, date_column: str
) -> pl.LazyFrame:
    """Attach the dimension version in force on each fact's date; null when the entity is unknown.

    Versions of an entity are contiguous from `START_OF_HISTORY` to open-ended, so a known
    entity matches exactly one version and the join keeps one row per fact.
    """
    versions = dim.select(natural, key_column, pl.col("valid_from").alias("_vf"), pl.col("valid_to").alias("_vt"))
    return (
        facts.drop(key_column, strict=False)
        .join(versions, on=natural, how="left")
        .filter(
            pl.col(key_column).is_null()
            | ((pl.col("_vf") <= pl.col(date_column)) & (pl.col("_vt").is_null() | (pl.col(date_column) <= pl.col("_vt"))))
        )
        .drop("_vf", "_vt")
    )
