"""Onboarding mistakes are named where they are made: nothing a YAML typo hides is lost silently.

A mapped source column a file lacks rejects the file (quarantined, the run fails) with one line
naming the column, the file and the closest column present; once the YAML is corrected the same
bytes are read again, while an unchanged YAML never reads them twice.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl

from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import REJECTED_FILES_TABLE, ingest_files
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake


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
