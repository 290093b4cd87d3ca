"""All retailers read once per state of the folder: what the loader hands out follows every edit,
addition and removal, and one caller cannot change what the next one reads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import yaml
from conftest import DEFS_DIR, RETAILERS_DIR
from pydantic import BaseModel

from pos_lakehouse.retailer import load_retailer_specs


def _copy_retailer(folder: Path, source: str, name: str, retailer_id: int) -> Path:
    doc = yaml.safe_load((folder / source / "defs.yaml").read_text())
    doc["attributes"].update(name=name, retailer_id=retailer_id, secure_group_key=retailer_id + 1)
    for f in doc["attributes"]["delivery"]["files"]:
        f["match"] = f["match"].replace(source, name)
    (folder / name).mkdir()
    path = folder / name / "defs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_loader_follows_edits_additions_and_removals(tmp_path: Path):
    folder = tmp_path / "retailers"
    shutil.copytree(RETAILERS_DIR, folder)
    shipped = [s.name for s in load_retailer_specs(folder)]
    assert len(shipped) == 8 and "marche_fr" in shipped

    # A caller that changes its copy does not change the next caller's.
    first = load_retailer_specs(folder)
    first[0].currency = "XXX"
    first[0].scd2["prod_dim"].append("gtin")
    again = load_retailer_specs(folder)
    assert again[0].currency != "XXX" and "gtin" not in again[0].scd2.get("prod_dim", [])

    added = _copy_retailer(folder, "marche_fr", "loader_copy", 880001)
    assert [s.name for s in load_retailer_specs(folder)] == [*shipped, "loader_copy"]  # id order: the new id is highest

    # An edit in place (same size, later mtime) is read again.
    text = added.read_text().replace("currency: EUR", "currency: CHF")
    added.write_text(text)
    stat = added.stat()
    os.utime(added, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert next(s for s in load_retailer_specs(folder) if s.name == "loader_copy").currency == "CHF"

    shutil.rmtree(added.parent)
    assert [s.name for s in load_retailer_specs(folder)] == shipped


def test_definitions_from_another_defs_folder_see_an_added_retailer(tmp_path: Path, data_root):
    from pos_lakehouse.definitions import build_definitions

    defs_dir = tmp_path / "defs"
    shutil.copytree(DEFS_DIR, defs_dir)
    gold_key = dg.AssetKey(["gold", "store_day_fact"])
    before = build_definitions(defs_dir).resolve_assets_def(gold_key).partitions_def.get_partition_keys()
    assert "cds_880001" not in before and "cds_1001" in before

    _copy_retailer(defs_dir / "retailers", "marche_fr", "loader_copy", 880001)
    defs = build_definitions(defs_dir)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "silver/loader_copy/store_day_fact" in keys
    landing = defs.resolve_sensor_def("retailer_landing_sensor").asset_selection
    assert landing is not None and dg.AssetKey(["silver", "loader_copy", "store_day_fact"]) in landing.resolve(defs.resolve_asset_graph())
    after = defs.resolve_assets_def(gold_key).partitions_def.get_partition_keys()
    assert set(after) == {*before, "cds_880001"}


def test_retailer_files_taken_as_written_match_dagsters_resolution_and_templates_still_render(tmp_path: Path, monkeypatch):
    """Components whose YAML uses no template are built from the validated attributes directly (no Jinja
    compile per string): they equal what Dagster's own template resolution builds, and a file that does
    use a template is still rendered."""
    from pos_lakehouse.components.yaml_schema import TakenAsWritten
    from pos_lakehouse.definitions import component_tree

    defs_dir = tmp_path / "defs"
    shutil.copytree(DEFS_DIR, defs_dir)
    path = _copy_retailer(defs_dir / "retailers", "marche_fr", "templated_copy", 880001)
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["description"] = "{{ 'Copy of ' ~ 'marche_fr' }}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def components() -> dict[str, dict]:
        tree = component_tree(defs_dir)
        built = tree.get_all_components(of_type=dg.Component)
        return {getattr(c, "name", type(c).__name__): c.model_dump() for c in built if isinstance(c, BaseModel)}

    as_written = components()
    assert as_written["templated_copy"]["description"] == "Copy of marche_fr"
    assert len(as_written) == 12 and sum(1 for c in as_written.values() if "retailer_id" in c) == 9

    monkeypatch.setattr(
        TakenAsWritten, "load", classmethod(lambda cls, attributes, context: super(TakenAsWritten, cls).load(attributes, context))
    )
    assert components() == as_written
