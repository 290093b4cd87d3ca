"""Bronze writes a call's files itself and commits them together: what that must keep.

One Delta commit per call and table; each delivery exactly once (by its content, also within one
call and against a writer that got there first); each delivery's rows in their own data file, in
delivered order, with the delivery id in the log's statistics; new columns widen the table; a
bad file is quarantined without stopping the good ones around it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.ingest.lineage import BronzeDeliveries
from pos_lakehouse.layers.bronze import REJECTED_FILES_TABLE, ingest_files
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.delta_files import commit_once, write_data_file
from pos_lakehouse.storage.lake import Lake


def _spec() -> RetailerSpec:
    return RetailerSpec.model_validate(
        {
            "retailer_id": 1998,
            "name": "batch_test",
            "country": "DE",
            "currency": "EUR",
            "secure_group_key": 119998,
            "delivery": {
                "files": [
                    {"name": "sales", "match": "sales_*.csv", "holds": ["store_day_fact"], "format": {"type": "csv", "separator": ";"}}
                ]
            },
            "columns": {"sales": {"Datum": "date", "Filiale": "site_id", "Artikel": "prod_id", "Menge": "pos_sales_units"}},
        }
    )


def _csv(rows: int, first: int = 0, extra: str | None = None) -> bytes:
    day = (date.today() - timedelta(days=1)).isoformat()
    header = "Datum;Filiale;Artikel;Menge" + (f";{extra}" if extra else "")
    lines = [header] + [f"{day};S{i % 3};P{i};{i}" + (f";x{i}" if extra else "") for i in range(first, first + rows)]
    return ("\n".join(lines) + "\n").encode()


def _landing(tmp_path: Path, files: dict[str, bytes]) -> LocalLandingZone:
    folder = tmp_path / "landing" / "batch_test"
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)
    return LocalLandingZone(root=str(tmp_path / "landing"))


def test_a_call_commits_once_and_each_delivery_keeps_its_own_file_rows_and_id(tmp_path):
    lake = Lake(root=str(tmp_path))
    files = {
        "sales_1.csv": _csv(5),
        "sales_2.csv": _csv(7, first=100),
        "sales_2_again.csv": _csv(7, first=100),
        "sales_3.csv": _csv(3, first=200),
    }
    landing = _landing(tmp_path, files)
    out = ingest_files(lake, landing, _spec(), list(files))
    assert [(o.status, o.rows) for o in out] == [("ingested", 5), ("ingested", 7), ("duplicate", 0), ("ingested", 3)]

    uri = lake.bronze("batch_test", "sales")
    dt = DeltaTable(uri)
    assert dt.version() == 1  # the empty table, then one commit for the three deliveries
    bronze = lake.scan(uri).collect()
    assert bronze.height == 15 and bronze["_delivery_id"].n_unique() == 3
    # One data file per delivery, its rows in delivered order; the log knows each file's delivery.
    actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    assert actions.height == 3
    assert (actions["min._delivery_id"] == actions["max._delivery_id"]).all()
    assert set(actions["min._delivery_id"]) == {o.delivery_id for o in out if o.status == "ingested"}
    assert sorted(actions["num_records"].to_list()) == [3, 5, 7]
    for path in dt.file_uris():
        rows = pl.read_parquet(path)
        assert rows["_row_number"].to_list() == list(range(1, rows.height + 1))
        assert rows["_source_file"].n_unique() == 1
    second = bronze.filter(pl.col("_source_file") == "sales_2.csv").sort("_row_number")
    assert second["Artikel"].to_list() == [f"P{i}" for i in range(100, 107)]
    assert bronze.schema["_ingested_at"] == pl.Datetime("us", "UTC") and bronze.schema["secure_group_key"] == pl.Int64

    # Re-delivered as a whole: nothing appended, no commit.
    again = ingest_files(lake, landing, _spec(), list(files))
    assert {o.status for o in again} == {"duplicate"}
    assert DeltaTable(uri).version() == 1
    # The log's statistics tell which deliveries a table holds without reading rows.
    assert BronzeDeliveries(lake, uri).holds(out[0].delivery_id)
    assert not BronzeDeliveries(lake, uri).holds("0" * 64)


def test_a_bad_file_in_a_call_is_quarantined_and_the_others_load_with_new_columns(tmp_path):
    lake = Lake(root=str(tmp_path))
    ragged = _csv(4) + b"2024-01-01;S1;P9;9;too;many\n"
    files = {"sales_1.csv": _csv(4), "sales_2.csv": ragged, "sales_3.csv": _csv(2, first=50, extra="Kasse")}
    out = ingest_files(lake, _landing(tmp_path, files), _spec(), list(files))
    assert [o.status for o in out] == ["ingested", "rejected", "ingested"]
    assert out[1].reason == "wrong_field_count" and "sales_2.csv" in out[1].describe()
    uri = lake.bronze("batch_test", "sales")
    bronze = lake.scan(uri).collect()
    assert bronze.height == 6 and "Kasse" in bronze.columns
    assert bronze.filter(pl.col("_source_file") == "sales_1.csv")["Kasse"].null_count() == 4
    assert bronze.filter(pl.col("_source_file") == "sales_3.csv")["Kasse"].to_list() == ["x50", "x51"]
    # Only committed files are in the table's folder: the rejected file left nothing behind.
    assert len(list(Path(uri).glob("*.parquet"))) == len(DeltaTable(uri).file_uris()) == 2
    rejected = lake.scan(lake.quarantine("batch_test", REJECTED_FILES_TABLE)).collect()
    assert rejected["file"].to_list() == ["sales_2.csv"]


def test_a_staged_delivery_another_writer_committed_first_is_dropped(tmp_path):
    uri = str(tmp_path / "bronze" / "t")
    now = datetime.now(UTC)

    def stage(delivery: str, rows: int):
        frame = pl.LazyFrame({"a": [str(i) for i in range(rows)]}).with_columns(
            pl.lit(delivery).alias("_delivery_id"), pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_ingested_at")
        )
        return write_data_file(uri, frame, {"_delivery_id": (delivery, delivery), "_ingested_at": (now, now)})

    assert commit_once(uri, {"d1": stage("d1", 2)}) == {"d1"}  # the other writer
    mine = {"d1": stage("d1", 2), "d2": stage("d2", 3)}
    assert commit_once(uri, mine) == {"d2"}
    rows = pl.read_delta(uri)
    assert rows.height == 5 and rows["_delivery_id"].value_counts().sort("_delivery_id")["count"].to_list() == [2, 3]
    assert not Path(mine["d1"].uri).exists()  # the loser's file is removed, not left as an orphan
    assert len(list(Path(uri).glob("*.parquet"))) == 2


def test_a_write_that_fails_beside_another_leaves_no_file_and_a_rerun_loads_all(tmp_path, monkeypatch):
    """Files are written two at a time: when one write fails for a reason that is not the file's
    (a disk error), the run fails, the files already written or being written beside it are
    removed, nothing is committed, and the next run loads every delivery once."""
    from pos_lakehouse.storage import delta_files as bronze  # bronze stages its files through the Lake, which writes them here

    lake = Lake(root=str(tmp_path))
    files = {f"sales_{i}.csv": _csv(20 + i, first=100 * i) for i in range(6)}
    landing = _landing(tmp_path, files)
    real_write = bronze.write_data_file
    calls = []

    def failing_write(uri, frame, *args, **kwargs):
        calls.append(uri)
        if len(calls) == 4:
            raise OSError("disk full (simulated)")
        return real_write(uri, frame, *args, **kwargs)

    monkeypatch.setattr(bronze, "write_data_file", failing_write)
    try:
        ingest_files(lake, landing, _spec(), list(files))
    except OSError as exc:
        assert "disk full" in str(exc)
    else:
        raise AssertionError("the failed write did not fail the run")
    uri = lake.bronze("batch_test", "sales")
    table = lake.table(uri)
    assert table is None or table.file_uris() == []
    assert list(Path(uri).glob("*.parquet")) == []

    monkeypatch.setattr(bronze, "write_data_file", real_write)
    out = ingest_files(lake, landing, _spec(), list(files))
    assert [o.status for o in out] == ["ingested"] * 6
    assert [o.file for o in out] == list(files)
    bronze_rows = lake.scan(uri).collect()
    assert bronze_rows.height == sum(20 + i for i in range(6)) and bronze_rows["_delivery_id"].n_unique() == 6
    assert len(list(Path(uri).glob("*.parquet"))) == len(lake.table(uri).file_uris()) == 6
