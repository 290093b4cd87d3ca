"""The delivery calendar and period coverage through real Dagster runs, on deliveries shaped like a stranger's.

marche_fr (one Parquet file per day) delivers from a Tuesday, skips a day, leaves a store out
of another day; then the missing day arrives late and a day is restated. Every step runs through
the landing sensor, the ingest job (bronze -> silver -> gold) and automation, on today's dates.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest
from test_real_dates import YESTERDAY, _check, _gold, _marche_day, _settle_ok, _week_end

from pos_lakehouse.cli import main

CODE = "cds_1001"


def _calendar(lake) -> pl.DataFrame:
    return _gold(lake, "delivery_calendar", CODE).sort("date", "site_id")


def _weeks(lake) -> pl.DataFrame:
    return _gold(lake, "store_week_fact", CODE)


def _week(lake, end: date, site: str) -> dict:
    rows = _weeks(lake).filter((pl.col("week_end_date") == end) & (pl.col("site_id") == site))
    assert rows.height == 4  # one per product
    (covered,), (expected,), (complete,) = (set(rows[c]) for c in ("days_covered", "days_expected", "is_complete"))
    return {"covered": covered, "expected": expected, "complete": complete}


@pytest.mark.slow
def test_calendar_and_period_coverage_follow_gaps_late_files_and_restatements(data_root, lake, headless, instance, capsys):
    landing = data_root / "landing" / "marche_fr"
    # From a Tuesday, so the first week starts mid-week and two whole weeks follow, both over by
    # yesterday whatever weekday today is: the second ends on the last Sunday up to yesterday.
    last_whole_week_end = _week_end(YESTERDAY) - timedelta(days=0 if YESTERDAY.weekday() == 6 else 7)
    tuesday = last_whole_week_end - timedelta(days=19)
    days = [tuesday + timedelta(days=i) for i in range((YESTERDAY - tuesday).days + 1)]
    gap = tuesday + timedelta(days=8)  # the Wednesday of the first whole week
    thin = tuesday + timedelta(days=15)  # store M001 sends nothing that Wednesday
    for day in days:
        if day != gap:
            _marche_day(landing, day, stores=1 if day == thin else 2)
    _settle_ok(headless)

    cal = _calendar(lake)
    m0, m1 = sorted(cal["site_id"].unique())
    assert cal["date"].min() == tuesday and cal["date"].max() == YESTERDAY  # nothing owed before the first day
    missing = cal.filter(pl.col("status") == "missing").select("date", "site_id").rows()
    assert sorted(missing) == [(gap, m0), (gap, m1), (thin, m1)]
    delivered = cal.filter(pl.col("delivered"))
    assert delivered.height == 2 * len(days) - 3 and set(delivered["rows"]) == {4} and set(delivered["files"]) == {1}
    # Everything came with the first delivery: history, not late.
    assert set(delivered["status"]) == {"delivered"}
    assert cal.height == lake.row_count(lake.silver("marche_fr", "delivery_calendar"))

    first_end, gap_end, thin_end = (_week_end(d) for d in (tuesday, gap, thin))
    assert _week(lake, first_end, m0) == {"covered": 6, "expected": 7, "complete": False}
    assert _week(lake, gap_end, m0) == _week(lake, gap_end, m1) == {"covered": 6, "expected": 7, "complete": False}
    assert _week(lake, thin_end, m0) == {"covered": 7, "expected": 7, "complete": True}
    assert _week(lake, thin_end, m1) == {"covered": 6, "expected": 7, "complete": False}
    # Units in a period are the sum of the days it covers.
    day_facts = _gold(lake, "store_day_fact", CODE)
    in_week = day_facts.filter(pl.col("date").is_between(gap_end - timedelta(days=6), gap_end))
    assert _weeks(lake).filter(pl.col("week_end_date") == gap_end)["pos_sales_units"].sum() == in_week["pos_sales_units"].sum()

    assert _check(instance, ["silver", "marche_fr", "delivery_calendar"], "structure_and_keys").passed
    assert _check(instance, ["gold", "delivery_calendar"], "rows_match_silver").passed
    check = _check(instance, ["silver", "marche_fr", "delivery_calendar"], "deliveries_complete")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["cells_missing"].value == 3
    assert f"{gap}: {m0}, {m1}" in check.metadata["missing"].value and f"{thin}: {m1}" in check.metadata["missing"].value
    materialization = instance.get_latest_materialization_event(dg.AssetKey(["silver", "marche_fr", "delivery_calendar"]))
    meta = materialization.asset_materialization.metadata
    assert meta["cells_missing"].value == 3 and meta["cells_delivered"].value == delivered.height
    assert "| date |" in meta["grid"].value and "X" in meta["grid"].value

    # The terminal grid: one line per day, one column per store; the gap's line shows both missing.
    assert main(["calendar", "--retailer", "marche_fr", "--weeks", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if m0 in line).split()
    assert header == [m0, m1]
    grid = {line[:9]: line[9:].split() for line in lines if line[:3] in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")}
    assert grid[gap.strftime("%a %m-%d")] == ["X", "X"] and grid[thin.strftime("%a %m-%d")] == ["+", "X"]
    assert grid[tuesday.strftime("%a %m-%d")] == ["+", "+"]
    assert any(line.startswith("marche_fr:") and "3 missing" in line for line in lines)
    assert main(["calendar"]) == 0  # days x retailers: marche_fr's worst store per day
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith(gap.strftime("%a %m-%d"))).split()[-1] == "X"

    # The missing day arrives late: its cells are late, its week turns complete.
    _marche_day(landing, gap)
    _settle_ok(headless)
    cal = _calendar(lake)
    filled = cal.filter(pl.col("date") == gap)
    assert set(filled["status"]) == {"late"} and filled["delivered"].all() and (filled["late_by_hours"] >= 0).all()
    assert _week(lake, gap_end, m0) == _week(lake, gap_end, m1) == {"covered": 7, "expected": 7, "complete": True}
    check = _check(instance, ["silver", "marche_fr", "delivery_calendar"], "deliveries_complete")
    assert check.metadata["cells_missing"].value == 1 and check.metadata["cells_late"].value == 2

    # A day restated (new units, a correction file): counted once, arrived when it first did.
    restated = days[-2]
    before = cal.filter(pl.col("date") == restated)
    week_before = _weeks(lake).filter(pl.col("week_end_date") == _week_end(restated))
    units_before = week_before["pos_sales_units"].sum()
    _marche_day(landing, restated, units=9, name=f"marche_fr_pos_{restated.isoformat()}_fix.parquet")
    _settle_ok(headless)
    after = _calendar(lake).filter(pl.col("date") == restated)
    assert after["rows"].to_list() == [4, 4] and after["files"].to_list() == [1, 1]
    assert after["first_arrival"].to_list() == before["first_arrival"].to_list()
    assert (after["last_arrival"] > before["last_arrival"]).all() and set(after["_source_file"]) != set(before["_source_file"])
    week = _weeks(lake).filter(pl.col("week_end_date") == _week_end(restated))
    assert week["pos_sales_units"].sum() == units_before + 2 * 4 * (9 - 3)  # 2 stores x 4 products, 6 more units each
    assert week.sort("site_id", "prod_id")["days_covered"].equals(week_before.sort("site_id", "prod_id")["days_covered"])
    assert _calendar(lake).height == lake.row_count(lake.silver("marche_fr", "delivery_calendar"))


def test_a_blocking_completeness_check_holds_gold_until_the_missing_day_arrives(tmp_path, data_root, lake, instance):
    """A retailer whose YAML makes completeness blocking: a day missing from its first deliveries keeps
    its gold unpublished (silver has the rows); the day arriving late publishes every day, late noted."""
    from own_defs import csv_file, defs_folder, retailer_yaml, run_ingest

    code = "cds_1990"
    columns = {"ventas": {"Fecha": "date", "Tienda": "site_id", "Articulo": "prod_id", "Unidades": "pos_sales_units"}}
    files = [csv_file("ventas", "ventas_*.csv", ["prod_dim", "site_dim", "store_day_fact"])]
    yaml_text = retailer_yaml("block_es", 1990, files=files, columns=columns, completeness={"blocking": True, "window_days": 14})
    defs_dir = defs_folder(tmp_path / "defs", {"block_es": yaml_text})
    folder = data_root / "landing" / "block_es"
    folder.mkdir(parents=True)
    days = [YESTERDAY - timedelta(days=i) for i in range(5, -1, -1)]
    gap = days[2]

    def deliver(day: date) -> str:
        name = f"ventas_{day.isoformat()}.csv"
        (folder / name).write_text(
            "Fecha;Tienda;Articulo;Unidades\n" + "".join(f"{day};S{s};P{p};{s + p + 1}\n" for s in (1, 2) for p in range(3))
        )
        return name

    def ingest(names: list[str]) -> tuple[bool, dg.AssetCheckEvaluation]:
        result = run_ingest(defs_dir, instance, "block_es", code, {"ops": {"block_es_bronze": {"config": {"files": names}}}})
        (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "deliveries_complete"]
        return result.success, check

    succeeded, check = ingest([deliver(d) for d in days if d != gap])
    assert not succeeded  # the run fails on the blocking check, as on any blocking silver check
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["cells_missing"].value == 2 and f"{gap}: 1990_S1, 1990_S2" in check.metadata["missing"].value
    assert lake.row_count(lake.silver("block_es", "store_day_fact")) == 5 * 6
    published = lake.exists(lake.gold("store_day_fact")) and _gold(lake, "store_day_fact", code).height
    assert not published  # held back

    succeeded, check = ingest([deliver(gap)])
    assert succeeded and not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # late, not missing: gold flows
    assert check.metadata["cells_missing"].value == 0 and check.metadata["cells_late"].value == 2
    gold = _gold(lake, "store_day_fact", code)
    assert gold.height == 6 * 6 and sorted(gold["date"].unique()) == days
    assert int(gold["pos_sales_units"].sum()) == 6 * sum(s + p + 1 for s in (1, 2) for p in range(3))
