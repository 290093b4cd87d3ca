"""Polars dtypes of the canonical model as Spark types (one model, two engines)."""

from __future__ import annotations

import polars as pl
from pyspark.sql import types as T


def spark_type(dtype: pl.DataType) -> T.DataType:
    if isinstance(dtype, pl.Decimal):
        return T.DecimalType(dtype.precision or 38, dtype.scale or 0)
    if isinstance(dtype, pl.Datetime):
        return T.TimestampType()
    simple = {
        pl.String: T.StringType(),
        pl.Int64: T.LongType(),
        pl.Int32: T.IntegerType(),
        pl.Float64: T.DoubleType(),
        pl.Boolean: T.BooleanType(),
        pl.Date: T.DateType(),
    }
    for pl_type, sp_type in simple.items():
        if dtype == pl_type:
            return sp_type
    raise TypeError(f"no Spark type for Polars {dtype}")


def spark_schema(schema: pl.Schema) -> T.StructType:
    return T.StructType([T.StructField(name, spark_type(dtype), True) for name, dtype in schema.items()])
