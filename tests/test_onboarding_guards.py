"""Onboarding mistakes are named where they are made: nothing a YAML typo hides is lost silently.

A mapped source column a file lacks rejects the file (quarantined, the run fails) with one line
naming the column, the file and the closest column present; once the YAML is corrected the same
bytes are read again, while an unchanged YAML never reads them twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from own_defs import csv_file, defs_folder, retailer_yaml, run_ingest

from pos_lakehouse.components.yaml_errors import load_error_lines
from pos_lakehouse.definitions import build_definitions
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import REJECTED_FILES_TABLE, ingest_files
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.retailer_checks import FieldError
from pos_lakehouse.storage.lake import Lake

RETAILER_YAML = retailer_yaml(
    "guard_es",
    1997,
    files=[csv_file("ventas", "ventas_*.csv", ["prod_dim", "site_dim", "store_day_fact"])],
    columns={"ventas": {"Fecha": "date", "Tienda": "site_id", "Articulo": "prod_id", "Unidades": "pos_sales_units"}},
)


def _defs_folder(tmp_path: Path, yaml_text: str) -> Path:
    """A defs folder of the test's own: one retailer, nothing else."""
    folder = tmp_path / "defs" / "retailers" / "guard_es"
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(yaml_text)
    return tmp_path / "defs"


def _spec(units_column: str = "Menge") -> RetailerSpec:
    return RetailerSpec.model_validate(
        {
            "retailer_id": 1997,
            "name": "guard_test",
            "country": "ES",
            "currency": "EUR",
            "secure_group_key": 119997,
            "delivery": {
                "files": [
                    {"name": "ventas", "match": "ventas_*.csv", "holds": ["store_day_fact"], "format": {"type": "csv", "separator": ";"}}
                ]
            },
            "columns": {"ventas": {"Fecha": "date", "Tienda": "site_id", "Articulo": "prod_id", units_column: "pos_sales_units"}},
        }
    )


def _landing(tmp_path: Path, rows: int = 4) -> tuple[LocalLandingZone, int]:
    folder = tmp_path / "landing" / "guard_test"
    folder.mkdir(parents=True, exist_ok=True)
    day = (date.today() - timedelta(days=2)).isoformat()
    lines = ["Fecha;Tienda;Articulo;Unidades"] + [f"{day};S{i % 2};P{i};{i + 1}" for i in range(rows)]
    (folder / "ventas_1.csv").write_text("\n".join(lines) + "\n")
    return LocalLandingZone(root=str(tmp_path / "landing")), sum(i + 1 for i in range(rows))


def test_a_misspelled_source_column_rejects_the_file_naming_the_closest_column_and_a_fix_reads_it_again(tmp_path):
    lake = Lake(root=str(tmp_path / "lake"))
    landing, units = _landing(tmp_path)
    typo = _spec("Unidads")

    [outcome] = ingest_files(lake, landing, typo, ["ventas_1.csv"])
    assert (outcome.status, outcome.reason) == ("rejected", "missing_column")
    line = outcome.describe()
    assert "\n" not in line
    assert "`Unidads`" in line and "ventas_1.csv" in line and "did you mean `Unidades`?" in line
    assert not lake.exists(lake.bronze("guard_test", "ventas"))
    rejected = lake.scan(lake.quarantine("guard_test", REJECTED_FILES_TABLE)).collect()
    assert rejected["reason"].to_list() == ["missing_column"]

    # The same YAML never reads the same bytes twice.
    [again] = ingest_files(lake, landing, typo, ["ventas_1.csv"])
    assert again.status == "known_rejected"

    # The corrected YAML reads them, and every unit reaches bronze under its mapped column.
    [fixed] = ingest_files(lake, landing, _spec("Unidades"), ["ventas_1.csv"])
    assert fixed.status == "ingested" and fixed.rows == 4
    bronze = lake.scan(lake.bronze("guard_test", "ventas")).collect()
    assert bronze["Unidades"].cast(pl.Int64).sum() == units


def test_a_misspelled_target_column_fails_the_load_with_its_file_line_and_the_allowed_columns(tmp_path):
    defs = _defs_folder(tmp_path, RETAILER_YAML.replace("Unidades: pos_sales_units", "Unidades: pos_sale_units"))
    with pytest.raises(Exception) as raised:
        build_definitions(defs)
    [line] = load_error_lines(raised.value)
    path = defs / "retailers" / "guard_es" / "defs.yaml"
    number = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "pos_sale_units" in text)
    assert line.startswith(f"{path}:{number}: columns.ventas.Unidades: `pos_sale_units` is not a column of")
    assert "did you mean `pos_sales_units`?" in line and "allowed: prod_id, gtin" in line


@pytest.mark.parametrize(
    "mapping, field, words",
    [
        ({"Fecha": "date", "Tienda": "site_id", "Unidades": "pos_sales_units"}, ("columns", "ventas"), "`prod_id`"),
        ({"Fecha": "date", "Tienda": "site_id", "Articulo": "prod_id"}, ("columns", "ventas"), "no source column is mapped to a measure"),
        (
            {"Fecha": "date", "Tienda": "site_id", "Articulo": "prod_id", "Unidades": "pos_sales_units", "Uds": "pos_sales_units"},
            ("columns", "ventas", "Uds"),
            "filled by `Unidades` already",
        ),
    ],
    ids=["required_key_unmapped", "no_measure", "target_twice"],
)
def test_a_mapping_that_would_leave_a_canonical_column_null_is_an_error_at_load(mapping, field, words):
    doc = {
        "retailer_id": 1997,
        "name": "guard_es",
        "country": "ES",
        "currency": "EUR",
        "secure_group_key": 119997,
        "delivery": {"files": [{"name": "ventas", "match": "ventas_*.csv", "holds": ["store_day_fact"]}]},
        "columns": {"ventas": mapping},
    }
    with pytest.raises(ValueError) as raised:
        RetailerSpec.model_validate(doc)
    error = raised.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, FieldError) and error.field == field and words in error.message


def test_a_typo_in_an_allowed_value_makes_run_print_one_line_and_fail_without_a_traceback(tmp_path):
    defs = _defs_folder(tmp_path, RETAILER_YAML.replace("channel: landing", "channel: landng"))
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POS_LAKEHOUSE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), POS_LAKEHOUSE_DATA=str(tmp_path / "data"), POS_LAKEHOUSE_DEFS_DIR=str(defs))
    proc = subprocess.run(
        [sys.executable, "-m", "pos_lakehouse.cli", "run"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    path = defs / "retailers" / "guard_es" / "defs.yaml"
    number = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "landng" in text)
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:{number}: delivery.channel: Input should be 'landing', 'sftp', 'api' or 'database', not 'landng'"
    ]


WEEKLY_YAML = retailer_yaml(
    "weekly_nl",
    1995,
    country="NL",
    cadence="weekly",
    files=[csv_file("weeks", "weeks_*.csv", ["prod_dim", "site_dim", "store_week_fact"])],
    columns={"weeks": {"Week": "week_end_date", "Winkel": "site_id", "Artikel": "prod_id", "Aantal": "pos_sales_units"}},
)


def test_a_file_whose_weeks_mostly_miss_the_week_end_fails_the_run_naming_the_settings_and_the_share(tmp_path, data_root, instance):
    today = date.today()
    sunday = today - timedelta(days=(today.weekday() + 1) % 7 + 7)  # the end of a week that has ended
    monday = sunday - timedelta(days=6)
    folder = data_root / "landing" / "weekly_nl"
    folder.mkdir(parents=True)
    days = [monday, monday, monday, sunday]  # three week starts, one week end
    (folder / "weeks_1.csv").write_text("Week;Winkel;Artikel;Aantal\n" + "".join(f"{d};S1;P{i};{i + 1}\n" for i, d in enumerate(days)))
    defs_dir = defs_folder(tmp_path / "defs", {"weekly_nl": WEEKLY_YAML})

    result = run_ingest(defs_dir, instance, "weekly_nl", "cds_1995", {"ops": {"weekly_nl_bronze": {"config": {"files": ["weeks_1.csv"]}}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.message
    assert "3 of 4 rows (75%) of weeks_1.csv quarantined, more than max_quarantined_share 50%" in failure
    assert "`week_date: start`" in failure and "`misaligned_weeks: align`" in failure
    # The good row is in silver all the same.
    lake = Lake(root=str(data_root))
    assert lake.row_count(lake.silver("weekly_nl", "store_week_fact")) == 1


def test_a_json_array_declared_as_json_lines_is_rejected_saying_type_json(tmp_path):
    spec = RetailerSpec.model_validate(
        {
            "retailer_id": 1994,
            "name": "json_test",
            "country": "JP",
            "currency": "JPY",
            "secure_group_key": 119994,
            "delivery": {
                "files": [{"name": "stock", "match": "stock_*.json", "holds": ["store_day_fact"], "format": {"type": "jsonl"}}],
                "limits": {"max_line_bytes": 200},
            },
            "columns": {"stock": {"day": "date", "store": "site_id", "item": "prod_id", "on_hand": "inventory_qty_on_hand"}},
        }
    )
    folder = tmp_path / "landing" / "json_test"
    folder.mkdir(parents=True)
    day = (date.today() - timedelta(days=1)).isoformat()
    records = ", ".join(f'{{"day": "{day}", "store": "S1", "item": "P{i}", "on_hand": {i}}}' for i in range(20))
    (folder / "stock_1.json").write_text(f"[{records}]\n")  # one line, longer than max_line_bytes
    [outcome] = ingest_files(Lake(root=str(tmp_path / "lake")), LocalLandingZone(root=str(tmp_path / "landing")), spec, ["stock_1.json"])
    assert (outcome.status, outcome.reason) == ("rejected", "wrong_format")
    assert "`format: {type: json}`" in outcome.detail and "`[`" in outcome.detail


def test_byte_identical_empty_incremental_files_are_each_counted_as_a_file(tmp_path):
    spec = _spec("Unidades").model_copy(deep=True)
    spec.delivery.files[0].incremental = True
    folder = tmp_path / "landing" / "guard_test"
    folder.mkdir(parents=True)
    names = [f"ventas_{i}.csv" for i in range(5)]
    for name in names:
        (folder / name).write_text("Fecha;Tienda;Articulo;Unidades\n")  # "nothing new", five times the same bytes
    outcomes = ingest_files(Lake(root=str(tmp_path / "lake")), LocalLandingZone(root=str(tmp_path / "landing")), spec, names)
    assert [(o.file, o.status) for o in outcomes] == [(n, "empty") for n in names]


SNAPSHOT_FILE = csv_file("products", "artikel_*.csv", ["prod_dim"])
SNAPSHOT_COLUMNS = {"products": {"Artikel": "prod_id", "Name": "prod_name"}}
SNAPSHOT_YAML = retailer_yaml("snap_de", 1993, country="DE", files=[SNAPSHOT_FILE], columns=SNAPSHOT_COLUMNS)


def test_several_undated_snapshots_in_one_batch_fail_naming_observed_on(tmp_path, data_root, instance):
    folder = data_root / "landing" / "snap_de"
    folder.mkdir(parents=True)
    names = ["artikel_20260101.csv", "artikel_20260108.csv"]
    for week, name in enumerate(names):
        (folder / name).write_text("Artikel;Name\n" + "".join(f"P{i};Name {i} v{week}\n" for i in range(3)))
    defs_dir = defs_folder(tmp_path / "defs", {"snap_de": SNAPSHOT_YAML})

    result = run_ingest(defs_dir, instance, "snap_de", "cds_1993", {"ops": {"snap_de_bronze": {"config": {"files": names}}}})
    assert not result.success
    error = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error
    failure = error.cause.message if error.cause else error.message
    assert "2 `products` snapshots ingested on" in failure and "no `observed_on`" in failure

    # Dated by their names, both snapshots become versions.
    observed = {"observed_on": {"pattern": r"artikel_(\d{8})", "format": "%Y%m%d"}}
    dated = retailer_yaml("snap_de", 1993, country="DE", files=[{**SNAPSHOT_FILE, **observed}], columns=SNAPSHOT_COLUMNS)
    defs_folder(tmp_path / "defs", {"snap_de": dated})
    assert run_ingest(defs_dir, instance, "snap_de", "cds_1993", {"ops": {"snap_de_bronze": {"config": {"files": names}}}}).success
    lake = Lake(root=str(data_root))
    assert lake.row_count(lake.silver("snap_de", "prod_dim")) == 6
