"""Per-engine functions that narwhals does not provide, behind one neutral call.

The transforms in `transform/` are written once against narwhals lazy frames. A few steps need
an engine's own function: the xxhash64 surrogate key, non-strict string parsing (narwhals casts
are strict), JSON encoding of a row's columns, half-away-from-zero rounding, and keeping an
intermediate result (Polars: collect it; Spark: cache it). `edges(frame)` returns the module
implementing them for the frame's engine: `engines/polars.py` or `engines/spark.py`; both have
the same functions with the same signatures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import narwhals as nw
import polars as pl

from pos_lakehouse.engines.seed import SEED as SEED


class EngineEdges(Protocol):
    """What `engines/polars.py` and `engines/spark.py` both provide (the type checker holds each module to it)."""

    def parse_columns(
        self, frame: nw.LazyFrame, columns: Mapping[str, pl.DataType], decimal_comma: bool, date_formats: Sequence[str], error_prefix: str
    ) -> nw.LazyFrame: ...
    def with_surrogate_key(
        self, frame: nw.LazyFrame, alias: str, retailer_id: int, natural_keys: Sequence[str], date_col: str
    ) -> nw.LazyFrame: ...
    def with_json(self, frame: nw.LazyFrame, columns: Sequence[str], alias: str) -> nw.LazyFrame: ...
    def merge_json(self, frame: nw.LazyFrame, new: str, stored: str, alias: str, retired: Sequence[str] = ()) -> nw.LazyFrame: ...
    def round_half_away(self, frame: nw.LazyFrame, columns: Sequence[str], decimals: int) -> nw.LazyFrame: ...
    def persist(self, frame: nw.LazyFrame) -> nw.LazyFrame: ...
    def release(self, frame: nw.LazyFrame) -> None: ...
    def reuse(self, frame: nw.LazyFrame) -> nw.LazyFrame: ...
    def last_of_groups(
        self, frame: nw.LazyFrame, keys: Sequence[str], order: Sequence[str], file_order: Sequence[str] | None = None
    ) -> nw.LazyFrame | None: ...


def edges(frame: nw.LazyFrame) -> EngineEdges:
    if frame.implementation.is_pyspark() or frame.implementation.is_pyspark_connect():
        from pos_lakehouse.engines import spark

        return spark
    if frame.implementation.is_polars():
        from pos_lakehouse.engines import polars

        return polars
    raise TypeError(f"no engine functions for {frame.implementation}")
