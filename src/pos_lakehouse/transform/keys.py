"""Surrogate keys that Polars and Spark compute bit for bit alike.

key = xxhash64(seed 42) of `"<retailer id>|<natural key>|...|<updated_at as YYYY-MM-DD>"`,
read as a signed 64-bit integer. Computed on frames by `engines.edges(frame).with_surrogate_key`; Spark's `xxhash64(concat_ws('|', ...))` hashes the same
UTF-8 bytes with the same seed, so both engines agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import xxhash

from pos_lakehouse.engines import SEED


def surrogate_key(retailer_id: int, natural_keys: Sequence[str], updated_at: date) -> int:
    text = "|".join([str(retailer_id), *natural_keys, updated_at.isoformat()])
    unsigned = xxhash.xxh64_intdigest(text.encode("utf-8"), seed=SEED)
    return unsigned - (1 << 64) if unsigned >= (1 << 63) else unsigned
