"""Asset checks on silver tables: the pandera rules, SCD2 integrity and referential integrity.

Blocking checks stop bad data from flowing on: in the same run downstream steps are skipped,
and declarative automation waits for them to pass before carrying gold forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg
import polars as pl

from pos_lakehouse.quality.completeness import completeness_check_spec, completeness_result
from pos_lakehouse.quality.schemas import evaluate, rule_names, rules_for
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

SAMPLE_ROWS = 5


def markdown_table(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "none"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, *rows])


# Table-level checks (beyond the row rules) of every silver dimension / fact table; each blocks gold.
_DIMENSION_CHECKS = {"one_current_version": "Every entity has exactly one current SCD2 version, and versions do not overlap."}
_DELIVERED_FACT_CHECKS = {
    "bronze_rows_accounted": "Every bronze row read by this refresh is loaded, quarantined (with a reason) or superseded by a newer delivery."
}
_FACT_CHECKS = {"facts_reference_dimension_versions": "Every fact's prod_key and site_key exist in this retailer's silver dimensions."}


def silver_check_specs(spec: RetailerSpec, keys: Sequence[dg.AssetKey]) -> list[dg.AssetCheckSpec]:
    checks = []
    for key in keys:
        table = key.path[-1]
        for name, blocking, description in rule_names(table):
            checks.append(dg.AssetCheckSpec(name, asset=key, blocking=blocking, description=description))
        if table == canonical.DELIVERY_CALENDAR.name:
            checks.append(completeness_check_spec(spec, key))
            continue
        if table in canonical.DIMENSIONS:
            table_checks = _DIMENSION_CHECKS
        else:
            table_checks = {**(_DELIVERED_FACT_CHECKS if table in spec.canonical_tables else {}), **_FACT_CHECKS}
        checks += [dg.AssetCheckSpec(name, asset=key, blocking=True, description=text) for name, text in table_checks.items()]
    return checks


def _result(key: dg.AssetKey, name: str, failing: pl.DataFrame, total: int, what: str, blocking: bool = True) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=failing.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=f"{failing.height} {what}" if failing.height else None,
        metadata={
            "failing_rows": failing.height,
            "rows_checked": total,
            "sample": dg.MetadataValue.md(markdown_table(failing.head(SAMPLE_ROWS))),
        },
    )


def delivers(spec: RetailerSpec, table: str, column: str) -> bool:
    """Whether some file holding `table` fills `column` (a file kind without a mapping may carry canonical names)."""
    return any(column in spec.columns.get(f.name, {}).values() or not spec.columns.get(f.name) for f in spec.files_holding(table))


def not_applicable(key: dg.AssetKey, name: str, why: str) -> dg.AssetCheckResult:
    """A check that does not apply to this retailer: passed, and said to be not applicable (the summary counts it apart)."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"not applicable: {why}",
        metadata={"applicable": False, "rows_checked": 0},
    )


def run_silver_checks(context, lake: Lake, spec: RetailerSpec, tables: Sequence[str], results=None) -> Iterator[dg.AssetCheckResult]:
    """Evaluate every check of the given silver tables on their current content (and this refresh's accounting)."""
    for table in tables:
        key = dg.AssetKey(["silver", spec.name, table])
        yield from check_silver_table(lake, spec, table, key)
        if table == canonical.DELIVERY_CALENDAR.name:
            uri = lake.silver(spec.name, table)
            calendar = lake.scan(uri, canonical.DELIVERY_CALENDAR.schema).collect() if lake.exists(uri) else None
            yield completeness_result(spec, key, calendar)
        if table in canonical.FACTS and table in spec.canonical_tables:
            r = (results or {}).get(table)
            counts = {
                "bronze_rows_read": getattr(r, "bronze_rows", 0),
                "rows_loaded": getattr(r, "loaded", 0),
                "rows_quarantined": getattr(r, "quarantined", 0),
                "rows_superseded": getattr(r, "superseded", 0),
            }
            missing = getattr(r, "unaccounted", 0)
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name="bronze_rows_accounted",
                passed=missing == 0,
                severity=dg.AssetCheckSeverity.ERROR,
                description=None if missing == 0 else f"{missing} bronze rows neither loaded, quarantined nor superseded",
                metadata={**counts, "rows_unaccounted": missing},
            )


def check_silver_table(lake: Lake, spec: RetailerSpec, table: str, key: dg.AssetKey) -> Iterator[dg.AssetCheckResult]:
    frame = lake.scan(lake.silver(spec.name, table), canonical.TABLES[table].schema).collect()
    for rule in rules_for(table):
        column = rule.name.removeprefix("valid_")
        if rule.name.startswith("valid_") and not delivers(spec, table, column):
            # Every value would be null: "not a valid code" on every row says nothing true.
            yield not_applicable(key, rule.name, f"{spec.name} does not deliver `{column}` (no file maps a column to it)")
            continue
        outcome = evaluate(rule, frame, SAMPLE_ROWS)
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=rule.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR if rule.blocking else dg.AssetCheckSeverity.WARN,
            description=None if outcome.passed else f"{outcome.failing_rows} failing rows: {outcome.failures_by_check}",
            metadata={
                "failing_rows": outcome.failing_rows,
                "rows_checked": outcome.rows_checked,
                "failures_by_rule": dg.MetadataValue.json(outcome.failures_by_check),
                "sample": dg.MetadataValue.md(markdown_table(outcome.sample.head(SAMPLE_ROWS))),
            },
        )
    if table in canonical.DIMENSIONS:
        natural = canonical.TABLES[table].natural_keys[0]
        bad = (
            frame.sort(natural, "valid_from")
            .with_columns(pl.col("valid_to").shift(1).over(natural).alias("_prev_to"))
            .group_by(natural)
            .agg(
                pl.col("is_current").cast(pl.Int64).sum().alias("current_versions"),
                ((pl.col("_prev_to").is_not_null()) & (pl.col("valid_from") <= pl.col("_prev_to"))).sum().alias("overlaps"),
            )
            .filter((pl.col("current_versions") != 1) | (pl.col("overlaps") > 0))
        )
        yield _result(
            key, "one_current_version", bad, frame.height, "entities without exactly one current version or with overlapping versions"
        )
    elif table in canonical.FACTS:
        failing = []
        for dim_name, key_col in (("prod_dim", "prod_key"), ("site_dim", "site_key")):
            dim_keys = lake.scan(lake.silver(spec.name, dim_name), canonical.TABLES[dim_name].schema).select(key_col).collect()
            failing.append(
                frame.join(dim_keys, on=key_col, how="anti").select(*canonical.TABLES[table].natural_keys, "prod_key", "site_key")
            )
        bad = pl.concat(failing).unique()
        yield _result(key, "facts_reference_dimension_versions", bad, frame.height, "facts whose product or store version does not exist")
