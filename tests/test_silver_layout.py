"""Table layout: silver facts are partitioned by date, so restating a day rewrites only that day's
files (and the later blocks whose masks read it); a retailer's first gold rows are appended in
date chunks, not MERGEd, and equal silver."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bigbox_data import bigbox_stores, write_store
from deltalake import DeltaTable

from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.gold import refresh_gold
from pos_lakehouse.layers.silver import refresh_silver
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform.masking import block_start as _block_start

PRODUCTS, DAYS, STORES = 30, 24, 3
KEYS = ["date", "site_id", "prod_id"]


def _deliver(lake: Lake, landing: LocalLandingZone, spec, seen: set[str]) -> None:
    names = [f.name for f in landing.list_files(spec.name) if f.name not in seen]
    assert all(o.status == "ingested" for o in ingest_files(lake, landing, spec, names))
    seen.update(names)
    refresh_silver(lake, spec, spec.silver_tables)


def _files_by_date(uri: str) -> dict[str, set[str]]:
    files: dict[str, set[str]] = defaultdict(set)
    for path in DeltaTable(uri).file_uris():
        files[Path(path).parent.name.removeprefix("date=")].add(path)
    return files


@pytest.fixture
def loaded(tmp_path):
    stores = bigbox_stores(tmp_path, products=PRODUCTS, days=DAYS, stores=STORES, seed=7, reference=(PRODUCTS, STORES))
    spec, lake, landing, landing_dir, rng, price, dates = stores
    seen: set[str] = set()
    _deliver(lake, landing, spec, seen)
    return spec, lake, landing, landing_dir, rng, price, dates, seen


def test_restating_one_day_rewrites_only_that_days_files(loaded):
    spec, lake, landing, landing_dir, rng, price, dates, seen = loaded
    uri = lake.silver(spec.name, "store_day_fact")
    assert DeltaTable(uri).metadata().partition_columns == ["date"]
    for period in ("store_week_fact", "store_month_fact"):
        assert DeltaTable(lake.silver(spec.name, period)).metadata().partition_columns == [
            period.replace("store_", "").replace("_fact", "_end_date")
        ]
    before = _files_by_date(uri)
    assert len(before) == DAYS
    rows_before = pl.read_delta(uri).filter(pl.col("site_id") == "1003_0001")
    assert rows_before.height > 0

    restated = dates[DAYS // 2]
    write_store(landing_dir, rng, 1, [restated], price)
    _deliver(lake, landing, spec, seen)

    after = _files_by_date(uri)
    # Masks of the blocks after the restated day's block read it: those dates are rewritten too.
    remasked_from = _block_start(restated, -1)
    changed = {d for d in after if after[d] != before[d]}
    assert str(restated) in changed
    assert {d for d in changed if d < str(remasked_from)} == {str(restated)}
    # Other dates before those blocks are untouched; the restated day holds the new delivery's rows.
    lineage = ["_updated_at", "_ingested_at", "_source_file", "_delivery_id"]
    now = pl.read_delta(uri).filter(pl.col("site_id") == "1003_0001")
    kept = (pl.col("date") != restated) & (pl.col("date") < remasked_from)
    assert now.filter(kept).height > 0
    assert now.filter(kept).drop(lineage).sort(KEYS).equals(rows_before.filter(kept).drop(lineage).sort(KEYS))
    assert now.filter(pl.col("date") == restated)["_source_file"].unique().to_list() == [
        f"bigbox_us_store_0001_{restated:%Y%m%d}_{restated:%Y%m%d}.txt"
    ]


def test_first_gold_rows_are_appended_in_date_chunks_and_equal_silver(loaded, monkeypatch):
    spec, lake, *_ = loaded
    monkeypatch.setenv("POS_LAKEHOUSE_SILVER_BATCH_ROWS", "400")  # several chunks of whole dates
    silver = pl.read_delta(lake.silver(spec.name, "store_day_fact"))
    result = refresh_gold(lake, spec, "store_day_fact")
    gold_uri = lake.gold("store_day_fact")
    # Each chunk is its own data files, of whole dates (a later MERGE of a few dates rewrites only
    # their files); all the chunks land in one commit after the table's creation.
    files = pl.DataFrame(DeltaTable(gold_uri).get_add_actions(flatten=True)).sort("min.date")
    assert files.height > 1
    assert (files["max.date"].head(-1) < files["min.date"].tail(-1)).all()
    assert set(files["partition.data_provider_code"]) == {spec.data_provider_code}
    commits = [c for c in DeltaTable(gold_uri).history() if c.get("pos_lakehouse.operation") in ("append", "create")]
    assert [c["pos_lakehouse.operation"] for c in commits] == ["append", "create"]
    assert result.partition_rows == result.merged_rows == result.inserted == silver.height
    gold = pl.read_delta(gold_uri).filter(pl.col("data_provider_code") == spec.data_provider_code)
    assert gold.select(silver.columns).sort(KEYS).equals(silver.sort(KEYS))
    # Nothing changed since: the watermark (on the last chunk) makes the next refresh a no-op.
    again = refresh_gold(lake, spec, "store_day_fact")
    assert again.merged_rows == 0 and again.partition_rows == silver.height


def test_a_table_created_before_the_layout_keeps_its_own(tmp_path):
    """Appends name the layout a new table gets; an existing table (say, unpartitioned silver
    facts written before partitioning by date) keeps its layout and takes the rows."""
    lake = Lake(root=str(tmp_path))
    uri = lake.silver("old_retailer", "store_day_fact")
    day = datetime.now(UTC).date()
    rows = pl.DataFrame({"date": [day, day - timedelta(days=1)], "site_id": ["s1", "s2"], "units": [1.0, 2.0]})
    lake.append(uri, rows)  # the old layout: no partitions
    lake.append(uri, rows.with_columns(pl.col("units") * 10), partition_by=["date"])
    assert DeltaTable(uri).metadata().partition_columns == []
    assert pl.read_delta(uri)["units"].sort().to_list() == [1.0, 2.0, 10.0, 20.0]
    fresh = lake.silver("new_retailer", "store_day_fact")
    lake.append(fresh, rows, partition_by=["date"])
    assert DeltaTable(fresh).metadata().partition_columns == ["date"]
