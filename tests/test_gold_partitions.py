"""Gold partitions: a retailer's MERGE leaves other partitions' files alone, concurrent refreshes both land,
and the gold asset checks (rows match silver, unique keys, secure group keys known to the policy)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest
from conftest import RETAILERS_DIR
from serving_data import fact_rows, frame, retailer, write_silver

from pos_lakehouse.components.gold_publication import GoldLayer
from pos_lakehouse.components.gold_tables import GoldTables
from pos_lakehouse.components.spark_jobs import SparkJobs
from pos_lakehouse.layers.gold import GOLD_TABLES, PARTITION_COLUMN, refresh_gold
from pos_lakehouse.quality.gold_checks import run_gold_checks
from pos_lakehouse.retailer import load_retailer_specs
from pos_lakehouse.serving.policy import PolicyWarning, default_policy_path, load_policy

MARCHE = retailer(1001, "marche_fr", 110011)
KAUF = retailer(1002, "kaufhalle_de", 110012)
DAYS = [date(2026, 9, 1) + timedelta(days=d) for d in range(3)]


def _gold(lake, code: str) -> pl.DataFrame:
    return (
        lake.scan(lake.gold("store_day_fact"))
        .filter(pl.col(PARTITION_COLUMN) == code)
        .drop("_updated_at")
        .sort("date", "site_id", "prod_id")
        .collect()
    )


def _silver(lake, spec) -> pl.DataFrame:
    return lake.scan(lake.silver(spec.name, "store_day_fact")).drop("_updated_at").sort("date", "site_id", "prod_id").collect()


def _files(lake) -> dict[str, set[tuple]]:
    """Data files of the gold table's latest version by partition: (path, size, modification time)."""
    dt = lake.table(lake.gold("store_day_fact"))
    actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    out: dict[str, set[tuple]] = {}
    for path, code, size, mtime in actions.select("path", f"partition.{PARTITION_COLUMN}", "size_bytes", "modification_time").iter_rows():
        out.setdefault(code, set()).add((path, size, mtime))
    return out


def test_merge_touches_only_its_partition(lake):
    for spec, units in ((MARCHE, 10), (KAUF, 20)):
        write_silver(lake, spec, "store_day_fact", fact_rows(spec.data_provider_code, spec.secure_group_key, DAYS, units=units))
        refresh_gold(lake, spec, "store_day_fact")
    before_files, before_kauf = _files(lake), _gold(lake, "cds_1002")
    version = lake.version(lake.gold("store_day_fact"))

    # marche_fr restates a day and delivers a new one.
    later = datetime.now(UTC) + timedelta(seconds=1)
    write_silver(
        lake, MARCHE, "store_day_fact", fact_rows("cds_1001", 110011, [DAYS[1], DAYS[-1] + timedelta(days=1)], units=99, updated_at=later)
    )
    result = refresh_gold(lake, MARCHE, "store_day_fact")
    assert result.merged_rows == 12 and lake.version(lake.gold("store_day_fact")) > version

    after_files = _files(lake)
    assert after_files["cds_1002"] == before_files["cds_1002"], "kaufhalle_de's files were rewritten"
    assert after_files["cds_1001"] != before_files["cds_1001"]
    assert _gold(lake, "cds_1002").equals(before_kauf)
    assert _gold(lake, "cds_1001").equals(_silver(lake, MARCHE))
    assert _gold(lake, "cds_1001").filter(pl.col("date") == DAYS[1])["pos_sales_units"].to_list() == [Decimal("99")] * 6


def test_concurrent_gold_refreshes_of_two_retailers_both_land(lake):
    start = datetime.now(UTC)
    for rnd in range(4):  # round 0 creates the table from both writers at once
        stamp = start + timedelta(seconds=rnd)
        for spec, base in ((MARCHE, 10), (KAUF, 20)):
            days = [DAYS[0] + timedelta(days=rnd * 2 + d) for d in range(2)]
            write_silver(
                lake,
                spec,
                "store_day_fact",
                fact_rows(spec.data_provider_code, spec.secure_group_key, days, units=base + rnd, updated_at=stamp),
            )
        barrier = threading.Barrier(2)

        def refresh(spec):
            barrier.wait()
            return refresh_gold(lake, spec, "store_day_fact")

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(refresh, (MARCHE, KAUF)))
        assert all(r.merged_rows >= 12 for r in results), f"round {rnd}"
        for spec in (MARCHE, KAUF):
            assert _gold(lake, spec.data_provider_code).equals(_silver(lake, spec)), f"round {rnd}: {spec.name} lost rows"
    assert {len(v) for v in (_gold(lake, "cds_1001"), _gold(lake, "cds_1002"))} == {6 * 8}


def test_concurrent_refreshes_keep_both_watermarks(lake):
    for spec in (MARCHE, KAUF):
        write_silver(lake, spec, "store_day_fact", fact_rows(spec.data_provider_code, spec.secure_group_key, DAYS))
    for _ in range(3):
        barrier = threading.Barrier(2)

        def refresh(spec):
            barrier.wait()
            return refresh_gold(lake, spec, "store_day_fact")

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(refresh, (MARCHE, KAUF)))
        # Nothing changed in silver since: neither retailer has anything left to merge.
        assert [refresh_gold(lake, s, "store_day_fact").merged_rows for s in (MARCHE, KAUF)] == [0, 0]
        later = datetime.now(UTC)
        for spec in (MARCHE, KAUF):
            write_silver(
                lake, spec, "store_day_fact", fact_rows(spec.data_provider_code, spec.secure_group_key, DAYS[:1], units=5, updated_at=later)
            )


def _gold_asset(specs, table="store_day_fact"):
    by_code = {s.data_provider_code: s for s in specs}
    return GoldTables._gold_asset(table, specs, by_code)


def _resources(lake) -> dict:
    gold = GoldLayer(tables=tuple(GOLD_TABLES), policy=load_policy(default_policy_path(), RETAILERS_DIR))
    return {"lake": lake, "spark": SparkJobs(), "gold": gold}


def test_gold_asset_runs_its_checks(lake, instance):
    write_silver(lake, MARCHE, "store_day_fact", fact_rows("cds_1001", 110011, DAYS))
    asset = _gold_asset([MARCHE, KAUF])
    result = dg.materialize([asset], partition_key="cds_1001", resources=_resources(lake), instance=instance)
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"rows_match_silver", "unique_keys", "secure_group_keys_known"}
    assert all(e.passed for e in evaluations.values()), evaluations
    assert evaluations["rows_match_silver"].metadata["rows"].value == "gold 18, silver 18"
    gold_meta = result.asset_materializations_for_node("gold__store_day_fact")[0].metadata
    assert gold_meta["partition_rows"].value == 18 and gold_meta["dagster/row_count"].value == 18
    # A retailer that has delivered nothing yet: its (empty) partition passes too.
    assert dg.materialize([asset], partition_key="cds_1002", resources=_resources(lake), instance=instance).success


def test_gold_checks_catch_missing_duplicate_and_unknown_rows(lake):
    key = dg.AssetKey(["gold", "store_day_fact"])
    policy = load_policy()
    write_silver(lake, MARCHE, "store_day_fact", fact_rows("cds_1001", 110011, DAYS))
    refresh_gold(lake, MARCHE, "store_day_fact")
    assert all(r.passed for r in run_gold_checks(lake, MARCHE, "store_day_fact", policy, key))

    # A duplicate of one key and a row under a key the policy does not grant appear in gold.
    dup = frame("store_day_fact", fact_rows("cds_1001", 110011, [DAYS[0]], sites=1, products=1))
    stray = frame("store_day_fact", fact_rows("cds_1001", 424242, [DAYS[0] - timedelta(days=30)], sites=1, products=1))
    lake.append(lake.gold("store_day_fact"), pl.concat([dup, stray]), partition_by=[PARTITION_COLUMN])
    results = {r.check_name: r for r in run_gold_checks(lake, MARCHE, "store_day_fact", policy, key)}
    assert not results["rows_match_silver"].passed
    assert results["rows_match_silver"].metadata["rows"].value == "gold 20, silver 18"
    assert not results["unique_keys"].passed and results["unique_keys"].metadata["duplicate_keys"].value == "1"
    assert not results["secure_group_keys_known"].passed and "424242" in results["secure_group_keys_known"].description
    # Checks look at the retailer's own partition only.
    assert all(r.passed for r in run_gold_checks(lake, KAUF, "store_day_fact", policy, key))


def test_secure_group_key_check_flags_a_retailer_missing_from_the_policy(lake):
    # Gold holding a retailer whose YAML the policy was not built from (e.g. a stale partition).
    newcomer = retailer(1099, "newcomer_xx", 110099)
    write_silver(lake, newcomer, "store_day_fact", fact_rows("cds_1099", 110099, DAYS[:1]))
    refresh_gold(lake, newcomer, "store_day_fact")
    results = {
        r.check_name: r for r in run_gold_checks(lake, newcomer, "store_day_fact", load_policy(), dg.AssetKey(["gold", "store_day_fact"]))
    }
    assert results["rows_match_silver"].passed and results["unique_keys"].passed
    assert not results["secure_group_keys_known"].passed
    assert "not among the retailers the access policy was built from" in results["secure_group_keys_known"].description
    # With its YAML among the retailers, its key is known: the YAML is the one place to declare it.
    specs = [*load_retailer_specs(RETAILERS_DIR), newcomer]
    with pytest.warns(PolicyWarning, match="newcomer_xx"):
        policy = load_policy(retailers=specs)
    results = {r.check_name: r for r in run_gold_checks(lake, newcomer, "store_day_fact", policy, dg.AssetKey(["gold", "store_day_fact"]))}
    assert results["secure_group_keys_known"].passed
