"""The transforms of `transform/*.py` in PySpark, function for function, so parity is reviewable.

Each function names its Polars twin. Where Polars relies on row order (``keep="last"``, ``last()``),
the Spark version orders explicitly by the same thing Polars reads in: bronze data file, then row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import polars as pl
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pos_lakehouse.spark.lake import FILE_PATH, FILE_ROW
from pos_lakehouse.spark.types import spark_type
from pos_lakehouse.transform import measures as pm
from pos_lakehouse.transform.canonical import MONEY, QUANTITY, TABLES, CanonicalTable
from pos_lakehouse.transform.keys import SEED
from pos_lakehouse.transform.mapping import BRONZE_METADATA, ERROR_COLUMN, resolve_columns
from pos_lakehouse.transform.scd2 import START_OF_HISTORY

ORDER_COLUMNS = (FILE_PATH, FILE_ROW)
# Polars `str.strip_chars()` strips Unicode white space; Java regexes need (?U) for that.
_EDGE_SPACE = r"(?U)^\s+|\s+$"
_INNER_SPACE = r"(?U)[\s\u00a0']"
_TRUE = ("true", "1", "y")
_FALSE = ("false", "0", "n")
assert SEED == 42, "Spark's xxhash64 uses seed 42; transform/keys.py must too"


def col(name: str) -> Column:
    """A column by exact name (names may hold spaces or dots)."""
    return F.col("`" + name.replace("`", "``") + "`")


def strip(c: Column) -> Column:
    return F.regexp_replace(c, _EDGE_SPACE, "")


# ---- transform/mapping.py ----------------------------------------------------------------------
def strftime_to_java(fmt: str) -> str:
    """`%d.%m.%Y` -> `d.M.y`: chrono's lenient widths (`9` or `09`) map to single pattern letters."""
    tokens = {"Y": "y", "y": "yy", "m": "M", "d": "d", "e": "d", "b": "MMM", "B": "MMMM", "H": "H", "M": "m", "S": "s", "j": "D"}
    out, i = [], 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%" and i + 1 < len(fmt):
            out.append(tokens.get(fmt[i + 1], fmt[i + 1]))
            i += 2
            continue
        out.append(f"'{ch}'" if ch.isalpha() else ("''" if ch == "'" else ch))
        i += 1
    return "".join(out)


def _number(c: Column, decimal_comma: bool) -> Column:
    """mapping._number: thousands separators and spaces out; decimal comma to point (first comma only)."""
    cleaned = F.regexp_replace(strip(c), _INNER_SPACE, "")
    if decimal_comma:
        cleaned = F.regexp_replace(F.regexp_replace(cleaned, r"\.", ""), r"^([^,]*),", "$1.")
    return cleaned


def _typed(name: str, dtype: pl.DataType, decimal_comma: bool, date_formats: Sequence[str]) -> tuple[Column, Column | None]:
    """mapping._typed: (typed value, error message or null) for one canonical column held as a string."""
    raw = strip(col(name))
    present = raw.isNotNull() & (raw != "")
    if dtype == pl.Date:
        candidates = [F.try_to_date(raw, strftime_to_java(fmt)) for fmt in date_formats]
        candidates.append(F.try_to_date(F.substring(raw, 1, 10), "y-M-d"))
        value = F.coalesce(*candidates)
    elif dtype == pl.String:
        return F.when(present, raw), None
    elif isinstance(dtype, (pl.Decimal, pl.Float64, pl.Int64)):
        number = _number(col(name), decimal_comma)
        if dtype == pl.Int64:
            value = number.try_cast("double").try_cast("bigint")
        else:
            value = number.try_cast(spark_type(dtype))
    elif dtype == pl.Boolean:
        low = F.lower(raw)
        value = F.when(low.isin(*_TRUE), F.lit(True)).when(low.isin(*_FALSE), F.lit(False))
    else:
        value = raw.try_cast(spark_type(dtype))
    error = F.when(present & value.isNull(), F.concat(F.lit(f"{name}: cannot parse "), raw, F.lit(f" as {dtype}")))
    return F.when(present, value), error


def to_canonical(
    raw: DataFrame,
    mapping: Mapping[str, str],
    holds: Sequence[str],
    *,
    decimal_comma: bool = False,
    date_formats: Sequence[str] = ("%Y-%m-%d",),
    checked: Sequence[str] | None = None,
) -> DataFrame:
    """mapping.to_canonical: rename, type, explain failures in `_errors`, keep extras as JSON."""
    names = [c for c in raw.columns if c not in ORDER_COLUMNS]
    renames, extras = resolve_columns(names, mapping, holds)
    df = raw.withColumnsRenamed(renames) if renames else raw
    if extras:
        df = df.withColumn(
            "extra_attributes", F.to_json(F.struct(*[col(c) for c in extras]), {"ignoreNullFields": "false"})
        ).drop(*extras)
    present = set(renames.values())
    typed: dict[str, Column] = {}
    errors: list[Column] = []
    seen: set[str] = set()
    checked_columns = {c.name for t in (checked or holds) for c in TABLES[t].source_columns}
    for t in holds:
        for c in TABLES[t].source_columns:
            if c.name in seen or c.name not in present:
                continue
            seen.add(c.name)
            value, error = _typed(c.name, c.dtype, decimal_comma, date_formats)
            typed[c.name] = value.cast(spark_type(c.dtype))
            if c.name not in checked_columns:
                continue
            if error is not None:
                errors.append(error)
            if c.required:
                errors.append(F.when(col(c.name).isNull() | (strip(col(c.name)) == ""), F.lit(f"{c.name}: required value is missing")))
    error_expr = F.concat_ws("; ", *errors) if errors else F.lit(None).cast("string")
    error_expr = F.when(error_expr != "", error_expr)
    return df.withColumn(ERROR_COLUMN, error_expr).withColumns(typed)


def prefix_ids(df: DataFrame, retailer_id: int) -> DataFrame:
    """mapping.prefix_ids: `ABC` from retailer 1001 is `1001_ABC`."""
    cols = {c: F.concat(F.lit(f"{retailer_id}_"), F.col(c)) for c in ("prod_id", "site_id") if c in df.columns}
    return df.withColumns(cols) if cols else df


def conform(df: DataFrame, table: CanonicalTable) -> DataFrame:
    """mapping.conform: exactly the table's columns, in order and type; absent ones null."""
    have = set(df.columns)
    return df.select(
        [(F.col(c.name) if c.name in have else F.lit(None)).cast(spark_type(c.dtype)).alias(c.name) for c in table.columns]
    )


# ---- transform/keys.py ---------------------------------------------------------------------------
def surrogate_key_expr(retailer_id: int, natural_keys: Sequence[str], updated_at: str) -> Column:
    """keys.surrogate_key_expr: Spark's xxhash64 (seed 42) of the same UTF-8 text, a signed 64-bit integer."""
    text = F.concat_ws("|", F.lit(str(retailer_id)), *[F.col(k) for k in natural_keys], F.date_format(F.col(updated_at), "yyyy-MM-dd"))
    return F.xxhash64(text)


# ---- transform/scd2.py ---------------------------------------------------------------------------
def _attr_string(columns: Sequence[str]) -> Column:
    if not columns:
        return F.lit("")
    return F.concat_ws("\u241f", *[F.coalesce(F.col(c).cast("string"), F.lit("\u2205")) for c in columns])


def dim_observations(df: DataFrame, table: CanonicalTable, observed_on: str) -> DataFrame:
    """scd2.dim_observations: one row per entity and observation date; the last one read wins."""
    key = table.natural_keys[0]
    have = df.columns
    attrs = [c.name for c in table.source_columns if c.name in have and c.name != key]
    extra = ["extra_attributes"] if "extra_attributes" in have else []
    meta = [c for c in ("data_provider_code", "secure_group_key", "_source_file", "_delivery_id", "_ingested_at") if c in have]
    last_read = Window.partitionBy(key, "_observed_on").orderBy(F.col(FILE_PATH).desc(), F.col(FILE_ROW).desc())
    return (
        df.filter(F.col(key).isNotNull())
        .select(key, F.col(observed_on).alias("_observed_on"), *attrs, *extra, *meta, *ORDER_COLUMNS)
        .withColumn("_rn", F.row_number().over(last_read))
        .filter("_rn = 1")
        .drop("_rn", *ORDER_COLUMNS)
    )


def _newest(df: DataFrame, natural: str) -> DataFrame:
    """`sort("_observed_on").group_by(natural).last()`: each entity's newest observation."""
    w = Window.partitionBy(natural).orderBy(F.col("_observed_on").desc())
    return df.withColumn("_rn", F.row_number().over(w)).filter("_rn = 1").drop("_rn")


def scd2_versions(
    observations: DataFrame,
    existing: DataFrame,
    table: CanonicalTable,
    tracked: Sequence[str],
    retailer_id: int,
    key_column: str,
    now: datetime,
    enrich: Callable[[DataFrame], DataFrame] | None = None,
) -> DataFrame:
    """scd2.scd2_versions: rows to upsert so the dimension reflects `observations` (same rules)."""
    natural = table.natural_keys[0]
    columns = [c.name for c in table.columns]
    attr_cols = [c.name for c in table.source_columns if c.name != natural] + ["extra_attributes"]
    tracked = [t for t in tracked if t in attr_cols]
    type1 = [c for c in attr_cols if c not in tracked]
    typ = {c: spark_type(table.column(c).dtype) for c in columns}

    current = existing.filter("is_current").join(observations.select(natural).distinct(), natural, "left_semi")
    obs = observations.withColumns({c: F.lit(None).cast(typ[c]) for c in attr_cols if c not in observations.columns})
    obs = obs.withColumns({c: F.col(c).cast(typ[c]) for c in attr_cols})
    # Late observations (before the current version started) cannot reopen history.
    obs = (
        obs.join(current.select(natural, F.col("valid_from").alias("_cur_from")), natural, "left")
        .filter(F.col("_cur_from").isNull() | (F.col("_observed_on") >= F.col("_cur_from")))
        .drop("_cur_from")
    )
    timeline = current.select(natural, F.col("valid_from").alias("_observed_on"), *attr_cols, F.lit(True).alias("_existing")).unionByName(
        obs.select(natural, "_observed_on", *attr_cols, F.lit(False).alias("_existing"))
    )
    order = Window.partitionBy(natural).orderBy(F.col("_observed_on").asc(), F.col("_existing").desc())
    timeline = timeline.withColumn("_tracked", _attr_string(tracked))
    timeline = timeline.withColumn("_opens", F.coalesce(F.col("_tracked") != F.lag("_tracked").over(order), F.lit(True)))
    latest_type1 = _newest(obs, natural).select(natural, *[F.col(c).alias(f"{c}_new") for c in type1])
    versions = timeline.filter("_opens").withColumn(
        "valid_from",
        F.when(F.col("_existing") | (F.row_number().over(order) > 1), F.col("_observed_on")).otherwise(F.lit(START_OF_HISTORY)),
    )
    versions = versions.withColumn("valid_to", F.date_sub(F.lead("valid_from").over(order), 1)).withColumn(
        "is_current", F.col("valid_to").isNull()
    )
    # Current versions take the newest type-1 attributes.
    versions = versions.join(latest_type1, natural, "left").withColumns(
        {c: F.when(F.col("is_current"), F.col(f"{c}_new")).otherwise(F.col(c)) for c in type1}
    )
    versions = versions.withColumn(key_column, surrogate_key_expr(retailer_id, [natural], "valid_from"))
    meta_cols = [c for c in ("data_provider_code", "secure_group_key", "_source_file", "_delivery_id", "_ingested_at") if c in observations.columns]
    versions = versions.join(_newest(observations, natural).select(natural, *meta_cols), natural, "left")
    versions = versions.withColumn("_updated_at", F.lit(now).cast("timestamp"))
    out = versions.select([(F.col(c) if c in versions.columns else F.lit(None)).cast(typ[c]).alias(c) for c in columns])
    if enrich is not None:
        out = enrich(out).select(columns)
    # Only rows that differ from what is stored need writing.
    compare = [c for c in columns if c not in ("_updated_at", "_source_file", "_delivery_id", "_ingested_at")]
    stored = existing.select(key_column, _attr_string(compare).alias("_sig"))
    return out.withColumn("_sig", _attr_string(compare)).join(stored, [key_column, "_sig"], "left_anti").drop("_sig")


def point_in_time_keys(facts: DataFrame, dim: DataFrame, natural: str, key_column: str, date_column: str) -> DataFrame:
    """scd2.point_in_time_keys: the dimension version in force on each fact's date; null when unknown."""
    versions = dim.select(natural, key_column, F.col("valid_from").alias("_vf"), F.col("valid_to").alias("_vt"))
    if key_column in facts.columns:
        facts = facts.drop(key_column)
    return (
        facts.join(versions, natural, "left")
        .filter(
            F.col(key_column).isNull()
            | ((F.col("_vf") <= F.col(date_column)) & (F.col("_vt").isNull() | (F.col(date_column) <= F.col("_vt"))))
        )
        .drop("_vf", "_vt")
    )


# ---- transform/measures.py -----------------------------------------------------------------------
def round4(x: Column) -> Column:
    """Polars' `round(4, mode="half_away_from_zero")` on a float: scale, round half away, unscale.

    Spark's `round(x, 4)` rounds the shortest decimal text of `x` instead, which differs on ties:
    233.81754999999998 is 2338175.5 once scaled (Polars: .8176) but rounds to .8175 as text.
    """
    return F.round(x * F.lit(10000.0), 0) / F.lit(10000.0)


def convert_to_usd(facts: DataFrame, fx: DataFrame, date_col: str) -> DataFrame:
    """measures.convert_to_usd: the day's rate for the currency; `*_usd` rounded half away from zero."""
    rates = fx.select(F.col("date").alias(date_col), "currency", F.col("usd_per_unit").alias("fx_rate_to_usd"))
    if "fx_rate_to_usd" in facts.columns:
        facts = facts.drop("fx_rate_to_usd")
    joined = facts.join(rates, [date_col, "currency"], "left")
    return joined.withColumns(
        {
            usd: round4(F.col(lc).cast("double") * F.col("fx_rate_to_usd")).cast(spark_type(MONEY))
            for lc, usd in zip(pm.VALUE_MEASURES, pm.USD_MEASURES)
        }
    )


def period_end(date_col: Column, grain: str, week_ends_on: str = "sunday") -> Column:
    """measures.period_end: last day of the week (ending on `week_ends_on`) or month."""
    if grain == "week":
        end_weekday = pm.WEEKDAYS.index(week_ends_on) + 1  # Monday=1 .. Sunday=7, as Polars
        weekday = F.pmod(F.dayofweek(date_col) + 5, 7) + 1  # Spark: Sunday=1 .. Saturday=7
        return F.date_add(date_col, F.pmod(F.lit(end_weekday) - weekday, F.lit(7)).cast("int"))
    if grain == "month":
        return F.last_day(date_col)
    return date_col


def aggregate_period(daily: DataFrame, grain: str, week_ends_on: str = "sunday") -> DataFrame:
    """measures.aggregate_period: flows summed (0 when all null, as Polars), stocks and keys at the period's last day."""
    end_col = "week_end_date" if grain == "week" else "month_end_date"
    flows = [*pm.FLOW_MEASURES, *[u for u in pm.USD_MEASURES if u != "inventory_value_usd"]]
    stocks = [*pm.STOCK_MEASURES, "inventory_value_usd"]
    last_cols = [*stocks, "prod_key", "site_key", "currency", "data_provider_code", "secure_group_key",
                 "_source_file", "_delivery_id", "_ingested_at", "fx_rate_to_usd"]
    day_fact = TABLES["store_day_fact"]
    return (
        daily.withColumn(end_col, period_end(F.col("date"), grain, week_ends_on))
        .groupBy(end_col, "site_id", "prod_id")
        .agg(
            *[F.coalesce(F.sum(m), F.lit(0)).cast(spark_type(day_fact.column(m).dtype)).alias(m) for m in flows],
            *[F.max_by(c, "date").alias(c) for c in last_cols],
        )
    )


def mask(frame: DataFrame, date_col: str, grain: str, measures: Sequence[str]) -> DataFrame:
    """measures.mask: `at_masked_<m>` = mean over the right-closed calendar window, per product and store."""
    if not measures:
        return frame
    if grain in ("day", "week"):
        days = 7 if grain == "day" else 28
        w = Window.partitionBy("prod_id", "site_id").orderBy(F.unix_date(F.col(date_col))).rangeBetween(-(days - 1), 0)
        means = {f"_m_{m}": F.avg(F.col(m).cast("double")).over(w) for m in measures}
        out = frame.withColumns(means)
    else:  # (t - 3 months, t]: calendar months, so a self-join rather than a fixed-width range
        row = ["prod_id", "site_id", date_col]  # unique per row (the table's natural key)
        left = frame
        right = frame.select(
            F.col("prod_id").alias("_p"), F.col("site_id").alias("_s"), F.col(date_col).alias("_d"),
            *[F.col(m).cast("double").alias(f"_v_{m}") for m in measures],
        )
        joined = left.join(
            right,
            (F.col("prod_id") == F.col("_p")) & (F.col("site_id") == F.col("_s"))
            & (F.col("_d") > F.add_months(F.col(date_col), -3)) & (F.col("_d") <= F.col(date_col)),
            "left",
        )
        agg = joined.groupBy(*row).agg(*[F.avg(f"_v_{m}").alias(f"_m_{m}") for m in measures])
        out = left.join(agg, row, "left")
    return out.withColumns(
        {
            f"at_masked_{m}": round4(F.col(f"_m_{m}")).cast(spark_type(MONEY if m.endswith(("_lc", "_usd")) else QUANTITY))
            for m in measures
        }
    ).drop(*[f"_m_{m}" for m in measures])


def typed_null(dtype: pl.DataType) -> Column:
    return F.lit(None).cast(spark_type(dtype))


def empty_like(spark, schema: T.StructType) -> DataFrame:
    return spark.createDataFrame([], schema)


__all__ = [
    "BRONZE_METADATA", "ERROR_COLUMN", "aggregate_period", "col", "conform", "convert_to_usd", "dim_observations",
    "mask", "period_end", "point_in_time_keys", "prefix_ids", "scd2_versions", "strftime_to_java", "surrogate_key_expr",
    "to_canonical",
]
