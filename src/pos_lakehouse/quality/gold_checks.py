"""Asset checks on one retailer's gold partition: complete, unique, and readable under the access policy.

Run inside the gold asset right after its MERGE (the partition is the one just written), so
every check sees exactly that run's result.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from pos_lakehouse.layers.gold import PARTITION_COLUMN, gold_keys
from pos_lakehouse.quality.checks import SAMPLE_ROWS, markdown_table
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.serving.policy import AccessPolicy
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical


def gold_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    table = key.path[-1]
    return [
        dg.AssetCheckSpec(
            "rows_match_silver",
            asset=key,
            blocking=True,
            description="The retailer's gold partition holds as many rows as its silver table.",
        ),
        dg.AssetCheckSpec(
            "unique_keys",
            asset=key,
            blocking=True,
            description=f"No two rows of the partition share a key ({', '.join(gold_keys(table))}).",
        ),
        dg.AssetCheckSpec(
            "secure_group_keys_known",
            asset=key,
            # Not blocking: rows with an unknown key are invisible in every secure view (fail closed),
            # so publishing them leaks nothing; the failure tells governance to extend the policy.
            blocking=False,
            description="Every secure_group_key in the partition is the one the retailer's YAML declares (as the access policy reads it).",
        ),
    ]


def _partition(lake: Lake, table_name: str, code: str) -> pl.LazyFrame:
    return lake.scan(lake.gold(table_name), canonical.TABLES[table_name].schema).filter(pl.col(PARTITION_COLUMN) == code)


def run_gold_checks(lake: Lake, spec: RetailerSpec, table_name: str, policy: AccessPolicy, key: dg.AssetKey) -> list[dg.AssetCheckResult]:
    code = spec.data_provider_code
    gold = _partition(lake, table_name, code)
    delivers = table_name in getattr(spec, "silver_tables", spec.canonical_tables)
    silver_rows = lake.row_count(lake.silver(spec.name, table_name)) if delivers else 0
    gold_rows = gold.select(pl.len()).collect().item()
    results = [
        dg.AssetCheckResult(
            asset_key=key,
            check_name="rows_match_silver",
            passed=gold_rows == silver_rows,
            # Counts as text: checks of all partitions share one history, and a plot of every
            # retailer's count in one line is meaningless (the per-partition counts are asset metadata).
            metadata={"rows": f"gold {gold_rows:,}, silver {silver_rows:,}", "data_provider_code": code},
            description=None if gold_rows == silver_rows else f"gold {gold_rows} rows, silver {silver_rows} rows",
        )
    ]

    keys = gold_keys(table_name)
    dups = gold.group_by(keys).agg(pl.len().alias("rows")).filter(pl.col("rows") > 1).sort("rows", descending=True).collect()
    results.append(
        dg.AssetCheckResult(
            asset_key=key,
            check_name="unique_keys",
            passed=dups.is_empty(),
            metadata={
                "duplicate_keys": f"{dups.height:,}",
                "sample": dg.MetadataValue.md(markdown_table(dups.head(SAMPLE_ROWS)) if dups.height else "none"),
            },
        )
    )

    seen = gold.select(pl.col("secure_group_key").unique()).collect()["secure_group_key"].to_list()
    declared = policy.retailers.get(code)
    # A null key sorts first (None and numbers do not compare).
    unknown = sorted((k for k in seen if k is None or k not in policy.known_keys), key=lambda k: (k is not None, k))
    wrong = sorted(k for k in seen if k is not None and declared is not None and k != declared.secure_group_key)
    problems = []
    if declared is None and seen:
        problems.append(f"{code} ({spec.name}) is not among the retailers the access policy was built from")
    if unknown:
        problems.append(f"keys unknown to the policy: {unknown}")
    if wrong:
        problems.append(f"keys other than the policy's {declared.secure_group_key} for {code}: {wrong}")  # type: ignore[union-attr]
    results.append(
        dg.AssetCheckResult(
            asset_key=key,
            check_name="secure_group_keys_known",
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "secure_group_keys": ", ".join(str(k) for k in seen) or "none",
                # An identifier, not a measure: text, so the UI does not plot it.
                "policy_key": str(declared.secure_group_key) if declared else "undeclared",
                # Which reader groups see this retailer; all-retailers groups only = add it to a group.
                "reader_groups": ", ".join(
                    g for g in sorted(policy.groups) if declared and declared.secure_group_key in policy.group_keys(g)
                )
                or "none",
            },
            description="; ".join(problems) or None,
        )
    )
    return results
