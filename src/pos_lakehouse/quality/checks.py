"""Asset checks on silver tables: keys unique, one current version per entity, facts keyed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg
import polars as pl

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

SAMPLE_ROWS = 5


def silver_check_specs(spec: RetailerSpec, keys: Sequence[dg.AssetKey]) -> list[dg.AssetCheckSpec]:
    checks = []
    for key in keys:
        table = key.path[-1]
        checks.append(
            dg.AssetCheckSpec(
                "unique_keys",
                asset=key,
                blocking=True,
                description=f"No two rows share a key ({', '.join(_unique_columns(table))}).",
            )
        )
        if table in canonical.DIMENSIONS:
            checks.append(
                dg.AssetCheckSpec(
                    "one_current_version",
                    asset=key,
                    blocking=True,
                    description="Every entity has exactly one current SCD2 version.",
                )
            )
        else:
            checks.append(
                dg.AssetCheckSpec(
                    "facts_reference_dimensions",
                    asset=key,
                    blocking=True,
                    description="Every fact carries the product and store version in force on its date.",
                )
            )
    return checks


def markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, *rows])


def _unique_columns(table: str) -> list[str]:
    if table == "prod_dim":
        return ["prod_key"]
    if table == "site_dim":
        return ["site_key"]
    return list(canonical.TABLES[table].natural_keys)


def _result(key: dg.AssetKey, name: str, failing: pl.DataFrame, total: int, what: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=failing.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{failing.height} {what}" if failing.height else None,
        metadata={
            "failing_rows": failing.height,
            "rows_checked": total,
            "sample": dg.MetadataValue.md(markdown_table(failing.head(SAMPLE_ROWS)))
            if failing.height
            else "none",
        },
    )


def run_silver_checks(context: dg.AssetExecutionContext, lake: Lake, spec: RetailerSpec, tables: Sequence[str]) -> Iterator[dg.AssetCheckResult]:
    for table in tables:
        key = dg.AssetKey(["silver", spec.name, table])
        frame = lake.scan(lake.silver(spec.name, table), canonical.TABLES[table].schema)
        total = frame.select(pl.len()).collect().item()
        cols = _unique_columns(table)
        dupes = frame.group_by(cols).agg(pl.len().alias("rows")).filter(pl.col("rows") > 1).collect()
        yield _result(key, "unique_keys", dupes, total, "keys appear more than once")
        if table in canonical.DIMENSIONS:
            natural = canonical.TABLES[table].natural_keys[0]
            bad = (
                frame.group_by(natural)
                .agg(pl.col("is_current").cast(pl.Int64).sum().alias("current_versions"))
                .filter(pl.col("current_versions") != 1)
                .collect()
            )
            yield _result(key, "one_current_version", bad, total, "entities without exactly one current version")
        else:
            bad = frame.filter(pl.col("prod_key").is_null() | pl.col("site_key").is_null()).select(
                *canonical.TABLES[table].natural_keys, "prod_key", "site_key"
            ).collect()
            yield _result(key, "facts_reference_dimensions", bad, total, "facts without a product or store version")
