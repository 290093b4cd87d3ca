"""The landing sensor: one run per new or changed file, none for a file already seen; deterministic run keys."""

from __future__ import annotations

import json
import os

import dagster as dg

from pos_lakehouse.demo.generator import write_marche_fr


def _tick(defs, instance, cursor):
    sensor = defs.resolve_sensor_def("retailer_landing_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources, sensor_name=sensor.name) as context:
        result = sensor(context)
    # One sensor covers every retailer: keep marche_fr's requests (the other shipped folders are empty).
    return [r for r in result.run_requests or [] if r.tags["retailer"] == "marche_fr"], result.cursor


def test_new_same_and_changed_file(data_root, defs, instance):
    landing = data_root / "landing" / "marche_fr"
    [first] = write_marche_fr(landing, data_root / "expected", days=1, n_products=10, n_stores=2)

    requests, cursor = _tick(defs, instance, None)
    assert len(requests) == 1
    [request] = requests
    assert request.partition_key == "cds_1001" and request.tags["pos_lakehouse/ingest"] == "marche_fr"
    assert dg.AssetKey(["bronze", "marche_fr", "pos_daily"]) in (request.asset_selection or [])
    assert request.run_config["ops"]["marche_fr_bronze"]["config"]["files"] == [first.name]
    assert json.loads(cursor)["marche_fr"][first.name]

    # Same file, unchanged: nothing to do, and the run key would be the same anyway.
    again, cursor2 = _tick(defs, instance, cursor)
    assert again == [] and cursor2 == cursor
    replay, _ = _tick(defs, instance, None)
    assert replay[0].run_key == request.run_key

    # Changed content: one new request with a new key, only for that file.
    first.write_bytes(first.read_bytes() + b"\0")
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 1_000_000_000))
    changed, _ = _tick(defs, instance, cursor)
    assert len(changed) == 1 and changed[0].run_key != request.run_key
    assert changed[0].run_config["ops"]["marche_fr_bronze"]["config"]["files"] == [first.name]


def test_unmatched_and_in_progress_files_are_not_requested(data_root, defs, instance):
    landing = data_root / "landing" / "marche_fr"
    landing.mkdir(parents=True)
    (landing / "readme.txt").write_text("not a delivery")
    (landing / "marche_fr_pos_2026-09-01.parquet.part").write_bytes(b"half")
    requests, _ = _tick(defs, instance, None)
    assert requests == []


def test_deleted_file_leaves_the_cursor_and_a_redelivery_is_new(data_root, defs, instance):
    from datetime import date, timedelta

    landing = data_root / "landing" / "marche_fr"
    expected = data_root / "expected"
    start = date.today() - timedelta(days=3)
    first, second = write_marche_fr(landing, expected, days=2, start=start, n_products=10, n_stores=2)
    requests, cursor = _tick(defs, instance, None)
    [request] = requests
    assert set(json.loads(cursor)["marche_fr"]) == {first.name, second.name}

    # Deleted: nothing to run, and the file's entry is gone (the cursor does not grow with history).
    first.unlink()
    after_delete, cursor = _tick(defs, instance, cursor)
    assert after_delete == []
    assert set(json.loads(cursor)["marche_fr"]) == {second.name}

    # Delivered again under the same name with other content: one request for that file alone.
    write_marche_fr(landing, expected, days=1, start=start, n_products=12, n_stores=3, seed=7)
    assert first.exists()
    redelivered, cursor = _tick(defs, instance, cursor)
    assert len(redelivered) == 1
    assert redelivered[0].run_config["ops"]["marche_fr_bronze"]["config"]["files"] == [first.name]
    assert redelivered[0].run_key != request.run_key
    assert set(json.loads(cursor)["marche_fr"]) == {first.name, second.name}
    again, _ = _tick(defs, instance, cursor)
    assert again == []
