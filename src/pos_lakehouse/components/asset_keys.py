"""Asset keys and Dagster metadata shared by the retailer, gold and serving components."""

import dagster as dg

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.transform import canonical


def bronze_key(spec: RetailerSpec, file_name: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", spec.name, file_name])


def silver_key(spec: RetailerSpec, table: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", spec.name, table])


def gold_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", table])


def dagster_metadata(metadata: dict) -> dict:
    """Plain metadata (`silver_metadata`, `gold_metadata`) as Dagster metadata: dicts as JSON."""
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in metadata.items()}


def column_schema(table: canonical.CanonicalTable) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(c.name, str(c.dtype), description=c.description) for c in table.columns])
