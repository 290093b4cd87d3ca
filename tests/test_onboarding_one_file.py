"""Onboarding is one file: a new retailer's YAML alone makes it visible to all-retailers readers.

The retailer YAML carries the secure group key and the antitrust settings; the access policy holds
only groups and users. A retailer that no group names is seen by all-retailers groups at once and
reported by a warning -- never silently invisible.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import DEFS_DIR
from serving_data import fact_rows, write_gold

import pos_lakehouse.retailer
import pos_lakehouse.sensors.catch_up
from pos_lakehouse.components.loaded_retailers import retailers_in_tree
from pos_lakehouse.components.retailer_pipeline import RetailerPipeline
from pos_lakehouse.definitions import build_definitions, component_tree
from pos_lakehouse.quality.gold_checks import run_gold_checks
from pos_lakehouse.retailer import load_retailer_specs
from pos_lakehouse.serving.duckdb_views import query
from pos_lakehouse.serving.policy import PolicyWarning, load_policy

DEFS = DEFS_DIR

NEW_RETAILER = """\
type: pos_lakehouse.components.RetailerPipeline
attributes:
  retailer_id: 1009
  name: example_es
  country: ES
  currency: EUR
  secure_group_key: 110019
  antitrust: value
  mask_younger_than_days: 28
  cadence: daily
  delivery:
    channel: landing
    files:
      - name: ventas
        match: "ventas_*.csv"
        holds: [prod_dim, site_dim, store_day_fact]
        format: {type: csv, separator: ";", decimal_comma: true, encoding: latin-1, date_formats: ["%d/%m/%Y"]}
  columns:
    ventas: {Fecha: date, Tienda: site_id, Articulo: prod_id, EAN: gtin, Unidades: pos_sales_units, Importe: pos_sales_value_lc}
"""


def _asset(defs: dg.Definitions, *key: str) -> dg.AssetsDefinition:
    return next(a for a in defs.assets if dg.AssetKey(list(key)) in a.keys)


@pytest.fixture
def defs_copy(tmp_path: Path) -> Path:
    """A copy of the project's defs folder with one more retailer YAML -- and nothing else changed."""
    root = tmp_path / "defs"
    for part in ("retailers", "serving", "gold"):
        shutil.copytree(DEFS / part, root / part)
    (root / "retailers" / "example_es").mkdir()
    (root / "retailers" / "example_es" / "defs.yaml").write_text(NEW_RETAILER)
    return root


def test_a_new_retailer_by_one_yaml_is_seen_by_all_retailers_users(defs_copy, lake):
    policy_file = defs_copy / "serving" / "access_policy.yaml"
    assert policy_file.read_text() == (DEFS / "serving" / "access_policy.yaml").read_text()

    with pytest.warns(PolicyWarning, match=r"no reader group names example_es \(cds_1009, key 110019\)"):
        policy = load_policy(policy_file, defs_copy / "retailers")
    assert policy.retailers["cds_1009"].secure_group_key == 110019 and policy.retailers["cds_1009"].masks
    assert 110019 in policy.user_keys("ada")  # pos_admins: all retailers, the new one at once
    assert 110019 not in policy.user_keys("claire") and 110019 not in policy.user_keys("noah")

    # The components of the loaded folder pick it up: a gold partition, and the serving views.
    tree = component_tree(defs_copy)
    with pytest.warns(PolicyWarning):
        gold_defs = tree.build_defs(defs_copy / "gold")
    gold_asset = _asset(gold_defs, "gold", "store_day_fact")
    assert "cds_1009" in gold_asset.partitions_def.get_partition_keys()
    with pytest.warns(PolicyWarning):
        views_defs = tree.build_defs(defs_copy / "serving")

    # Its gold rows (and another retailer's) published; the views asset builds the database.
    today = duckdb.execute("select current_date").fetchone()[0]
    write_gold(lake, "store_day_fact", fact_rows("cds_1009", 110019, [today - timedelta(days=3)]))
    write_gold(lake, "store_day_fact", fact_rows("cds_1001", 110011, [today - timedelta(days=200)]))
    views_asset = _asset(views_defs, "serving", "gold_views")
    with pytest.warns(PolicyWarning):
        result = dg.materialize([views_asset], resources={"lake": lake})
    assert result.success
    meta = result.asset_materializations_for_node(views_asset.node_def.name)[0].metadata
    assert meta["retailers_in_no_group"].value == "example_es"

    sql = "select data_provider_code, count(*) as n, min(pos_sales_value_lc) as v from store_day_fact group by 1 order by 1"
    seen = {r["data_provider_code"]: r for r in query(lake, policy, "ada", sql).to_dicts()}
    assert seen["cds_1009"]["n"] == 6
    assert seen["cds_1009"]["v"] == Decimal("70")  # masked, as its YAML says (`antitrust: value`, 28 days)
    assert "cds_1009" not in set(query(lake, policy, "claire", sql)["data_provider_code"])

    # The gold check knows its key: declared by the retailer's own YAML.
    spec = next(s for s in load_retailer_specs(defs_copy / "retailers") if s.name == "example_es")
    checks = {r.check_name: r for r in run_gold_checks(lake, spec, "store_day_fact", policy, gold_asset.key)}
    assert checks["secure_group_keys_known"].passed
    assert checks["secure_group_keys_known"].metadata["reader_groups"].value == "pos_admins"


def test_a_retailer_in_a_group_raises_no_warning(defs_copy, recwarn):
    policy_file = defs_copy / "serving" / "access_policy.yaml"
    policy_file.write_text(policy_file.read_text().replace("[110011, 110012, 110015, 110016]", "[110011, 110012, 110015, 110016, 110019]"))
    policy = load_policy(policy_file, defs_copy / "retailers")
    assert not [w for w in recwarn if issubclass(w.category, PolicyWarning)]
    assert 110019 in policy.user_keys("claire")


def test_shipped_defs_raise_no_policy_warning(recwarn):
    load_policy()
    assert not [w for w in recwarn if issubclass(w.category, PolicyWarning)]


def test_gold_serving_and_catch_up_take_the_retailers_from_the_loaded_components(defs_copy, monkeypatch):
    """One source: the retailer components that build a retailer's assets are what gold, the views and
    the catch-up sensor read -- no second parse of the YAML folder, whichever defs folder is loaded."""

    def no_reparse(folder):
        raise AssertionError(f"retailer YAMLs re-read from {folder}")

    monkeypatch.setattr(pos_lakehouse.retailer, "load_retailer_specs", no_reparse)
    monkeypatch.setattr(pos_lakehouse.sensors.catch_up, "load_retailer_specs", no_reparse)
    shutil.copytree(DEFS / "reference", defs_copy / "reference", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(DEFS / "resources.py", defs_copy / "resources.py")
    tree = component_tree(defs_copy)
    with pytest.warns(PolicyWarning):  # example_es is in no reader group
        defs = build_definitions(tree=tree)

    components = tree.get_all_components(of_type=RetailerPipeline)
    codes = sorted(c.data_provider_code for c in components)
    assert "cds_1009" in codes and len(codes) == 9
    assert [s.data_provider_code for s in retailers_in_tree(tree)] == sorted(codes, key=lambda c: int(c.split("_")[1]))
    # The very instance the tree built the retailer's assets from is the one the others read.
    example = tree.load_component(defs_copy / "retailers" / "example_es")
    assert any(c is example for c in components)
    day = _asset(defs, "gold", "store_day_fact")
    assert "cds_1009" in day.partitions_def.get_partition_keys()
    views = _asset(defs, "serving", "gold_views")
    assert dg.AssetKey(["gold", "store_day_fact"]) in {d.asset_key for d in views.specs_by_key[views.key].deps}
    catch_up = defs.resolve_sensor_def("catch_up_sensor").asset_selection
    assert catch_up is not None and any(k.path[:2] == ["silver", "example_es"] for k in catch_up.resolve(defs.resolve_asset_graph()))


def test_a_retailers_path_outside_the_loaded_folder_fails_at_load_time(defs_copy):
    gold = defs_copy / "gold" / "defs.yaml"
    gold.write_text(gold.read_text().replace("retailers_path: ../retailers", "retailers_path: ../../elsewhere"))
    (defs_copy.parent / "elsewhere").mkdir()
    with pytest.raises(Exception) as failed:  # Dagster wraps it in its component-tree error
        component_tree(defs_copy).build_defs(defs_copy / "gold")
    causes, error = [], failed.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    assert any(
        isinstance(e, ValueError) and "retailers_path '../../elsewhere'" in str(e) and "outside the loaded defs folder" in str(e)
        for e in causes
    )
