"""What reached gold, per retailer: row counts, quarantine and data-quality outcomes, for the summary `run` and `demo` print."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import polars as pl
from rich.table import Table

from pos_lakehouse.quality.schemas import rule_names
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

GOLD_COLUMNS = ("prod_dim", "site_dim", "store_day_fact", "store_week_fact", "store_month_fact")


def gold_counts(lake: Lake) -> dict[str, dict[str, int]]:
    """table -> data_provider_code -> rows."""
    counts: dict[str, dict[str, int]] = {}
    for name in GOLD_COLUMNS:
        uri = lake.gold(name)
        counts[name] = dict(lake.scan(uri).group_by("data_provider_code").agg(pl.len()).collect().iter_rows()) if lake.exists(uri) else {}
    return counts


def quarantine_counts(lake: Lake, spec: RetailerSpec) -> tuple[int, int]:
    """(rejected files, quarantined rows) of a retailer."""
    files_uri = lake.quarantine(spec.name, "rejected_files")
    rows_uri = lake.quarantine(spec.name, "rejected_rows")
    return lake.row_count(files_uri), lake.row_count(rows_uri)


def check_outcomes(instance: dg.DagsterInstance, spec: RetailerSpec) -> Counter:
    """Latest outcome of every silver check of the retailer: passed / failed (blocking) / warned."""
    keys = []
    for table in spec.silver_tables:
        asset = dg.AssetKey(["silver", spec.name, table])
        names = [name for name, _, _ in rule_names(table)]
        if table == canonical.DELIVERY_CALENDAR.name:
            names.append("deliveries_complete")
        else:
            names.append("one_current_version" if table in canonical.DIMENSIONS else "facts_reference_dimension_versions")
        keys += [dg.AssetCheckKey(asset, n) for n in names]
    outcome: Counter = Counter()
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    for key in keys:
        record = records.get(key)
        evaluation = record.event.dagster_event.event_specific_data if record and record.event and record.event.dagster_event else None
        # A run that died between planning a check and evaluating it leaves a planned record behind.
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            outcome["not run"] += 1
        elif evaluation.passed and getattr(evaluation.metadata.get("applicable"), "value", True) is False:
            outcome["not applicable"] += 1
        elif evaluation.passed:
            outcome["passed"] += 1
        elif evaluation.severity == dg.AssetCheckSeverity.WARN:
            outcome["warned"] += 1
        else:
            outcome["failed"] += 1
    return outcome


def summary_table(lake: Lake, instance: dg.DagsterInstance, specs: list[RetailerSpec]) -> Table:
    counts = gold_counts(lake)
    table = Table(title="gold rows per retailer, quarantine and data quality", header_style="bold")
    table.add_column("retailer")
    for name in GOLD_COLUMNS:
        table.add_column(name.replace("store_", "").replace("_fact", ""), justify="right")
    table.add_column("rejected files", justify="right")
    table.add_column("quarantined rows", justify="right")
    table.add_column("checks", justify="left")
    for spec in specs:
        files, rows = quarantine_counts(lake, spec)
        checks = check_outcomes(instance, spec)
        check_text = ", ".join(f"{n} {k}" for k, n in sorted(checks.items())) or "-"
        if checks.get("failed"):
            check_text = f"[red]{check_text}[/]"
        table.add_row(
            spec.name,
            *[f"{counts[name].get(spec.data_provider_code, 0):,}" for name in GOLD_COLUMNS],
            f"{files:,}",
            f"{rows:,}",
            check_text,
        )
    return table
