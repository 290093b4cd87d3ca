"""Corporate reference data: product master (GTIN), site master (GLN) and daily FX rates.

Files dropped in `<root>/landing/_corporate/` (`product_master.csv`, `site_master.csv`,
`fx_rates.csv`) replace the matching Delta table under `<root>/reference/`. Silver reads them
to add `corp_*` columns and USD values; a missing match is counted, not fatal.
"""

import hashlib
import json

import dagster as dg
from pydantic import Field

from pos_lakehouse.ingest.landing import LandingZone
from pos_lakehouse.layers.reference import REFERENCE_TABLES, load_reference_file, reference_uri
from pos_lakehouse.storage.lake import Lake

FOLDER = "_corporate"
OP_NAME = "corporate_reference"


class ReferenceRunConfig(dg.Config):
    files: list[str] = Field(default_factory=list, description="Reference files to load; empty: all present.")


@dg.multi_asset(
    name=OP_NAME,
    specs=[
        dg.AssetSpec(
            key=dg.AssetKey(["reference", name]),
            description=f"Corporate {name.replace('_', ' ')}, replaced by each delivery of `{name}.csv`.",
            group_name="reference",
            kinds={"polars", "delta"},
        )
        for name in REFERENCE_TABLES
    ],
    can_subset=True,
)
def corporate_reference(context: dg.AssetExecutionContext, config: ReferenceRunConfig, lake: Lake, landing: LandingZone):
    """Load delivered corporate reference files into their Delta tables."""
    names = config.files or [f.name for f in landing.list_files(FOLDER)]
    for file_name in names:
        table = file_name.rsplit(".", 1)[0]
        key = dg.AssetKey(["reference", table])
        if table not in REFERENCE_TABLES or key not in context.selected_asset_keys:
            context.log.warning(f"{file_name}: not a known reference file ({', '.join(REFERENCE_TABLES)}); ignored")
            continue
        with landing.local_copy(FOLDER, file_name) as path:
            rows = load_reference_file(lake, table, path)
        yield dg.MaterializeResult(
            asset_key=key, metadata={"dagster/row_count": rows, "dagster/uri": reference_uri(lake, table), "file": file_name}
        )


refresh_job = dg.define_asset_job(
    "corporate_reference_refresh",
    selection=dg.AssetSelection.groups("reference"),
    description="Load corporate master data and FX rates.",
)


@dg.sensor(
    name="corporate_reference_landing_sensor",
    job=refresh_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New or changed corporate reference files become a reference refresh run.",
)
def corporate_reference_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    files = [f for f in landing.list_files(FOLDER) if f.name.rsplit(".", 1)[0] in REFERENCE_TABLES]
    new = [f for f in files if cursor.get(f.name) != f.identity]
    if not new:
        return dg.SensorResult(skip_reason="no new reference files", cursor=json.dumps(cursor))
    key = hashlib.sha256("\n".join(f"{f.name}|{f.identity}" for f in new).encode()).hexdigest()[:24]
    cursor.update({f.name: f.identity for f in new})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"reference-{key}",
                run_config={"ops": {OP_NAME: {"config": {"files": [f.name for f in new]}}}},
                asset_selection=[dg.AssetKey(["reference", f.name.rsplit(".", 1)[0]]) for f in new],
            )
        ],
        cursor=json.dumps(cursor),
    )


@dg.definitions
def reference() -> dg.Definitions:
    return dg.Definitions(assets=[corporate_reference], jobs=[refresh_job], sensors=[corporate_reference_sensor])
