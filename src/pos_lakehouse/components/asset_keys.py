"""Asset keys, Dagster metadata and failures shared by the components."""

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


_column_schemas: dict[str, dg.TableSchema] = {}


def column_schema(table: canonical.CanonicalTable) -> dg.TableSchema:
    """A canonical table's columns as asset metadata; built once per table and shared by every
    retailer's asset of it (the schema is immutable)."""
    if table.name not in _column_schemas:
        _column_schemas[table.name] = dg.TableSchema(
            columns=[dg.TableColumn(c.name, str(c.dtype), description=c.description) for c in table.columns]
        )
    return _column_schemas[table.name]


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
