"""Source columns -> canonical columns: renaming, typing and row-level rejection. Pure functions on frames."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.transform.canonical import TABLES, CanonicalTable

if TYPE_CHECKING:
    import polars as pl

# Columns bronze adds to every row; never part of the retailer's own data.
BRONZE_METADATA = ("_source_file", "_delivery_id", "_ingested_at", "_row_number", "data_provider_code", "secure_group_key")
ERROR_COLUMN = "_errors"
# Where each bronze row was read from (data file, position): the order "last row wins" follows.
ORDER_COLUMNS = ("_file_path", "_file_row")
_PARSE_ERROR = "_parse_error_"
_MISSING = "_missing_"


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


def absent_mapped_columns(source_columns: Sequence[str], mapping: Mapping[str, str]) -> list[tuple[str, str, str | None]]:
    """Mapped source columns a file does not have: (source column, its canonical target, the closest column present).

    A mapped column that is absent would leave its canonical column null while the file's real
    column (a typo away) lands in `extra_attributes`: data lost without a word.
    """
    present = {normalize_name(c): c for c in source_columns if c not in BRONZE_METADATA}
    absent = []
    for source, target in mapping.items():
        if normalize_name(source) in present:
            continue
        close = difflib.get_close_matches(normalize_name(source), list(present), n=1, cutoff=0.6)
        absent.append((source, target, present[close[0]] if close else None))
    return absent


def absent_columns_message(rel: str, kind: str, absent: list[tuple[str, str, str | None]], mapped: int, columns: list[str]) -> str:
    """One line naming each mapped column the file lacks, and the closest column it has."""
    if len(absent) > 2 and len(absent) * 2 > mapped:  # most of them: the file is read wrongly, not misspelled
        names = ", ".join(f"`{source}`" for source, _, _ in absent)
        return (
            f"{len(absent)} of {mapped} columns mapped by columns.{kind} are not in {rel} ({names}); the file has {columns[:12]} "
            f"(check the separator, encoding and header in the file kind's `format`, and `columns.{kind}`)"
        )
    parts = []
    for source, target, close in absent:
        hint = f"; did you mean `{close}`?" if close else ""
        parts.append(f"column `{source}` (mapped to {target} by columns.{kind}) is not in {rel}{hint}")
    return "; ".join(parts)


def missing_required(renames: Mapping[str, str], holds: Sequence[str]) -> list[str]:
    present = set(renames.values())
    missing = []
    for t in holds:
        for c in TABLES[t].source_columns:
            if c.required and c.name not in present and c.name not in missing:
                missing.append(c.name)
    return missing


def to_canonical(
    raw: nw.LazyFrame,
    mapping: Mapping[str, str],
    holds: Sequence[str],
    *,
    decimal_comma: bool = False,
    date_formats: Sequence[str] = ("%Y-%m-%d",),
    checked: Sequence[str] | None = None,
) -> nw.LazyFrame:
    """Rename to canonical names, type every canonical column, and explain failures in `_errors`.

    Rows keep all their values; `_errors` is null for good rows and lists every failed rule
    (unparseable value, missing required value) for bad ones, so the caller can quarantine them.
    `checked` limits the rules to some of the held tables (a one-big-table row whose sales
    value is broken still describes its product correctly).
    Source columns beyond the model are kept as a JSON object in `extra_attributes`.
    """
    engine = edges(raw)
    names = raw.collect_schema().names()
    renames, extras = resolve_columns([c for c in names if c not in ORDER_COLUMNS], mapping, holds)
    lf = raw.rename(renames)
    if extras:
        lf = engine.with_json(lf, extras, "extra_attributes").drop(extras)
    present = set(renames.values())
    columns: dict[str, pl.DataType] = {}
    checked_columns = {c.name for t in (checked or holds) for c in TABLES[t].source_columns}
    errors: list[nw.Expr] = []
    required: list[str] = []
    for t in holds:
        for col in TABLES[t].source_columns:
            if col.name in columns or col.name not in present:
                continue
            columns[col.name] = col.dtype
            if col.name not in checked_columns:
                continue
            errors.append(nw.col(_PARSE_ERROR + col.name))
            if col.required:
                required.append(col.name)
                errors.append(nw.col(_MISSING + col.name))
    # Missing values are judged on the raw text, before typing replaces the column.
    lf = (
        lf.with_columns(
            nw.when(nw.col(c).is_null() | (nw.col(c).str.strip_chars() == ""))
            .then(nw.lit(f"{c}: required value is missing"))
            .otherwise(nw.lit(None, nw.String))
            .alias(_MISSING + c)
            for c in required
        )
        if required
        else lf
    )
    lf = engine.parse_columns(lf, columns, decimal_comma, date_formats, _PARSE_ERROR)
    error_expr = nw.concat_str(errors, separator="; ", ignore_nulls=True) if errors else nw.lit(None, nw.String)
    helpers = [_PARSE_ERROR + c for c in columns] + [_MISSING + c for c in required]
    return lf.with_columns(nw.when(error_expr != "").then(error_expr).otherwise(nw.lit(None, nw.String)).alias(ERROR_COLUMN)).drop(helpers)


def prefix_ids(lf: nw.LazyFrame, retailer_id: int) -> nw.LazyFrame:
    """Natural ids become retailer-scoped: `ABC` from retailer 1001 is `1001_ABC`."""
    cols = [c for c in ("prod_id", "site_id") if c in lf.collect_schema().names()]
    return lf.with_columns(nw.concat_str([nw.lit(f"{retailer_id}_"), nw.col(c)]).alias(c) for c in cols) if cols else lf


def conform(lf: nw.LazyFrame, table: CanonicalTable) -> nw.LazyFrame:
    """Exactly the table's columns, in order and type; absent ones null."""
    have = set(lf.collect_schema().names())
    return lf.select((nw.col(c.name) if c.name in have else nw.lit(None)).cast(c.nw_dtype).alias(c.name) for c in table.columns)
