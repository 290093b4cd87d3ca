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


def quarantine_rows(
    lake: LakeIO, spec: RetailerSpec, table: str, bad: nw.LazyFrame, raw: nw.LazyFrame, now: datetime, per_error=None
) -> dict[str, int]:
    """Keep rejected rows with their raw values and every failed rule; return counts per reason.

    `per_error` (a Polars frame of `_errors` and `n`), when the caller has counted them already."""
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
    if per_error is None:
        per_error = bad.group_by(ERROR_COLUMN).agg(nw.len().alias("n")).collect(backend="polars")
    for errors, n in per_error.iter_rows():
        for error in str(errors).split("; "):
            m = _REASON.match(error)
            reason = m.group(1) if m else "None"
            counts[reason] = counts.get(reason, 0) + int(n)
    return counts


def quarantine_failed(
    lake: LakeIO, spec: RetailerSpec, table_name: str, rows, raw, now: datetime, result: SilverResult, n_bad: int | None = None
) -> None:
    """Quarantine the rows that broke a rule and count them, per reason, in `result` (`n_bad`: how
    many there are, when the caller counted them already)."""
    bad = rows.filter(~ok()).select("_delivery_id", "_row_number", ERROR_COLUMN)
    n_bad = count(bad) if n_bad is None else n_bad
    result.quarantined += n_bad
    if not n_bad:
        return
    per_error = None
    if "_source_file" in rows.collect_schema().names():
        # One grouped pass over the rows (per file and reasons, null for a good row) gives both
        # the share of each file's rows quarantined and the counts per reason.
        per_file = rows.group_by("_source_file", ERROR_COLUMN).agg(nw.len().alias("n")).collect(backend="polars")
        per_error = per_file.filter(~nw.col(ERROR_COLUMN).is_null()).group_by(ERROR_COLUMN).agg(nw.col("n").sum())
        shares = per_file.group_by("_source_file").agg(
            nw.col("n").sum().alias("n"), nw.when(nw.col(ERROR_COLUMN).is_null()).then(0).otherwise(nw.col("n")).sum().alias("bad")
        )
        for file, n, n_file_bad in shares.select("_source_file", "n", "bad").iter_rows():
            before = result.quarantined_by_file.get(str(file), [0, 0])
            result.quarantined_by_file[str(file)] = [before[0] + int(n_file_bad), before[1] + int(n)]
    for reason, n in quarantine_rows(lake, spec, table_name, bad, raw, now, per_error).items():
        result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + n


# What to change when most of a file's rows break a rule that usually means a wrong setting.
FIX_HINTS = {
    "not on a week": "set `week_date: start` on the file kind if its dates are week starts, or `misaligned_weeks: align` "
    "to move each date to the end of its week",
    "cannot parse": "check `format.date_formats` and `format.decimal_comma` of the file kind",
}


def fix_hint(reasons: dict[str, int]) -> str:
    """The setting to look at for the most frequent reason, if one is known."""
    for reason, _ in sorted(reasons.items(), key=lambda r: -r[1]):
        for words, hint in FIX_HINTS.items():
            if words in reason:
                return f" ({hint})"
    return ""


def quarantine_overflows(spec: RetailerSpec, results: dict[str, SilverResult]) -> list[str]:
    """One line per file whose quarantined share of rows is above its kind's `max_quarantined_share`."""
    lines = []
    for table, result in results.items():
        for file, (bad, total) in sorted(result.quarantined_by_file.items()):
            file_spec = spec.file_spec_for(file)
            limit = file_spec.max_quarantined_share if file_spec is not None else 0.5
            if total and bad / total > limit:
                top = max(result.quarantine_reasons.items(), key=lambda r: r[1])[0] if result.quarantine_reasons else "?"
                lines.append(
                    f"{spec.name}.{table}: {bad:,} of {total:,} rows ({bad / total:.0%}) of {file} quarantined, more than "
                    f"max_quarantined_share {limit:.0%}; most for `{top}`{fix_hint(result.quarantine_reasons)}"
                )
    return lines
