"""Asset keys, Dagster metadata and failures shared by the components."""

import dagster as dg

from pos_lakehouse.layers.silver.result import column_schema as silver_column_schema
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.transform import canonical


def bronze_key(spec: RetailerSpec, file_name: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", spec.name, file_name])


def silver_key(spec: RetailerSpec, table: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", spec.name, table])


def gold_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", table])


def dagster_metadata(metadata: dict) -> dict:
    """Plain metadata (`silver_metadata`, `gold_metadata`) as Dagster metadata: dicts as JSON, a
    column schema as a table schema."""
    return {
        k: _table_schema(v) if k == "dagster/column_schema" else dg.MetadataValue.json(v) if isinstance(v, dict) else v
        for k, v in metadata.items()
    }


def _table_schema(schema: dict) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(c["name"], c["type"], description=c.get("description")) for c in schema["columns"]])


def column_schema(table: canonical.CanonicalTable) -> dg.TableSchema:
    """A canonical table's columns as asset metadata (gold's definitions; silver's materializations)."""
    return _table_schema(silver_column_schema(table.name))


def fail_on_rejected_files(who: str, outcomes) -> None:
    """End a loading step as failed when files were rejected (the good ones are loaded; the reasons
    name file, row and rule), so the run and the UI say what went wrong."""
    rejected = [o for o in outcomes if o.status == "rejected"]
    if rejected:
        raise dg.Failure(
            description=f"{who}: {len(rejected)} of {len(outcomes)} file(s) rejected and quarantined: "
            + "; ".join(o.describe() for o in rejected),
            metadata={"rejected": dg.MetadataValue.json([o.__dict__ for o in rejected])},
        )
