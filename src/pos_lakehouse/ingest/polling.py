"""Pulled retailers (API, database) in Dagster: the bronze pull step, and the probe their poll sensor asks.

The probe is the cheap question ("anything changed after our durable position?") that
`sensors/polling.py` turns into pull runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dagster as dg

from pos_lakehouse.ingest.pulled import PullOutcome
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake

PULLED_CHANNELS = ("api", "database")


def is_pulled(spec: RetailerSpec) -> bool:
    return spec.delivery.channel in PULLED_CHANNELS


def pull(lake: Lake, spec: RetailerSpec, tables: list[str] | None, log: Callable[[str], None] | None = None) -> list[PullOutcome]:
    """Pull the retailer's source into bronze (all tables, or the named ones)."""
    if spec.delivery.channel == "api":
        from pos_lakehouse.ingest.api import pull_api

        return pull_api(lake, spec, tables, log=log)
    from pos_lakehouse.ingest.database import pull_database

    return pull_database(lake, spec, tables, log=log)


def probe(lake: Lake, spec: RetailerSpec) -> dict:
    if spec.delivery.channel == "api":
        from pos_lakehouse.ingest.api import probe_api

        return probe_api(lake, spec)
    from pos_lakehouse.ingest.database import probe_database

    return probe_database(lake, spec)


def pulled_bronze_results(
    context: dg.AssetExecutionContext, lake: Lake, spec: RetailerSpec, tables: list[str], key_for: Callable[[str], dg.AssetKey]
) -> Iterator[dg.MaterializeResult]:
    """The bronze step of an api/database retailer: pull, then one materialization per selected table."""
    selected = [f.name for f in spec.delivery.files if key_for(f.name) in context.selected_asset_keys]
    wanted = [t for t in (tables or selected) if t in selected]
    outcomes = pull(lake, spec, wanted, log=context.log.info)
    for o in outcomes:
        yield dg.MaterializeResult(
            asset_key=key_for(o.table),
            metadata={
                "source": o.source,
                "deliveries_appended": o.deliveries,
                "rows_appended": o.rows,
                "skipped_already_in_bronze": o.duplicates_skipped,
                "source_requests": o.requests,
                "position_before": dg.MetadataValue.json(o.state_before),
                "position_after": dg.MetadataValue.json(o.state_after),
                "dagster/uri": lake.bronze(spec.name, o.table),
            },
        )
