"""Surrogate keys that Polars and Spark compute bit for bit alike.

key = xxhash64(seed 42) of `"<retailer id>|<natural key>|...|<updated_at as YYYY-MM-DD>"`,
read as a signed 64-bit integer. Spark's `xxhash64(concat_ws('|', ...))` hashes the same
UTF-8 bytes with the same seed, so both engines agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl
import xxhash

SEED = 42


def surrogate_key(retailer_id: int, natural_keys: Sequence[str], updated_at: date) -> int:
    text = "|".join([str(retailer_id), *natural_keys, updated_at.isoformat()])
    unsigned = xxhash.xxh64_intdigest(text.encode("utf-8"), seed=SEED)
    return unsigned - (1 << 64) if unsigned >= (1 << 63) else unsigned


def surrogate_key_expr(retailer_id: int, natural_keys: Sequence[str], updated_at: str) -> pl.Expr:
    """Vectorised `surrogate_key` over columns (used on dimension versions, which are few)."""
    text = pl.concat_str(
        [pl.lit(str(retailer_id)), *[pl.col(k) for k in natural_keys], pl.col(updated_at).dt.strftime("%Y-%m-%d")],
        separator="|",
    )

    def _hash(s: pl.Series) -> pl.Series:
        out = []
        for v in s.to_list():
            u = xxhash.xxh64_intdigest(v.encode("utf-8"), seed=SEED)
            out.append(u - (1 << 64) if u >= (1 << 63) else u)
        return pl.Series(s.name, out, dtype=pl.Int64)

    return text.map_batches(_hash, return_dtype=pl.Int64)
