"""The Spark side of `engines.edges`: what narwhals lacks, in PySpark (same functions as `engines/polars.py`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import narwhals as nw
import polars as pl
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pos_lakehouse.engines.seed import SEED
from pos_lakehouse.storage.interface import sql_name

# Polars `str.strip_chars()` strips Unicode white space; Java regexes need (?U) for that.
_EDGE_SPACE = r"(?U)^\s+|\s+$"
_INNER_SPACE = r"(?U)[\s\u00a0']"
_TRUE = ("true", "1", "y")
_FALSE = ("false", "0", "n")
assert SEED == 42, "Spark's xxhash64 uses seed 42; engines.SEED must too"


def spark_type(dtype: pl.DataType) -> T.DataType:
    """The canonical model's Polars dtypes as Spark types (one model, two engines)."""
    if isinstance(dtype, pl.Decimal):
        return T.DecimalType(dtype.precision or 38, dtype.scale or 0)
    simple = {pl.String: T.StringType(), pl.Int64: T.LongType(), pl.Int32: T.IntegerType(), pl.Float64: T.DoubleType()}
    simple |= {pl.Boolean: T.BooleanType(), pl.Date: T.DateType(), pl.Datetime: T.TimestampType()}
    for pl_type, sp_type in simple.items():
        if dtype == pl_type:  # a class matches its parametrised instances (any Datetime)
            return sp_type
    raise TypeError(f"no Spark type for Polars {dtype}")


def spark_schema(schema: pl.Schema) -> T.StructType:
    return T.StructType([T.StructField(name, spark_type(dtype), True) for name, dtype in schema.items()])


def col(name: str) -> Column:
    """A column by exact name (names may hold spaces or dots)."""
    return F.col(sql_name(name))


def _strip(c: Column) -> Column:
    return F.regexp_replace(c, _EDGE_SPACE, "")


def strftime_to_java(fmt: str) -> str:
    """`%d.%m.%Y` -> `d.M.y`: chrono's lenient widths (`9` or `09`) map to single pattern letters; other letters are quoted."""
    tokens = {"Y": "y", "y": "yy", "m": "M", "d": "d", "e": "d", "b": "MMM", "B": "MMMM", "H": "H", "M": "m", "S": "s", "j": "D"}
    return re.sub(r"%(.)|([^\W\d_])|'", lambda m: tokens.get(m[1], m[1]) if m[1] else f"'{m[2]}'" if m[2] else "''", fmt)


def _number(c: Column, decimal_comma: bool) -> Column:
    cleaned = F.regexp_replace(_strip(c), _INNER_SPACE, "")
    if decimal_comma:
        cleaned = F.regexp_replace(F.regexp_replace(cleaned, r"\.", ""), r"^([^,]*),", "$1.")
    return cleaned


def _typed(name: str, dtype: pl.DataType, decimal_comma: bool, date_formats: Sequence[str]) -> tuple[Column, Column]:
    raw = _strip(col(name))
    present = raw.isNotNull() & (raw != "")
    if dtype == pl.Date:
        candidates = [F.try_to_date(raw, strftime_to_java(fmt)) for fmt in date_formats]
        candidates.append(F.try_to_date(F.substring(raw, 1, 10), "y-M-d"))
        value = F.coalesce(*candidates)
    elif dtype == pl.String:
        return F.when(present, raw), F.lit(None).cast("string")
    elif isinstance(dtype, (pl.Decimal, pl.Float64, pl.Int64)):
        number = _number(col(name), decimal_comma)
        value = number.try_cast("double").try_cast("bigint") if dtype == pl.Int64 else number.try_cast(spark_type(dtype))
    elif dtype == pl.Boolean:
        low = F.lower(raw)
        value = F.when(low.isin(*_TRUE), F.lit(True)).when(low.isin(*_FALSE), F.lit(False))
    else:
        value = raw.try_cast(spark_type(dtype))
    error = F.when(present & value.isNull(), F.concat(F.lit(f"{name}: cannot parse "), raw, F.lit(f" as {dtype}")))
    return F.when(present, value).cast(spark_type(dtype)), error


def parse_columns(
    frame: nw.LazyFrame, columns: Mapping[str, pl.DataType], decimal_comma: bool, date_formats: Sequence[str], error_prefix: str
) -> nw.LazyFrame:
    typed = {name: _typed(name, dtype, decimal_comma, date_formats) for name, dtype in columns.items()}
    df = frame.to_native().withColumns({error_prefix + n: e for n, (_, e) in typed.items()})
    return nw.from_native(df.withColumns({n: v for n, (v, _) in typed.items()}))


def with_surrogate_key(frame: nw.LazyFrame, alias: str, retailer_id: int, natural_keys: Sequence[str], date_col: str) -> nw.LazyFrame:
    """Spark's xxhash64 (seed 42) of the same UTF-8 text as the Polars side: bit for bit the same keys."""
    text = F.concat_ws("|", F.lit(str(retailer_id)), *[F.col(k) for k in natural_keys], F.date_format(F.col(date_col), "yyyy-MM-dd"))
    return nw.from_native(frame.to_native().withColumn(alias, F.xxhash64(text)))


def with_json(frame: nw.LazyFrame, columns: Sequence[str], alias: str) -> nw.LazyFrame:
    return nw.from_native(
        frame.to_native().withColumn(alias, F.to_json(F.struct(*[col(c) for c in columns]), {"ignoreNullFields": "false"}))
    )


def merge_json(frame: nw.LazyFrame, new: str, stored: str, alias: str, retired: Sequence[str] = ()) -> nw.LazyFrame:
    """The Polars side's merge (`engines.json_objects.merge_objects`) in Spark's own functions:
    either text verbatim when it already is the result; a merged object is written with its values
    as JSON strings (Spark reads the objects as string maps), where the Polars side keeps numbers."""
    as_map = T.MapType(T.StringType(), T.StringType())
    given = F.from_json(F.col(new), as_map)  # pyright: ignore[reportArgumentType] -- pyspark's stub omits MapType, which Spark accepts
    valued = F.map_filter(given, lambda k, v: v.isNotNull())
    everything = F.coalesce(F.from_json(F.col(stored), as_map), F.create_map().cast(as_map))  # pyright: ignore[reportArgumentType] -- as above
    old = F.map_filter(everything, lambda k, v: ~F.array_contains(F.array(*[F.lit(r) for r in retired]), k)) if retired else everything
    retiring = F.size(old) < F.size(everything)
    kept = F.map_filter(old, lambda k, v: ~F.array_contains(F.map_keys(valued), k))
    same = F.forall(F.map_keys(valued), lambda k: F.coalesce(old[k] == valued[k], F.lit(False)))
    nothing_given = F.col(new).isNull() | (F.size(valued) == 0)
    merged = (
        F.when(nothing_given & retiring, F.when(F.size(old) == 0, F.lit(None)).otherwise(F.to_json(old)))
        .when(nothing_given, F.col(stored))
        .when(F.col(stored).isNotNull() & same & ~retiring, F.col(stored))
        .when((F.size(kept) == 0) & (F.size(valued) == F.size(given)), F.col(new))
        .otherwise(F.to_json(F.map_concat(kept, valued)))
    )
    return nw.from_native(frame.to_native().withColumn(alias, merged))


def round_half_away(frame: nw.LazyFrame, columns: Sequence[str], decimals: int) -> nw.LazyFrame:
    """Polars' `round(n, mode="half_away_from_zero")` on a float: scale, round half away, unscale.

    Spark's `round(x, 4)` rounds the shortest decimal text of `x` instead, which differs on ties:
    233.81754999999998 is 2338175.5 once scaled (Polars: .8176) but rounds to .8175 as text.
    """
    scale = F.lit(float(10**decimals))
    return nw.from_native(frame.to_native().withColumns({c: F.round(F.col(c).cast("double") * scale, 0) / scale for c in columns}))


def persist(frame: nw.LazyFrame) -> nw.LazyFrame:
    return nw.from_native(frame.to_native().cache())


def release(frame: nw.LazyFrame) -> None:
    frame.to_native().unpersist()


reuse = persist


def last_of_groups(
    frame: nw.LazyFrame, keys: Sequence[str], order: Sequence[str], file_order: Sequence[str] | None = None
) -> nw.LazyFrame | None:
    """The row of each `keys` group with the greatest `order` (compared column by column; unique
    per row): a grouped maximum of the order as a struct, then a semi-join to the winners.
    `file_order` (every data file, in the order read) ranks the file column (`order[-2]`) instead
    of its name."""
    df = frame.to_native()
    fields = [col(c).alias(c) for c in order]
    if file_order is not None:
        ranks = F.create_map(*[F.lit(v) for i, path in enumerate(file_order) for v in (path, i)])
        fields[-2] = ranks[col(order[-2])].alias("_file_rank")
        fields.append(col(order[-2]).alias(order[-2]))
    last = df.groupBy(*[col(k) for k in keys]).agg(F.max(F.struct(*fields)).alias("_last"))
    winners = last.select(*[F.col("_last").getField(c).alias(c) for c in order]).where(F.col("_last").isNotNull())
    return nw.from_native(df.join(winners, on=list(order), how="left_semi"))
