"""Source columns -> canonical columns: renaming, typing and row-level rejection. Pure functions on frames."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import polars as pl

from pos_lakehouse.transform.canonical import TABLES, CanonicalTable

# Columns bronze adds to every row; never part of the retailer's own data.
BRONZE_METADATA = ("_source_file", "_delivery_id", "_ingested_at", "_row_number", "data_provider_code", "secure_group_key")
ERROR_COLUMN = "_errors"


def normalize_name(name: str) -> str:
    """Case- and whitespace-insensitive column identity: ` Sales Units ` == `salesunits`."""
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def resolve_columns(source_columns: Sequence[str], mapping: Mapping[str, str], holds: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Which source column becomes which canonical column, and which are extra.

    A source column maps if the YAML maps it (matched case/whitespace-insensitively) or if it
    already carries a canonical name of a table the file holds.
    """
    by_norm = {normalize_name(k): v for k, v in mapping.items()}
    canonical_names = {c.name for t in holds for c in TABLES[t].columns}
    canonical_by_norm = {normalize_name(c): c for c in canonical_names}
    renames: dict[str, str] = {}
    extras: list[str] = []
    for col in source_columns:
        if col in BRONZE_METADATA:
            continue
        target = by_norm.get(normalize_name(col)) or canonical_by_norm.get(normalize_name(col))
        if target and target not in renames.values():
            renames[col] = target
        else:
            extras.append(col)
    return renames, extras


def missing_required(renames: Mapping[str, str], holds: Sequence[str]) -> list[str]:
    present = set(renames.values())
    missing = []
    for t in holds:
        for c in TABLES[t].source_columns:
            if c.required and c.name not in present and c.name not in missing:
                missing.append(c.name)
    return missing


def _number(expr: pl.Expr, decimal_comma: bool) -> pl.Expr:
    cleaned = expr.str.strip_chars().str.replace_all(r"[\s\u00a0']", "")
    if decimal_comma:
        cleaned = cleaned.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)
    return cleaned


def _typed(name: str, dtype: pl.DataType, decimal_comma: bool, date_formats: Sequence[str]) -> tuple[pl.Expr, pl.Expr]:
    """(typed value, error message or null) for one canonical column held as a string."""
    raw = pl.col(name).str.strip_chars()
    present = raw.is_not_null() & (raw != "")
    if dtype == pl.Date:
        candidates = [raw.str.to_date(fmt, strict=False) for fmt in date_formats]
        # Timestamps such as `2026-01-05 00:00:00` (Parquet dates arrive as strings) parse to their date.
        candidates.append(raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
        value = pl.coalesce(candidates)
    elif dtype == pl.String:
        return pl.when(present).then(raw).otherwise(None).alias(name), pl.lit(None, pl.String)
    elif isinstance(dtype, (pl.Decimal, pl.Float64, pl.Int64)):
        value = _number(pl.col(name), decimal_comma).cast(pl.Float64 if dtype == pl.Int64 else dtype, strict=False)
        if dtype == pl.Int64:
            value = value.cast(pl.Int64, strict=False)
    elif dtype == pl.Boolean:
        value = raw.str.to_lowercase().replace_strict({"true": True, "1": True, "y": True, "false": False, "0": False, "n": False}, default=None, return_dtype=pl.Boolean)
    else:
        value = raw.cast(dtype, strict=False)
    error = pl.when(present & value.is_null()).then(pl.format(f"{name}: cannot parse {{}} as {dtype}", raw))
    return pl.when(present).then(value).otherwise(None).alias(name), error


def to_canonical(
    raw: pl.LazyFrame,
    mapping: Mapping[str, str],
    holds: Sequence[str],
    *,
    decimal_comma: bool = False,
    date_formats: Sequence[str] = ("%Y-%m-%d",),
    checked: Sequence[str] | None = None,
) -> pl.LazyFrame:
    """Rename to canonical names, type every canonical column, and explain failures in `_errors`.

    Rows keep all their values; `_errors` is null for good rows and lists every failed rule
    (unparseable value, missing required value) for bad ones, so the caller can quarantine them.
    `checked` limits the rules to some of the held tables (a one-big-table row whose sales
    value is broken still describes its product correctly).
    Source columns beyond the model are kept as a JSON object in `extra_attributes`.
    """
    names = raw.collect_schema().names()
    renames, extras = resolve_columns(names, mapping, holds)
    lf = raw.rename(renames)
    if extras:
        lf = lf.with_columns(
            pl.struct([pl.col(c) for c in extras]).struct.json_encode().alias("extra_attributes")
        ).drop(extras)
    present = set(renames.values())
    typed, errors = [], []
    seen = set()
    checked_columns = {c.name for t in (checked or holds) for c in TABLES[t].source_columns}
    for t in holds:
        for col in TABLES[t].source_columns:
            if col.name in seen or col.name not in present:
                continue
            seen.add(col.name)
            value, error = _typed(col.name, col.dtype, decimal_comma, date_formats)
            typed.append(value)
            if col.name not in checked_columns:
                continue
            errors.append(error)
            if col.required:
                errors.append(
                    pl.when(pl.col(col.name).is_null() | (pl.col(col.name).str.strip_chars() == "")).then(
                        pl.lit(f"{col.name}: required value is missing")
                    )
                )
    error_expr = pl.concat_str(errors, separator="; ", ignore_nulls=True) if errors else pl.lit(None, pl.String)
    error_expr = pl.when(error_expr != "").then(error_expr).otherwise(None)
    return lf.with_columns(error_expr.alias(ERROR_COLUMN)).with_columns(typed)


def prefix_ids(lf: pl.LazyFrame, retailer_id: int) -> pl.LazyFrame:
    """Natural ids become retailer-scoped: `ABC` from retailer 1001 is `1001_ABC`."""
    cols = [c for c in ("prod_id", "site_id") if c in lf.collect_schema().names()]
    return lf.with_columns([(pl.lit(f"{retailer_id}_") + pl.col(c)).alias(c) for c in cols])


def conform(lf: pl.LazyFrame, table: CanonicalTable) -> pl.LazyFrame:
    """Exactly the table's columns, in order and type; absent ones null."""
    have = lf.collect_schema()
    return lf.select(
        [
            (pl.col(c.name).cast(c.dtype) if c.name in have else pl.lit(None, c.dtype)).alias(c.name)
            for c in table.columns
        ]
    )
