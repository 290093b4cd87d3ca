"""A restating delivery's quarantined rows restate nothing: the good facts they may stand for stay.

A delivery that restates store-days removes the stored rows of those store-days it no longer
holds. A row it holds but that broke a rule (here: a date typed into the future) is not a
restatement of its key: the earlier good fact stays until a good row replaces it, while a row
the delivery really left out is still removed.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
from conftest import spec_named

from pos_lakehouse.demo.file_retailers import write_kaufhalle_de
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.gold import refresh_gold
from pos_lakehouse.layers.silver import refresh_silver

HEADER = "Datum;Filiale;Artikel;Menge;Umsatz;Retouren"


def _run_layers(lake, data_root: Path, files: list[str]):
    spec = spec_named("kaufhalle_de")
    ingest_files(lake, LocalLandingZone(root=str(data_root / "landing")), spec, files)
    silver = refresh_silver(lake, spec, spec.canonical_tables)
    for table in spec.canonical_tables:
        refresh_gold(lake, spec, table)
    return silver


def _gold(lake) -> pl.DataFrame:
    return lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == "cds_1002").collect()


def _key(row: list[str]) -> tuple[date, str, str]:
    return datetime.strptime(row[0], "%d.%m.%Y").date(), f"1002_{row[1]}", f"1002_{row[2]}"


def test_quarantined_row_of_a_restating_file_keeps_the_good_fact(data_root, lake):
    start = date.today() - timedelta(days=21)
    files = write_kaufhalle_de(
        data_root / "landing" / "kaufhalle_de", data_root / "expected", weeks=1, start=start, n_products=12, n_stores=3
    )
    _run_layers(lake, data_root, [f.name for f in files])
    before = _gold(lake)
    rows = [line.split(";") for line in files[-1].read_bytes().decode("latin-1").split("\r\n")[1:-1]]
    d1 = rows[0][0]
    d2 = (datetime.strptime(d1, "%d.%m.%Y") + timedelta(days=1)).strftime("%d.%m.%Y")
    restated = [list(r) for r in rows if r[0] in (d1, d2) and r[1] in ("F000", "F001")]
    assert len(restated) >= 5, "the generator's density leaves too few rows to restate"
    # The correction leaves one row out for real, and three of its rows carry a date typed into the future.
    dropped = restated.pop(0)
    typo_keys = [_key(r) for r in restated[:3]]
    future = (date.today() + timedelta(days=5)).strftime("%d.%m.%Y")
    for r in restated[:3]:
        r[0] = future
    correction = files[-1].with_name(f"kaufhalle_umsatz_{start:%Y%m%d}_{start:%Y%m%d}_korrektur.csv")
    correction.write_bytes(("\r\n".join([HEADER] + [";".join(r) for r in restated]) + "\r\n").encode("latin-1"))

    silver = _run_layers(lake, data_root, [correction.name])

    result = silver["store_day_fact"]
    assert result.quarantined == 3 and result.quarantine_reasons == {"date: in the future": 3}
    assert result.removed == 1  # the row left out, and only it
    after = _gold(lake)
    keys = ["date", "site_id", "prod_id"]
    as_keys = lambda frame: set(frame.select(keys).iter_rows())  # noqa: E731
    assert _key(dropped) not in as_keys(after)
    # The three earlier good facts stay, with their earlier values.
    typo_frame = pl.DataFrame(typo_keys, schema=keys, orient="row")
    kept_before = before.join(typo_frame, on=keys).sort(keys)
    kept_after = after.join(typo_frame, on=keys).sort(keys)
    assert kept_before.height == 3
    assert kept_after.select(*keys, "pos_sales_units").equals(kept_before.select(*keys, "pos_sales_units"))
    # Nothing else changed but the dropped row: gold lost exactly one row and its units.
    assert after.height == before.height - 1
    dropped_units = int(dropped[3])
    assert after["pos_sales_units"].cast(pl.Int64).sum() == before["pos_sales_units"].cast(pl.Int64).sum() - dropped_units
    assert after.select(keys).is_unique().all()
