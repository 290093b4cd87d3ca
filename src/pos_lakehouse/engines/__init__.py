"""Per-engine functions that narwhals does not provide, behind one neutral call.

The transforms in `transform/` are written once against narwhals lazy frames. A few steps need
an engine's own function: the xxhash64 surrogate key, non-strict string parsing (narwhals casts
are strict), JSON encoding of a row's columns, half-away-from-zero rounding, and keeping an
intermediate result (Polars: collect it; Spark: cache it). `edges(frame)` returns the module
implementing them for the frame's engine: `engines/polars.py` or `engines/spark.py`; both have
the same functions with the same signatures.
"""

from __future__ import annotations

from types import ModuleType

import narwhals as nw

from pos_lakehouse.engines.seed import SEED as SEED


def edges(frame: nw.LazyFrame) -> ModuleType:
    if frame.implementation.is_pyspark() or frame.implementation.is_pyspark_connect():
        from pos_lakehouse.engines import spark

        return spark
    if frame.implementation.is_polars():
        from pos_lakehouse.engines import polars

        return polars
    raise TypeError(f"no engine functions for {frame.implementation}")
