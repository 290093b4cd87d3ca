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

from pos_lakehouse.components.yaml_errors import load_error_lines
from pos_lakehouse.definitions import build_definitions
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import REJECTED_FILES_TABLE, ingest_files
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.retailer_checks import FieldError
from pos_lakehouse.storage.lake import Lake

RETAILER_YAML = """\
type: pos_lakehouse.components.RetailerPipeline
attributes:
  retailer_id: 1997
  name: guard_es
  country: ES
  currency: EUR
  secure_group_key: 119997
  delivery:
    channel: landing
    files:
      - name: ventas
        match: "ventas_*.csv"
        holds: [prod_dim, site_dim, store_day_fact]
        format: {type: csv, separator: ";"}
  columns:
    ventas:
      Fecha: date
      Tienda: site_id
      Articulo: prod_id
      Unidades: pos_sales_units
"""


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
