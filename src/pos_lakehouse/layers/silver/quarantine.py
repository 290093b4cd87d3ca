"""Rows that broke a silver rule: kept with their raw values and every failed rule, counted per rule."""

from __future__ import annotations

import re
from datetime import datetime

import narwhals as nw

from pos_lakehouse.engines import edges
from pos_lakehouse.layers.silver.plan import count, ok
from pos_lakehouse.layers.silver.result import SilverResult
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform.mapping import ERROR_COLUMN

REJECTED_ROWS_TABLE = "rejected_rows"
# A reason without the offending value ("prod_id: unknown" of "prod_id: unknown X as ..."), so
# rows are counted per rule whatever their bad values.
_REASON = re.compile(r"^([^:]+: [a-z ]+?)(?: \S+ as .*)?$")


def quarantine_rows(lake: LakeIO, spec: RetailerSpec, table: str, bad: nw.LazyFrame, raw: nw.LazyFrame, now: datetime) -> dict[str, int]:
    """Keep rejected rows with their raw values and every failed rule; return counts per reason."""
    raw_cols = [c for c in raw.collect_schema().names() if not c.startswith("_") and c not in ("data_provider_code", "secure_group_key")]
    joined = raw.join(bad.select("_delivery_id", "_row_number", ERROR_COLUMN), on=["_delivery_id", "_row_number"], how="inner")
    joined = edges(joined).with_json(joined, raw_cols, "raw_values")
    lake.append(
        lake.quarantine(spec.name, REJECTED_ROWS_TABLE),
        joined.select(
            nw.lit(table).alias("canonical_table"),
            "_source_file",
            "_delivery_id",
            "_row_number",
            nw.col(ERROR_COLUMN).alias("reason"),
            "raw_values",
            nw.lit(now).cast(nw.Datetime("us", "UTC")).alias("rejected_at"),
        ),
        description="Rows that failed a silver rule: which rule, which file and row, and the raw values.",
    )
    counts: dict[str, int] = {}
    per_error = bad.group_by(ERROR_COLUMN).agg(nw.len().alias("n")).collect(backend="polars")
    for errors, n in per_error.iter_rows():
        for error in str(errors).split("; "):
            m = _REASON.match(error)
            reason = m.group(1) if m else "None"
            counts[reason] = counts.get(reason, 0) + int(n)
    return counts


def quarantine_failed(lake: LakeIO, spec: RetailerSpec, table_name: str, rows, raw, now: datetime, result: SilverResult) -> None:
    """Quarantine the rows that broke a rule and count them, per reason, in `result`."""
    bad = rows.filter(~ok()).select("_delivery_id", "_row_number", ERROR_COLUMN)
    n_bad = count(bad)
    result.quarantined += n_bad
    if n_bad:
        for reason, n in quarantine_rows(lake, spec, table_name, bad, raw, now).items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n
