"""The Polars side of `engines.edges`: what narwhals lacks, in Polars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import narwhals as nw
import polars as pl
import xxhash

from pos_lakehouse.engines.seed import SEED


def _native(frame: nw.LazyFrame) -> pl.LazyFrame:
    return frame.to_native()


def _number(expr: pl.Expr, decimal_comma: bool) -> pl.Expr:
    # `\s` is Unicode whitespace, so this also strips what `strip_chars` would.
    cleaned = expr.str.replace_all(r"[\s\u00a0']", "")
    if decimal_comma:
        cleaned = cleaned.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)
    return cleaned


def _parsed(name: str, dtype: pl.DataType, decimal_comma: bool, date_formats: Sequence[str]) -> pl.Expr:
    """The typed value of `pl.col(name)`; null when it is missing, blank or cannot be parsed."""
    raw = pl.col(name).str.strip_chars()
    if dtype == pl.Date:
        candidates = [raw.str.to_date(fmt, strict=False) for fmt in date_formats]
        # Timestamps such as `2026-01-05 00:00:00` (Parquet dates arrive as strings) parse to their date.
        candidates.append(raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
        # Most dates parse as they come, in the first format: only the others are trimmed and tried
        # in every format (trimming never changes a date that parses without it).
        direct = pl.col(name).str.to_date(date_formats[0], strict=False) if date_formats else None
        if direct is None:
            return pl.coalesce(candidates)
        return pl.when(direct.is_null() & pl.col(name).is_not_null()).then(pl.coalesce(candidates)).otherwise(direct)
    if isinstance(dtype, (pl.Decimal, pl.Float64, pl.Int64)):
        target = pl.Float64 if dtype == pl.Int64 else dtype
        value = _number(pl.col(name), decimal_comma).cast(target, strict=False)
        if not decimal_comma:
            # Most values parse as they come; only those that do not are cleaned of spaces and
            # thousands marks first (the regex over every value cost three times the parse).
            # Cleaning never changes a value that parses without it. (With a decimal comma it
            # would: `1.234` is a thousand there, so every value goes through the cleaning.)
            direct = pl.col(name).cast(target, strict=False)
            value = pl.when(direct.is_null() & pl.col(name).is_not_null()).then(value).otherwise(direct)
        return value.cast(pl.Int64, strict=False) if dtype == pl.Int64 else value
    if dtype == pl.Boolean:
        return raw.str.to_lowercase().replace_strict(
            {"true": True, "1": True, "y": True, "false": False, "0": False, "n": False}, default=None, return_dtype=pl.Boolean
        )
    return pl.when(raw != "").then(raw.cast(dtype, strict=False))


def parse_columns(
    frame: nw.LazyFrame, columns: Mapping[str, pl.DataType], decimal_comma: bool, date_formats: Sequence[str], error_prefix: str
) -> nw.LazyFrame:
    """String columns -> typed values (null when unparseable) and `<error_prefix><name>` messages.

    Each value is parsed once, and only values that came out null are looked at again: their raw
    text is kept beside the typed column, and the messages are formatted from that mostly-null
    column (blank text is missing, not unparseable). Building a message for every row, to throw
    it away for the good ones, cost as much as the parsing itself.
    """
    values, typed, failed, messages = [], [], [], []
    for name, dtype in columns.items():
        # Parsed (or trimmed) once into a column of its own, which the failure check or the blank
        # test then reads: an expression written twice was computed twice.
        value = "__typed_" + name
        if dtype == pl.String:
            typed.append(pl.col(name).str.strip_chars().alias(value))
            values.append(pl.when(pl.col(value) != "").then(pl.col(value)).alias(name))
            messages.append(pl.lit(None, pl.String).alias(error_prefix + name))
            continue
        typed.append(_parsed(name, dtype, decimal_comma, date_formats).alias(value))
        failed.append(pl.when(pl.col(value).is_null()).then(pl.col(name)).alias(error_prefix + name))
        values.append(pl.col(value).alias(name))
        text = pl.col(error_prefix + name).str.strip_chars()
        messages.append(pl.when(text != "").then(pl.format(f"{name}: cannot parse {{}} as {dtype}", text)).alias(error_prefix + name))
    scratch = [e.meta.output_name() for e in typed]
    native = _native(frame).with_columns(typed).with_columns(failed).with_columns(values).drop(scratch)
    return nw.from_native(native.with_columns(messages))


def with_surrogate_key(frame: nw.LazyFrame, alias: str, retailer_id: int, natural_keys: Sequence[str], date_col: str) -> nw.LazyFrame:
    """xxhash64 (seed 42) of `"<retailer>|<keys>|<YYYY-MM-DD>"` as a signed 64-bit integer (Spark's xxhash64)."""
    text = pl.concat_str(
        [pl.lit(str(retailer_id)), *[pl.col(k) for k in natural_keys], pl.col(date_col).dt.strftime("%Y-%m-%d")], separator="|"
    )

    def _hash(s: pl.Series) -> pl.Series:
        out = []
        for v in s.to_list():
            u = xxhash.xxh64_intdigest(v.encode("utf-8"), seed=SEED)
            out.append(u - (1 << 64) if u >= (1 << 63) else u)
        return pl.Series(s.name, out, dtype=pl.Int64)

    return nw.from_native(_native(frame).with_columns(text.map_batches(_hash, return_dtype=pl.Int64).alias(alias)))


def with_json(frame: nw.LazyFrame, columns: Sequence[str], alias: str) -> nw.LazyFrame:
    """`alias` = a JSON object of `columns` (nulls kept as `null`)."""
    return nw.from_native(_native(frame).with_columns(pl.struct([pl.col(c) for c in columns]).struct.json_encode().alias(alias)))


def merge_json(frame: nw.LazyFrame, new: str, stored: str, alias: str, retired: Sequence[str] = ()) -> nw.LazyFrame:
    """`alias` = the JSON object `stored` less its `retired` keys, updated with the keys `new` gives a
    value (see `engines.json_objects.merge_objects`); either text verbatim when it already is the result."""
    pair = pl.struct(pl.col(new).alias("new"), pl.col(stored).alias("stored"))
    gone = frozenset(retired)
    merged = pair.map_batches(lambda pairs: _merge_distinct_pairs(pairs, gone), return_dtype=pl.String)
    return nw.from_native(_native(frame).with_columns(merged.alias(alias)))


def _merge_distinct_pairs(pairs: pl.Series, retired: frozenset[str]) -> pl.Series:
    """`merge_objects` of each (new, stored) pair, run once per distinct pair: a dimension's
    observations (an entity per day) repeat the same few texts, and the Python call per row cost
    more than the rest of the versions together."""
    from pos_lakehouse.engines.json_objects import merge_objects

    rows = pairs.struct.unnest()
    distinct = rows.unique()
    merged = [merge_objects(n, s, retired) for n, s in distinct.select("new", "stored").iter_rows()]
    lookup = distinct.with_columns(pl.Series("_merged", merged, dtype=pl.String))
    out = rows.join(lookup, on=["new", "stored"], how="left", nulls_equal=True, maintain_order="left")
    return out["_merged"].alias(pairs.name)


def round_half_away(frame: nw.LazyFrame, columns: Sequence[str], decimals: int) -> nw.LazyFrame:
    """Float columns rounded half away from zero (as Spark's round on the scaled value)."""
    return nw.from_native(
        _native(frame).with_columns([pl.col(c).cast(pl.Float64).round(decimals, mode="half_away_from_zero") for c in columns])
    )


def persist(frame: nw.LazyFrame) -> nw.LazyFrame:
    """Compute once, reuse: the result is read several times (counts, quarantine, MERGE source).

    Made contiguous: the streaming engine hands back hundreds of chunks, and every later gather,
    join or per-day file write over a chunked frame cost more than the one copy (a period table's
    write at 1.5M rows: 1.1 -> 0.6 CPU-s, the copy 0.06)."""
    return nw.from_native(_native(frame).collect(engine="streaming").rechunk().lazy())


def release(frame: nw.LazyFrame) -> None:
    """Nothing to free: a collected Polars frame goes with its last reference."""


def reuse(frame: nw.LazyFrame) -> nw.LazyFrame:
    """A wide frame read a few times: Polars re-runs the lazy query (cheaper than holding it)."""
    return frame


# Rows are ordered by (data file, row in it); one integer key holds both: the file's rank times
# this, plus the row (a Polars row index is a UInt32, always below it).
_ROW_SPAN = 1 << 32
_INTEGERS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


def last_of_groups(
    frame: nw.LazyFrame, keys: Sequence[str], order: Sequence[str], file_order: Sequence[str] | None = None
) -> nw.LazyFrame | None:
    """The row of each `keys` group with the greatest `order`, or None when `order` is not of the
    shape handled here: an optional small non-negative integer (a batch), a string (the data
    file), an unsigned row number; unique per row. `file_order` (every data file, in the order
    they were read) replaces the comparison of the file names.

    A grouped maximum of one integer key ((batch, file rank) then row) finds the winners; the frame
    is then filtered to them. Over millions of rows this costs a fraction of windows over the keys
    (which join every row back to its group) or of a sort.
    """
    lf = _native(frame)
    schema = lf.collect_schema()
    *lead, first, second = order
    if len(lead) > 1 or schema.get(first) != pl.String or schema.get(second) not in (pl.UInt32, pl.UInt16, pl.UInt8):
        return None
    if lead and schema.get(lead[0]) not in _INTEGERS:
        return None
    if file_order is not None:
        if lead:
            return None
        values = pl.Series(first, list(file_order), dtype=pl.String)
        rank = pl.col(first).cast(pl.Enum(values.to_list())).to_physical().cast(pl.Int64)
        span = len(values) + 1
        return _last_by_rank(lf, keys, first, second, rank, values, span)
    pairs = lf.select(*lead, first).unique().drop_nulls().collect(engine="streaming")
    if not lead:
        values = pairs[first].sort()
        rank = pl.col(first).cast(pl.Enum(values.to_list())).to_physical().cast(pl.Int64)
    else:
        # (batch, file rank) as one number: batch times the number of files, plus the rank.
        values = pairs[first].unique().sort()
        lowest, highest = pairs[lead[0]].min(), pairs[lead[0]].max()  # integers: the batch column
        if lowest < 0 or (highest + 1) * (len(values) + 1) >= 1 << 31:  # pyright: ignore[reportOperatorIssue]
            return None
        file_rank = pl.col(first).cast(pl.Enum(values.to_list())).to_physical().cast(pl.Int64)
        rank = pl.col(lead[0]).cast(pl.Int64) * (len(values) + 1) + file_rank
    span = len(values) + 1
    return _last_by_rank(lf, keys, first, second, rank, values, span)


def _last_by_rank(
    lf: pl.LazyFrame, keys: Sequence[str], first: str, second: str, rank: pl.Expr, values: pl.Series, span: int
) -> nw.LazyFrame:
    """Rows of `lf` with the greatest (`rank`, `second`) per `keys`; `rank` % `span` indexes `values` (of `first`)."""
    schema = lf.collect_schema()
    ranks = pl.DataFrame({first: values}).with_row_index("_rank").with_columns(pl.col("_rank").cast(pl.Int64))
    winners = (
        lf.group_by(keys)
        .agg((rank * _ROW_SPAN + pl.col(second).cast(pl.Int64)).max().alias("_ordinal"))
        .select(
            (pl.col("_ordinal") // _ROW_SPAN % span).alias("_rank"), (pl.col("_ordinal") % _ROW_SPAN).cast(schema[second]).alias(second)
        )
        .drop_nulls()
        .join(ranks.lazy(), on="_rank")
        .select(first, second)
        .collect(engine="streaming")
    )
    # The row filter first (it reaches the scan), the exact (file, row) pairs after.
    kept = lf.filter(pl.col(second).is_in(winners[second].unique().implode())).join(winners.lazy(), on=[first, second], how="semi")
    return nw.from_native(kept)
