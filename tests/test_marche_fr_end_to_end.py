"""marche_fr from landing folder to gold through sensors, jobs and automation; gold reconciles exactly."""

from __future__ import annotations

import polars as pl
from conftest import spec_named
from own_defs import execute_ingest

from pos_lakehouse.demo.generator import read_expected, write_marche_fr
from pos_lakehouse.quality.reconcile import coverage_differences, gold_totals, reconcile


def test_landing_to_gold_reconciles_exactly(data_root, lake, headless):
    files = write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=8, n_products=60, n_stores=8)
    records = headless.settle()
    assert records and all(r.success for r in records), [r.error for r in records if not r.success]

    expected = read_expected(data_root / "expected")
    assert expected.height == 8
    diffs = reconcile(expected, gold_totals(lake, [spec_named("marche_fr")]))
    assert diffs.is_empty(), diffs
    coverage = coverage_differences(lake, [spec_named("marche_fr")], expected)
    assert coverage.is_empty(), coverage
    # Had the generator written one day fewer, its week, month and calendar day would disagree.
    one_less = coverage_differences(lake, [spec_named("marche_fr")], expected.filter(pl.col("date") != expected["date"].max()))
    assert set(one_less["table"]) == {"store_week_fact", "store_month_fact", "delivery_calendar"}, one_less

    bronze_rows = lake.row_count(lake.bronze("marche_fr", "pos_daily"))
    assert bronze_rows == sum(pl.read_parquet(f).height for f in files)
    gold = lake.scan(lake.gold("store_day_fact")).collect()
    assert gold["data_provider_code"].unique().to_list() == ["cds_1001"]
    assert gold["secure_group_key"].unique().to_list() == [110011]
    assert gold["prod_id"].str.starts_with("1001_").all() and gold["site_id"].str.starts_with("1001_").all()
    assert gold.select("prod_key", "site_key").null_count().sum_horizontal().item() == 0
    # Gold is partitioned by retailer, as analysts' queries and the MERGE restriction expect.
    from deltalake import DeltaTable

    assert DeltaTable(lake.gold("store_day_fact")).metadata().partition_columns == ["data_provider_code"]


def test_settling_again_changes_nothing(data_root, lake, headless):
    write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=3, n_products=30, n_stores=4)
    headless.settle()
    versions = {t: lake.version(lake.gold(t)) for t in ("prod_dim", "site_dim", "store_day_fact")}
    bronze_version = lake.version(lake.bronze("marche_fr", "pos_daily"))
    assert headless.settle() == []
    assert lake.version(lake.bronze("marche_fr", "pos_daily")) == bronze_version
    assert {t: lake.version(lake.gold(t)) for t in versions} == versions


def test_days_delivered_one_run_at_a_time(data_root, lake, headless):
    landing = data_root / "landing" / "marche_fr"
    staging = data_root / "staging"
    files = write_marche_fr(staging, data_root / "expected", days=5, n_products=40, n_stores=5)
    landing.mkdir(parents=True)
    delivered = []
    for f in files:
        (landing / f.name).write_bytes(f.read_bytes())
        delivered.append(f)
        runs = headless.settle()
        assert [r for r in runs if r.name == "marche_fr_ingest"], "each delivery gives one ingest run"
        assert lake.row_count(lake.bronze("marche_fr", "pos_daily")) == sum(pl.read_parquet(x).height for x in delivered)
    expected = read_expected(data_root / "expected")
    assert reconcile(expected, gold_totals(lake, [spec_named("marche_fr")])).is_empty()


def test_manual_rematerialization_never_appends_twice(data_root, lake, defs, instance, headless):
    files = write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=2, n_products=20, n_stores=3)
    headless.settle()
    rows = lake.row_count(lake.bronze("marche_fr", "pos_daily"))
    for config in ({"files": [f.name for f in files]}, {}):  # named files, then "everything in the folder"
        result = execute_ingest(
            defs, "marche_fr", instance=instance, partition_key="cds_1001", run_config={"ops": {"marche_fr_bronze": {"config": config}}}
        )
        assert result.success
        mat = result.asset_materializations_for_node("marche_fr_bronze")[0]
        assert mat.metadata["files_skipped_duplicate"].value == len(files)
    assert lake.row_count(lake.bronze("marche_fr", "pos_daily")) == rows
