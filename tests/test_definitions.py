"""The code location loads, `dg check defs` accepts it, and components build what a retailer YAML promises."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dagster as dg
from conftest import PROJECT_ROOT, RETAILERS_DIR


def test_definitions_load(defs: dg.Definitions):
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "bronze/marche_fr/pos_daily" in keys
    assert {"silver/marche_fr/prod_dim", "silver/marche_fr/site_dim", "silver/marche_fr/store_day_fact"} <= keys
    assert {"gold/prod_dim", "gold/site_dim", "gold/store_day_fact"} <= keys
    sensor_names = {s.name for s in defs.sensors}
    assert "marche_fr_landing_sensor" in sensor_names
    assert {"serving_automation", "catch_up_sensor", "reference_refresh_sensor"} <= set(sensor_names)
    gold = defs.resolve_assets_def(dg.AssetKey(["gold", "store_day_fact"]))
    assert "cds_1001" in gold.partitions_def.get_partition_keys()
    silver = defs.resolve_assets_def(dg.AssetKey(["silver", "marche_fr", "store_day_fact"]))
    spec = next(s for s in silver.specs if s.key.path[-1] == "store_day_fact")
    # Silver is carried by the delivery's own job (bronze + silver, gold from the silver step), not by automation.
    assert spec.automation_condition is None
    ingest = defs.resolve_job_def("marche_fr_ingest")
    assert {k for k in ingest.asset_layer.executable_asset_keys if k.path[0] == "silver"} >= {silver.key for silver in [spec]}
    assert spec.freshness_policy is not None
    assert {c.name for c in spec.metadata["dagster/column_schema"].columns} >= {"prod_key", "site_key", "pos_sales_units"}


def test_dg_check_defs(tmp_path: Path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "POS_LAKEHOUSE_DATA": str(tmp_path / "data")}
    proc = subprocess.run(["dg", "check", "defs"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_retailer_component_through_component_tree(data_root):
    from pos_lakehouse.components import RetailerPipeline

    tree = dg.ComponentTree.for_project(PROJECT_ROOT / "src" / "pos_lakehouse")
    component = tree.load_component(Path("retailers") / "marche_fr", expected_type=RetailerPipeline)
    assert component.retailer_id == 1001 and component.data_provider_code == "cds_1001"
    defs = tree.build_defs_at_path(Path("retailers") / "marche_fr")
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert keys == {
        "bronze/marche_fr/pos_daily",
        "silver/marche_fr/prod_dim",
        "silver/marche_fr/site_dim",
        "silver/marche_fr/store_day_fact",
        "silver/marche_fr/store_week_fact",
        "silver/marche_fr/store_month_fact",
    }
    checks = {c.name for a in defs.assets for c in a.check_specs}
    assert {"structure_and_keys", "one_current_version", "facts_reference_dimension_versions", "valid_gtin"} <= checks
    assert {j.name for j in defs.jobs} == {"marche_fr_ingest"}
    assert {s.name for s in defs.sensors} == {"marche_fr_landing_sensor"}
    assert (RETAILERS_DIR / "marche_fr" / "defs.yaml").exists()
