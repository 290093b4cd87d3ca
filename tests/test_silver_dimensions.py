"""Dimension observations from bronze: the last good row of an entity and day wins, whatever its
key's spelling; a bad row is quarantined and never wins; a later batch of deliveries wins over an
earlier one. Both dimensions are read from the same store files (bigbox_us's one file kind)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import spec_named

from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.silver import REJECTED_ROWS_TABLE, refresh_silver
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform.scd2 import START_OF_HISTORY

HEADER = "STORE_NBR|STORE_NAME|CITY|STATE|LAT|ITEM_NBR|UPC|ITEM_DESC|BRAND|DEPT|SALES_DATE|UNIT_QTY|SALES_AMT"


def _spec():
    """bigbox_us with the store's latitude mapped: a dimension column that can fail to parse."""
    spec = spec_named("bigbox_us")
    # Only the columns these files carry: a mapped column a file lacks rejects the file.
    mapped = {k: v for k, v in spec.columns["store_sales"].items() if k in HEADER.split("|")}
    columns = {**spec.columns, "store_sales": {**mapped, "LAT": "latitude"}}
    return spec.model_copy(update={"columns": columns})


def _row(store: str, store_name: str, lat: str, item: str, item_name: str, day) -> str:
    return f"{store}|{store_name}|Austin|TX|{lat}|{item}|0001|{item_name}|Acme|Food|{day:%m/%d/%Y}|1|2.50"


def _two_days():
    """Two consecutive days ending the day before yesterday."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    return yesterday - timedelta(days=2), yesterday - timedelta(days=1)


def _load(root: Path, files: dict[str, list[str]]):
    spec = _spec()
    lake = Lake(root=str(root))
    landing_dir = root / "landing" / spec.name
    landing_dir.mkdir(parents=True)
    for name, rows in files.items():
        (landing_dir / name).write_text("\n".join([HEADER, *rows]) + "\n")
    landing = LocalLandingZone(root=str(root / "landing"))
    outcomes = ingest_files(lake, landing, spec, sorted(files))
    assert [o.status for o in outcomes] == ["ingested"] * len(files)
    results = refresh_silver(lake, spec, ["prod_dim", "site_dim"])
    versions = {
        table: pl.read_delta(lake.silver(spec.name, table)).sort(key, "valid_from").select(key, "valid_from", "valid_to", name)
        for table, key, name in (("prod_dim", "prod_id", "prod_name"), ("site_dim", "site_id", "site_name"))
    }
    return lake, spec, results, versions


def test_last_good_row_of_an_entity_day_wins_and_a_bad_last_row_is_quarantined(tmp_path, monkeypatch):
    monkeypatch.delenv("POS_LAKEHOUSE_SILVER_BATCH_ROWS", raising=False)
    d, e = _two_days()
    store_file = [
        _row("1", "Store One", "40.1", "10", "Alpha", d),
        # The same product spelled with spaces: the same entity, and the last row of its day.
        _row("1", "Store One B", "40.2", " 10 ", "Alpha 2", d),
        # Last row of store 1 on day d, but its latitude is broken: quarantined for site_dim, never
        # its observation; its product part is fine (prod_dim checks only product columns).
        _row("1", "Store One BAD", "north", "11", "Beta", d),
        _row("1", "Store One", "40.1", "10", "Alpha", e),
    ]
    lake, spec, results, versions = _load(tmp_path, {f"bigbox_us_store_0001_{d:%Y%m%d}_{e:%Y%m%d}.txt": store_file})

    assert versions["prod_dim"].filter(pl.col("prod_id") == "1003_10").rows() == [
        ("1003_10", START_OF_HISTORY, d, "Alpha 2"),
        ("1003_10", e, None, "Alpha"),
    ]
    assert versions["prod_dim"].filter(pl.col("prod_id") == "1003_11").rows() == [("1003_11", START_OF_HISTORY, None, "Beta")]
    assert versions["site_dim"].rows() == [
        ("1003_1", START_OF_HISTORY, d, "Store One B"),
        ("1003_1", e, None, "Store One"),
    ]
    assert results["site_dim"].quarantined == 1
    assert results["site_dim"].quarantine_reasons == {"latitude: cannot parse": 1}
    assert results["prod_dim"].quarantined == 0
    assert (results["prod_dim"].input_rows, results["site_dim"].input_rows) == (3, 2)
    rejected = pl.read_delta(lake.quarantine(spec.name, REJECTED_ROWS_TABLE))
    assert rejected.select("canonical_table", "_row_number").rows() == [("site_dim", 3)]
    assert "north" in rejected["raw_values"][0]


@pytest.mark.parametrize("batch_rows", [4, 1_000_000])
def test_a_later_delivery_batch_wins_the_same_entity_day(tmp_path, monkeypatch, batch_rows):
    """Two deliveries observe store 1 and product 10 on day e: the later one wins, in batches of one
    delivery each (as if they had arrived one after another) and in one batch; on their own days
    each delivery's observation stands."""
    monkeypatch.setenv("POS_LAKEHOUSE_SILVER_BATCH_ROWS", str(batch_rows))
    d, e = _two_days()
    first = [
        _row("1", "Store One", "40.1", "10", "Alpha", d),
        _row("1", "Store One", "40.1", "20", "Gamma", d),
        _row("1", "Store One", "40.1", "10", "Alpha", e),
        _row("2", "Store Two", "41.0", "20", "Gamma", e),
    ]
    later = [_row("1", "Store One C", "40.3", "10", "Alpha 3", e), _row("1", "Store One C", "north", "20", "Gamma 2", e)]
    files = {f"bigbox_us_store_0001_{d:%Y%m%d}_{e:%Y%m%d}.txt": first, f"bigbox_us_store_0001_{d:%Y%m%d}_{e:%Y%m%d}_b.txt": later}
    _, _, results, versions = _load(tmp_path, files)

    assert results["site_dim"].quarantined == 1
    assert versions["site_dim"].filter(pl.col("site_id") == "1003_2").rows() == [("1003_2", START_OF_HISTORY, None, "Store Two")]
    # Whatever the batch size, the later delivery (ingested together: the later file name, as facts
    # rank deliveries) wins day e; in one batch too, although bronze data file names are random.
    assert versions["prod_dim"].filter(pl.col("prod_id") == "1003_20").rows() == [
        ("1003_20", START_OF_HISTORY, d, "Gamma"),
        ("1003_20", e, None, "Gamma 2"),
    ]
    assert versions["prod_dim"].filter(pl.col("prod_id") == "1003_10").rows() == [
        ("1003_10", START_OF_HISTORY, d, "Alpha"),
        ("1003_10", e, None, "Alpha 3"),
    ]
    # The later delivery's bad row (broken latitude) is not store 1's observation on day e.
    assert versions["site_dim"].filter(pl.col("site_id") == "1003_1").rows() == [
        ("1003_1", START_OF_HISTORY, d, "Store One"),
        ("1003_1", e, None, "Store One C"),
    ]


@pytest.mark.parametrize("with_batch", [False, True])
@pytest.mark.parametrize("ranked", [False, True])
def test_keep_last_equals_the_last_row_of_each_group_in_order(with_batch, ranked):
    """The engine's grouped maximum (one integer of batch, file rank and row) keeps the same rows as
    sorting by the order and taking each group's last row: files spanning batches, null keys,
    files ranked by name or by a given read order."""
    import narwhals as nw
    import numpy as np

    from pos_lakehouse.transform.scd2 import keep_last

    rng = np.random.default_rng(7)
    n = 5_000
    paths = [f"s3://bronze/part-{i:02d}-{rng.integers(1 << 30):x}.parquet" for i in range(6)]
    frame = pl.DataFrame(
        {
            "k": pl.Series([None if v == 0 else f"k{v}" for v in rng.integers(0, 40, n)], dtype=pl.String),
            "d": rng.integers(0, 3, n),
            "_batch": rng.integers(0, 3, n),
            "_file_path": [paths[i] for i in rng.integers(0, len(paths), n)],
            "_file_row": pl.Series(rng.permutation(n), dtype=pl.UInt32),
            "v": np.arange(n),
        }
    )
    order = ["_batch", "_file_path", "_file_row"] if with_batch else ["_file_path", "_file_row"]
    file_order = list(rng.permutation(paths)) if ranked and not with_batch else None
    rank = {p: i for i, p in enumerate(file_order or sorted(paths))}
    expected = (
        frame.with_columns(pl.col("_file_path").replace_strict(rank, return_dtype=pl.Int64).alias("_rank"))
        .sort([*order[:-2], "_rank", "_file_row"])
        .group_by("k", "d", maintain_order=True)
        .last()
        .sort("v")["v"]
        .to_list()
    )
    kept = keep_last(nw.from_native(frame.lazy()), ["k", "d"], order, file_order).to_native().collect()
    assert kept.columns == frame.columns
    assert sorted(kept["v"].to_list()) == expected
    assert len(expected) == frame.select("k", "d").unique().height
