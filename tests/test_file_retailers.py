"""The five file-based demo retailers, landing folder to gold through sensors and automation, reconcile exactly.

Together with marche_fr they cover every file shape: separate dim and fact files, one file with
many dates, one file per store with many dates, weekly week-ending totals (Excel), weekly files
with every day, and several files per date (sales and inventory apart).
"""

from __future__ import annotations

import gzip
import json

import polars as pl
from conftest import spec_named
from own_defs import execute_ingest

from pos_lakehouse.demo.file_retailers import (
    write_bigbox_us,
    write_kaufhalle_de,
    write_polder_nl,
    write_prairie_ca,
    write_sakura_jp,
)
from pos_lakehouse.demo.generator import read_expected
from pos_lakehouse.quality.reconcile import coverage_differences, gold_totals, reconcile

# bigbox_us runs on Spark: its silver and gold are covered by tests/test_spark_parity.py (same
# contract, real Spark); here its file shape is checked at bronze, which is the same for both engines.
RETAILERS = ("kaufhalle_de", "polder_nl", "prairie_ca", "sakura_jp")


def _gold(lake, table: str, code: str) -> pl.DataFrame:
    return lake.scan(lake.gold(table)).filter(pl.col("data_provider_code") == code).collect()


def test_every_file_retailer_lands_in_gold_and_reconciles(data_root, lake, headless):
    landing, expected = data_root / "landing", data_root / "expected"
    files = {
        "kaufhalle_de": write_kaufhalle_de(landing / "kaufhalle_de", expected, weeks=2, n_products=30, n_stores=4),
        "polder_nl": write_polder_nl(landing / "polder_nl", expected, weeks=2, n_products=25, n_stores=3),
        "prairie_ca": write_prairie_ca(landing / "prairie_ca", expected, weeks=2, n_products=25, n_stores=3),
        "sakura_jp": write_sakura_jp(landing / "sakura_jp", expected, days=3, n_products=25, n_stores=3),
    }
    runs = headless.settle()
    assert runs and all(r.success for r in runs), [r.error for r in runs if not r.success]
    assert {r.name for r in runs} >= {f"{name}_ingest" for name in RETAILERS}

    specs = [spec_named(n) for n in RETAILERS]
    exp = read_expected(expected)
    assert set(exp["retailer"].unique()) == set(RETAILERS)
    diffs = reconcile(exp, gold_totals(lake, specs))
    assert diffs.is_empty(), diffs
    # Weeks and months say how many of their days the files held; the calendar adds up to the files' rows.
    coverage = coverage_differences(lake, specs, exp)
    assert coverage.is_empty(), coverage
    assert all(lake.exists(lake.silver(n, "delivery_calendar")) for n in RETAILERS)

    # Every delivered file is in bronze exactly once.
    for name, written in files.items():
        spec = spec_named(name)
        delivered = set()
        for fs in spec.delivery.files:
            uri = lake.bronze(name, fs.name)
            delivered |= set(lake.scan(uri).select("_source_file").unique().collect()["_source_file"])
        assert delivered == {f.name for f in written}, name

    # kaufhalle_de: latin-1 names survive, dims come from their own files, extra columns are kept.
    prods = _gold(lake, "prod_dim", "cds_1002")
    assert prods.height == 30 and prods["prod_name"].str.contains("ü|ä|ö|ß").any()
    extras = [json.loads(e) for e in prods["extra_attributes"]]
    assert all({"Grundpreis", "Pfand"} <= set(e) for e in extras)
    sites = _gold(lake, "site_dim", "cds_1002")
    assert sites.height == 4 and sites["city"].str.contains("ü|ö").any()
    kh_dates = _gold(lake, "store_day_fact", "cds_1002")["date"].unique()
    assert kh_dates.len() == 14  # two weekly files, seven dates each

    # polder_nl: weekly totals on their week-ending Sundays, in store_week_fact only.
    wk = _gold(lake, "store_week_fact", "cds_1006")
    assert wk.height == exp.filter(pl.col("retailer") == "polder_nl")["rows"].sum()
    assert set(wk["week_end_date"].dt.weekday().unique()) == {7}
    assert not lake.exists(lake.gold("store_day_fact")) or _gold(lake, "store_day_fact", "cds_1006").is_empty()

    # prairie_ca: each weekly file holds Monday to Sunday of its week.
    pc = _gold(lake, "store_day_fact", "cds_1007")
    per_file = pc.group_by("_source_file").agg(
        pl.col("date").min().alias("lo"), pl.col("date").max().alias("hi"), pl.col("date").n_unique().alias("n")
    )
    assert per_file["n"].to_list() == [7, 7]
    assert set(per_file["lo"].dt.weekday()) == {1} and set(per_file["hi"].dt.weekday()) == {7}

    # sakura_jp: sales and inventory arrive apart and fill the same rows; neither nulls the other.
    sk = _gold(lake, "store_day_fact", "cds_1008")
    inventory = pl.concat([pl.read_ndjson(f) for f in files["sakura_jp"] if f.name.startswith("sakura_jp_inventory_")])
    assert sk["inventory_qty_on_hand"].cast(pl.Int64).sum() == inventory["on_hand"].sum()
    assert sk["inventory_qty_on_order"].cast(pl.Int64).sum() == inventory["on_order"].sum()
    both = sk.filter(pl.col("pos_sales_units").is_not_null() & pl.col("inventory_qty_on_hand").is_not_null())
    assert both.height > 0
    assert sk.filter(pl.col("pos_sales_units").is_null()).height > 0  # stock of items not sold that day
    assert set(sk["currency"].unique()) == {"JPY"}


def test_bigbox_us_one_file_per_store_with_many_dates_reaches_bronze(data_root, lake, defs, instance):
    files = write_bigbox_us(data_root / "landing" / "bigbox_us", data_root / "expected", days=10, n_products=40, n_stores=4)
    result = execute_ingest(
        defs,
        "bigbox_us",
        # Bronze only: the delivery's run would carry on to silver and gold on Spark (the spark tests' part).
        [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[:2] == ["bronze", "bigbox_us"]],
        instance=instance,
        partition_key="cds_1003",
        run_config={"ops": {"bigbox_us_bronze": {"config": {"files": [f.name for f in files]}}}},
    )
    assert result.success
    spec = spec_named("bigbox_us")
    [fs] = spec.delivery.files
    bronze = lake.scan(lake.bronze("bigbox_us", fs.name)).collect()
    assert bronze.height == read_expected(data_root / "expected")["rows"].sum()
    # One file per store, each holding rows of several dates.
    assert bronze["_source_file"].n_unique() == len(files) == 4
    assert sorted(bronze["_source_file"].unique()) == sorted(f.name for f in files)


def test_generators_are_deterministic(tmp_path):
    a = write_prairie_ca(tmp_path / "a", tmp_path / "ea", weeks=1, n_products=5, n_stores=2)
    b = write_prairie_ca(tmp_path / "b", tmp_path / "eb", weeks=1, n_products=5, n_stores=2)
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    assert gzip.decompress(a[0].read_bytes()).decode().startswith(" Store Number ,")
    k1 = write_kaufhalle_de(tmp_path / "k1", tmp_path / "ek1", weeks=1, n_products=5, n_stores=2)
    k2 = write_kaufhalle_de(tmp_path / "k2", tmp_path / "ek2", weeks=1, n_products=5, n_stores=2)
    assert [f.read_bytes() for f in k1] == [f.read_bytes() for f in k2]
    assert (tmp_path / "ek1" / "kaufhalle_de.csv").read_bytes() == (tmp_path / "ek2" / "kaufhalle_de.csv").read_bytes()
