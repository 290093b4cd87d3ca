"""Silver a data team can trust, end to end on generated deliveries: SCD2 history, corporate
enrichment, FX, period aggregates, antitrust twins and blocking data-quality checks."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import polars as pl

from pos_lakehouse.demo.generator import DEMO_START, write_marche_fr
from pos_lakehouse.demo.reference import CORPORATE_FOLDER, write_corporate_reference
from pos_lakehouse.transform.keys import surrogate_key


def _load(data_root, headless, **kwargs):
    write_corporate_reference(data_root / "landing" / CORPORATE_FOLDER, products=400, sites=60)
    files = write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", **kwargs)
    runs = headless.settle()
    assert runs and all(r.success for r in runs), [r.error for r in runs if not r.success]
    return files


def test_scd2_story_rename_on_day_20(data_root, lake, headless):
    rename_day = DEMO_START + timedelta(days=19)
    files = _load(data_root, headless, days=24, n_products=12, n_stores=3, density=1.0, renames={19: (7, "Produit 00007 XL")})
    for layer_uri in (lake.silver("marche_fr", "prod_dim"), lake.gold("prod_dim")):
        versions = lake.scan(layer_uri).filter(pl.col("prod_id") == "1001_A00007").collect().sort("valid_from")
        assert versions["prod_name"].to_list() == ["Produit 00007", "Produit 00007 XL"]
        assert versions["valid_to"].to_list() == [rename_day - timedelta(days=1), None]
        assert versions["is_current"].to_list() == [False, True]
    old_key = surrogate_key(1001, ["1001_A00007"], date(1900, 1, 1))
    new_key = surrogate_key(1001, ["1001_A00007"], rename_day)
    facts = lake.scan(lake.gold("store_day_fact")).filter(pl.col("prod_id") == "1001_A00007").collect()
    assert set(facts.filter(pl.col("date") < rename_day)["prod_key"]) == {old_key}
    assert set(facts.filter(pl.col("date") >= rename_day)["prod_key"]) == {new_key}
    # Every other product has exactly one version: re-delivering unchanged attributes changes nothing.
    others = lake.scan(lake.silver("marche_fr", "prod_dim")).filter(pl.col("prod_id") != "1001_A00007").collect()
    assert others["prod_id"].n_unique() == others.height == 11
    delivered = pl.concat([pl.read_parquet(f) for f in files])
    assert facts.height == delivered.filter(pl.col("code_article") == "A00007").height


def test_enrichment_hits_and_misses_are_counted_not_fatal(data_root, lake, headless, instance):
    files = _load(data_root, headless, days=3, n_products=40, n_stores=8)
    master = pl.read_csv(data_root / "landing" / CORPORATE_FOLDER / "product_master.csv", schema_overrides={"gtin": pl.String})
    delivered = pl.concat([pl.read_parquet(f) for f in files]).select(pl.col("ean").alias("gtin")).unique()
    expected_hits = delivered.join(master, on="gtin", how="semi").height
    assert 0 < expected_hits < delivered.height  # the demo includes competitor products
    prod = lake.scan(lake.silver("marche_fr", "prod_dim")).collect()
    assert prod.filter(pl.col("corp_product_code").is_not_null()).height == expected_hits
    assert prod.height == delivered.height  # misses are kept, with null corp_* columns
    event = instance.get_latest_materialization_event(dg.AssetKey(["silver", "marche_fr", "prod_dim"]))
    meta = event.asset_materialization.metadata
    assert meta["corporate_master_matched"].value == expected_hits
    assert meta["corporate_master_missing"].value == delivered.height - expected_hits
    assert {c.name for c in meta["dagster/column_schema"].schema.columns} >= {"prod_key", "prod_id", "corp_product_code"}

    # Row accounting of the fact refresh: every bronze row is loaded, quarantined or superseded.
    accounted = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(["silver", "marche_fr", "store_day_fact"]), "bronze_rows_accounted")]
    )
    evaluation = next(iter(accounted.values())).event.dagster_event.event_specific_data
    assert evaluation.passed
    assert evaluation.metadata["bronze_rows_read"].value == sum(pl.read_parquet(f).height for f in files)

    sites = lake.scan(lake.gold("site_dim")).collect()
    site_master = pl.read_csv(
        data_root / "landing" / CORPORATE_FOLDER / "site_master.csv", schema_overrides={"global_location_number": pl.String}
    )
    assert (
        sites.filter(pl.col("corp_site_code").is_not_null()).height
        == sites.join(site_master, on="global_location_number", how="semi").height
    )

    fx = pl.read_csv(data_root / "landing" / CORPORATE_FOLDER / "fx_rates.csv", try_parse_dates=True)
    facts = lake.scan(lake.gold("store_day_fact")).collect()
    joined = facts.join(fx, on=["date", "currency"], how="left")
    assert joined["usd_per_unit"].null_count() == 0
    assert (joined["fx_rate_to_usd"] == joined["usd_per_unit"]).all()
    recomputed = (joined["pos_sales_value_lc"].cast(pl.Float64) * joined["usd_per_unit"]).round(4)
    assert ((joined["pos_sales_value_usd"].cast(pl.Float64) - recomputed).abs() < 1e-6).all()


def test_week_and_month_facts_equal_daily_sums_and_carry_masks(data_root, lake, headless):
    _load(data_root, headless, days=40, n_products=10, n_stores=3)
    day = lake.scan(lake.gold("store_day_fact")).collect()
    flows = ["pos_sales_units", "pos_sales_value_lc", "pos_returns_units", "pos_returns_value_lc"]
    for table, end_col in (("store_week_fact", "week_end_date"), ("store_month_fact", "month_end_date")):
        period = lake.scan(lake.gold(table)).collect()
        for m in flows:
            assert period[m].sum() == day[m].sum(), (table, m)
        # Per site and product, too.
        by_key = period.group_by("site_id", "prod_id").agg(pl.col("pos_sales_units").sum()).sort("site_id", "prod_id")
        day_by_key = day.group_by("site_id", "prod_id").agg(pl.col("pos_sales_units").sum()).sort("site_id", "prod_id")
        assert by_key.equals(day_by_key)
        assert set(period[end_col]) == set(day["date"].map_elements(lambda d, t=table: _period_end(d, t), return_dtype=pl.Date))
    # marche_fr is `antitrust: value`: value measures and the units they are a price times get masked
    # twins, stock on order does not. A day's twin is the mean of the same product and store over the
    # previous two-month block, published only when that block's records lie in both its months and at
    # least 7 days apart (transform/masking.py).
    assert day["at_masked_inventory_qty_on_order"].null_count() == day.height
    block = pl.col("date").dt.year() * 6 + (pl.col("date").dt.month() - 1) // 2
    for m in ("pos_sales_value_lc", "pos_sales_units"):
        blocks = day.group_by("prod_id", "site_id", block.alias("b")).agg(
            pl.col(m).cast(pl.Float64).mean().alias("mean"),
            ((pl.col("date").dt.month().n_unique() == 2) & ((pl.col("date").max() - pl.col("date").min()).dt.total_days() >= 7)).alias(
                "ok"
            ),
        )
        expected = (
            day.with_columns((block - 1).alias("b"))
            .join(blocks, on=["prod_id", "site_id", "b"], how="left")
            .with_columns(
                pl.when(pl.col("ok")).then(pl.col("mean")).alias("expected"),
                pl.col(f"at_masked_{m}").cast(pl.Float64).alias("got"),
            )
        )
        assert (expected["got"].is_null() == expected["expected"].is_null()).all(), m
        assert ((expected["got"] - expected["expected"]).abs().fill_null(0) < 1e-4).all(), m
    for table in ("store_week_fact", "store_month_fact"):  # coarser grains are withheld while masked
        period = lake.scan(lake.gold(table)).collect()
        assert period["at_masked_pos_sales_value_lc"].null_count() == period.height


def _period_end(day: date, table: str) -> date:
    if table == "store_week_fact":
        return day + timedelta(days=6 - day.weekday())
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def test_future_dated_rows_are_quarantined_not_blocking(data_root, lake, headless, instance):
    _load(data_root, headless, days=2, n_products=8, n_stores=2)
    # A delivery dated in the future: types are fine, the row rule is not. Its rows are quarantined
    # at silver with the reason; the blocking table checks pass and gold carries on.
    future = date.today() + timedelta(days=30)
    write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected_future", days=1, start=future, n_products=8, n_stores=2)
    runs = headless.settle()
    # A file whose rows are all quarantined fails its run, naming the setting; nothing else fails.
    failed = [r.error or "" for r in runs if not r.success]
    assert failed and all("max_quarantined_share" in e and str(future) in e for e in failed), failed
    rejected = lake.scan(lake.quarantine("marche_fr", "rejected_rows")).collect()
    assert rejected.height > 0 and set(rejected["reason"]) == {"date: in the future"}
    for layer_uri in (lake.silver("marche_fr", "store_day_fact"), lake.gold("store_day_fact")):
        assert lake.scan(layer_uri).filter(pl.col("date") > date.today()).collect().is_empty()
    for name in ("structure_and_keys", "row_rules"):
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(["silver", "marche_fr", "store_day_fact"]), name)]
        )
        assert next(iter(check.values())).event.dagster_event.event_specific_data.passed, name
