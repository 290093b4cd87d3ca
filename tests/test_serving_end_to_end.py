"""Landing to secure views: automation refreshes the DuckDB views after gold, with only one retailer delivered."""

from __future__ import annotations

import dagster as dg
import polars as pl

from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.serving.duckdb_views import database_path, is_current, query
from pos_lakehouse.serving.policy import load_policy

SQL = "select data_provider_code, count(*) as n from store_day_fact group by 1 order by 1"


def test_automation_refreshes_views_after_gold(data_root, lake, defs, instance, headless):
    write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=3, n_products=20, n_stores=3)
    records = headless.settle()
    assert records and all(r.success for r in records), [r.error for r in records if not r.success]

    # The views asset ran by itself although no other retailer's gold partition exists.
    views_runs = [r for r in records if "serving/gold_views" in r.name]
    assert views_runs, [r.name for r in records]
    event = instance.get_latest_materialization_event(dg.AssetKey(["serving", "gold_views"]))
    assert event is not None and database_path(lake).exists()
    policy = load_policy()
    assert is_current(lake, policy)  # built from the gold versions the runs left behind

    gold = (
        lake.scan(lake.gold("store_day_fact")).group_by("data_provider_code").agg(pl.len().alias("n")).sort("data_provider_code").collect()
    )
    assert gold.height == 1
    assert query(lake, policy, "claire", SQL).to_dicts() == gold.to_dicts()  # marche_fr is in claire's group
    assert query(lake, policy, "noah", SQL).is_empty()  # North America only
    assert query(lake, policy, "guest", SQL).is_empty()

    # Nothing new landed: settling again does not rebuild the views.
    assert headless.settle() == []
