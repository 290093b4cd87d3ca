"""The delivery calendar and period coverage, on tiny frames shaped like a stranger's deliveries.

Dates are relative to today; each case builds the stored day facts (or their per-file arrivals)
a retailer's deliveries leave in silver, and checks what the calendar and the period facts say.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import narwhals as nw
import polars as pl

from pos_lakehouse.transform.calendar import (
    build_calendar,
    calendar_dates,
    delivered_files,
    expected_cells,
    last_expected_day,
    stamp_changes,
    window_summary,
)
from pos_lakehouse.transform.measures import aggregate_period, period_end_of, with_period_coverage

TODAY = date.today()
# A Sunday-ending week wholly in the past, and its Monday.
SUNDAY = TODAY - timedelta(days=TODAY.weekday() + 8)
MONDAY = SUNDAY - timedelta(days=6)


def _at(day: date, hours: float = 6) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hours)


def _day_facts(
    cells: list[tuple[date, str]], *, arrived: dict | None = None, loaded: dict | None = None, products: int = 2
) -> pl.DataFrame:
    """Stored day facts: `products` rows per (date, store), each cell's file arriving the morning after
    its day (or when `arrived` says) and loaded into silver as it arrives (or when `loaded` says)."""
    rows = []
    for day, site in cells:
        at = (arrived or {}).get((day, site), _at(day + timedelta(days=1)))
        for p in range(products):
            rows.append(
                {
                    "date": day,
                    "site_id": site,
                    "prod_id": f"P{p}",
                    "_source_file": f"sales_{day}.csv",
                    "_delivery_id": f"h{day}{at:%H%M}",
                    "_ingested_at": at,
                    "_updated_at": (loaded or {}).get((day, site), at),
                    "pos_sales_units": 1,
                }
            )
    return pl.DataFrame(rows, schema_overrides={"_ingested_at": pl.Datetime("us", "UTC"), "_updated_at": pl.Datetime("us", "UTC")})


def _calendar(
    facts: pl.DataFrame, stores: list[str], *, now: datetime, previous=None, cadence="daily", grain="day", date_col="date", end=SUNDAY
):
    """The calendar of these stored facts, owed from their first date to `end` (the cases' last week)."""
    files = delivered_files(nw.from_native(facts.lazy()), date_col)
    firsts = files.group_by("site_id").agg(pl.col("date").min().alias("first_date"))
    known = pl.DataFrame({"site_id": stores}).join(firsts, on="site_id", how="left")
    start = files["date"].min()
    end = min(end, last_expected_day(now.date(), cadence, grain, "sunday"))
    expected = expected_cells(known, start, end, grain, "sunday")
    cal = build_calendar(expected, files, previous, now=now, cadence=cadence, grain=grain, week_ends_on="sunday")
    return stamp_changes(cal, previous, now)


def _weeks(facts: pl.DataFrame) -> pl.DataFrame:
    daily = facts.with_columns(
        *(pl.lit(None, dtype=pl.Decimal(18, 4)).alias(c) for c in ("pos_sales_value_lc", "pos_returns_units", "pos_returns_value_lc")),
        *(
            pl.lit(None, dtype=pl.Decimal(18, 4)).alias(c)
            for c in ("inventory_qty_on_hand", "inventory_qty_on_order", "inventory_value_lc")
        ),
        *(pl.lit(None, dtype=pl.Decimal(18, 4)).alias(c) for c in ("pos_sales_value_usd", "pos_returns_value_usd", "inventory_value_usd")),
        pl.col("pos_sales_units").cast(pl.Decimal(18, 4)),
        pl.lit(1, pl.Int64).alias("prod_key"),
        pl.lit(1, pl.Int64).alias("site_key"),
        pl.lit("EUR").alias("currency"),
        pl.lit("cds_1").alias("data_provider_code"),
        pl.lit(1, pl.Int64).alias("secure_group_key"),
        pl.lit(1.0).alias("fx_rate_to_usd"),
    )
    weeks = aggregate_period(nw.from_native(daily.lazy()), "week")
    return with_period_coverage(weeks, "week_end_date", "week").collect().to_native().sort("week_end_date", "site_id", "prod_id")


def test_first_week_starting_mid_week_is_partial_and_nothing_before_it_is_owed():
    start = MONDAY + timedelta(days=1)  # a Tuesday
    days = [start + timedelta(days=i) for i in range(13)]
    facts = _day_facts([(d, "S1") for d in days])
    weeks = _weeks(facts)
    first = weeks.filter(pl.col("week_end_date") == SUNDAY)
    assert set(first["days_covered"]) == {6} and set(first["days_expected"]) == {7} and not first["is_complete"].any()
    second = weeks.filter(pl.col("week_end_date") == SUNDAY + timedelta(days=7))
    assert set(second["days_covered"]) == {7} and second["is_complete"].all()
    assert second["pos_sales_units"].sum() == 7 * 2

    cal = _calendar(facts, ["S1"], now=_at(days[-1] + timedelta(days=1), 12), end=days[-1])
    assert cal["date"].min() == start  # Monday is not owed: the retailer started on Tuesday
    assert cal.filter(pl.col("expected"))["delivered"].all()
    assert set(cal["status"]) == {"delivered"} and set(cal["rows"]) == {2}
    # A day delivered before it is owed (today's sales) is early, not unexpected; one before the owed range is.
    early = _calendar(facts, ["S1"], now=_at(days[-1], 12), end=days[-1])
    assert early.filter(pl.col("date") == days[-1]).select("expected", "status").row(0) == (False, "delivered")
    files = delivered_files(nw.from_native(facts.lazy()), "date")
    owed = expected_cells(pl.DataFrame({"site_id": ["S1"], "first_date": [start]}), start + timedelta(days=2), days[-1], "day", "sunday")
    late_start = build_calendar(owed, files, None, now=_at(days[-1], 12), cadence="daily", grain="day", week_ends_on="sunday")
    assert late_start.filter(pl.col("date") < start + timedelta(days=2))["status"].to_list() == ["unexpected", "unexpected"]


def test_missing_day_makes_its_week_incomplete_and_is_listed_missing():
    days = [MONDAY + timedelta(days=i) for i in range(7) if i != 3]
    facts = _day_facts([(d, s) for d in days for s in ("S1", "S2")])
    weeks = _weeks(facts)
    assert set(weeks["days_covered"]) == {6} and not weeks["is_complete"].any()
    now = _at(SUNDAY + timedelta(days=3))
    cal = _calendar(facts, ["S1", "S2"], now=now)
    gap = MONDAY + timedelta(days=3)
    missing = cal.filter(pl.col("status") == "missing")
    assert sorted(missing.select("date", "site_id").rows()) == [(gap, "S1"), (gap, "S2")]
    # Overdue since the end of the day after the gap.
    expected_overdue = (now - datetime.combine(gap + timedelta(days=2), datetime.min.time(), tzinfo=UTC)).total_seconds() / 3600
    assert missing["late_by_hours"].to_list() == [round(expected_overdue, 1)] * 2
    counts = window_summary(cal, MONDAY, SUNDAY)
    assert counts["expected"] == 14 and counts["delivered"] == 12 and counts["missing"] == 2


def test_missing_store_on_one_day_affects_only_that_store():
    gap = MONDAY + timedelta(days=2)
    cells = [
        (MONDAY + timedelta(days=i), s) for i in range(7) for s in ("S1", "S2", "S3") if (MONDAY + timedelta(days=i), s) != (gap, "S2")
    ]
    facts = _day_facts(cells)
    weeks = _weeks(facts)
    by_store = dict(weeks.group_by("site_id").agg(pl.col("days_covered").first()).iter_rows())
    assert by_store == {"S1": 7, "S2": 6, "S3": 7}
    assert dict(weeks.group_by("site_id").agg(pl.col("is_complete").all()).iter_rows()) == {"S1": True, "S2": False, "S3": True}
    cal = _calendar(facts, ["S1", "S2", "S3"], now=_at(SUNDAY + timedelta(days=3)))
    assert cal.filter(pl.col("status") == "missing").select("date", "site_id").rows() == [(gap, "S2")]
    # A store the site dimension knows that never delivered is owed every day.
    cal = _calendar(facts, ["S1", "S2", "S3", "S4"], now=_at(SUNDAY + timedelta(days=3)))
    assert cal.filter((pl.col("site_id") == "S4") & (pl.col("status") == "missing")).height == len(
        calendar_dates(MONDAY, SUNDAY, "day", "sunday")
    )


def test_late_file_fills_a_gap_the_week_turns_complete_and_the_cell_says_how_late():
    gap = MONDAY + timedelta(days=4)
    on_time = [(MONDAY + timedelta(days=i), "S1") for i in range(7) if MONDAY + timedelta(days=i) != gap]
    first_run = _at(SUNDAY + timedelta(days=1), 12)
    before = _calendar(_day_facts(on_time), ["S1"], now=first_run)
    assert before.filter(pl.col("date") == gap)["status"].to_list() == ["missing"]
    assert not _weeks(_day_facts(on_time))["is_complete"].any()

    arrived = _at(SUNDAY + timedelta(days=2), 9)
    facts = _day_facts([*on_time, (gap, "S1")], arrived={(gap, "S1"): arrived})
    later = arrived + timedelta(hours=1)
    after = _calendar(facts, ["S1"], now=later, previous=before)
    cell = after.filter(pl.col("date") == gap).row(0, named=True)
    assert cell["status"] == "late" and cell["delivered"] and cell["first_arrival"] == arrived
    due = datetime.combine(gap + timedelta(days=2), datetime.min.time(), tzinfo=UTC)
    assert cell["late_by_hours"] == round((arrived - due).total_seconds() / 3600, 1)
    weeks = _weeks(facts)
    assert weeks["is_complete"].all() and set(weeks["days_covered"]) == {7}
    # Only the filled cell changed: the others keep their stamp, so gold republishes one row.
    assert after.filter(pl.col("_updated_at") == later)["date"].to_list() == [gap]


def test_history_in_a_first_delivery_arriving_over_minutes_is_backfill_and_later_days_can_be_late():
    """An API's first pull (or an SFTP copy of history) arrives page by page over a few minutes:
    none of it is late. A day that first arrives after that first load still is."""
    days = [MONDAY + timedelta(days=i) for i in range(6)]
    pulled = _at(SUNDAY + timedelta(days=1), 8)
    pages = {(d, "S1"): pulled + timedelta(seconds=20 * i) for i, d in enumerate(days)}
    straggler = SUNDAY
    first_load = pulled + timedelta(minutes=5)  # silver loads the whole pull once its last page is in
    late_at = _at(straggler + timedelta(days=2), 9)
    facts = _day_facts([*pages, (straggler, "S1")], arrived={**pages, (straggler, "S1"): late_at}, loaded=dict.fromkeys(pages, first_load))
    cal = _calendar(facts, ["S1"], now=late_at + timedelta(minutes=5))
    status = dict(zip(cal["date"].to_list(), cal["status"].to_list(), strict=True))
    assert [status[d] for d in days] == ["delivered"] * len(days), status
    assert status[straggler] == "late"
    assert cal.filter(pl.col("date") == straggler)["late_by_hours"].item() > 0


def test_restated_day_counts_once_and_keeps_its_first_arrival():
    days = [MONDAY + timedelta(days=i) for i in range(7)]
    facts = _day_facts([(d, "S1") for d in days])
    now = _at(SUNDAY + timedelta(days=2))
    before = _calendar(facts, ["S1"], now=now)
    # Tuesday restated: its stored rows are now the correction's, arriving days later (same keys).
    tuesday = days[1]
    restated_at = _at(SUNDAY + timedelta(days=3))
    restated = facts.with_columns(
        pl.when(pl.col("date") == tuesday).then(pl.lit(restated_at)).otherwise(pl.col("_ingested_at")).alias("_ingested_at"),
        pl.when(pl.col("date") == tuesday).then(pl.lit("fix.csv")).otherwise(pl.col("_source_file")).alias("_source_file"),
        pl.when(pl.col("date") == tuesday).then(pl.lit(restated_at)).otherwise(pl.col("_updated_at")).alias("_updated_at"),
    )
    after = _calendar(restated, ["S1"], now=restated_at + timedelta(hours=1), previous=before)
    cell = after.filter(pl.col("date") == tuesday).row(0, named=True)
    assert cell["rows"] == 2 and cell["files"] == 1 and cell["_source_file"] == "fix.csv"
    assert cell["first_arrival"] == before.filter(pl.col("date") == tuesday)["first_arrival"].item()
    assert cell["last_arrival"] == restated_at and cell["status"] == "delivered"
    weeks = _weeks(restated)
    assert set(weeks["days_covered"]) == {7} and weeks["is_complete"].all()


def test_weekly_retailer_with_one_week_missing():
    ends = [SUNDAY - timedelta(days=7 * w) for w in range(5, -1, -1)]
    missing = ends[3]
    facts = _day_facts([(e, s) for e in ends if e != missing for s in ("S1", "S2")]).rename({"date": "week_end_date"})
    now = _at(SUNDAY + timedelta(days=3))
    cal = _calendar(facts, ["S1", "S2"], now=now, cadence="weekly", grain="week", date_col="week_end_date")
    assert cal["date"].to_list() == sorted([e for e in ends for _ in range(2)])  # one cell per week end and store
    assert set(cal["grain"]) == {"week"}
    assert cal.filter(pl.col("status") == "missing")["date"].to_list() == [missing, missing]
    assert last_expected_day(SUNDAY + timedelta(days=1), "weekly", "week", "sunday") == SUNDAY
    assert last_expected_day(SUNDAY, "weekly", "week", "sunday") == SUNDAY - timedelta(days=7)


def test_weekly_sender_of_days_owes_a_week_only_once_it_has_ended():
    facts = _day_facts([(MONDAY + timedelta(days=i), "S1") for i in range(7)], arrived={})
    monday_after = SUNDAY + timedelta(days=1)
    end = last_expected_day(monday_after + timedelta(days=2), "weekly", "day", "sunday")
    assert end == SUNDAY
    # A day of a weekly file is due after its week (plus a day), so the Monday of the week is not late.
    facts = facts.with_columns(pl.lit(_at(monday_after, 8)).alias("_ingested_at"), pl.lit(_at(monday_after, 8)).alias("_updated_at"))
    cal = _calendar(facts, ["S1"], now=_at(monday_after, 9), cadence="weekly")
    assert set(cal["status"]) == {"delivered"} and cal.height == 7
    assert period_end_of(MONDAY, "week") == SUNDAY


# ---- what operators see: the check, the grid, the YAML -----------------------------------------------
def _spec(**completeness):
    from pos_lakehouse.retailer import RetailerSpec

    return RetailerSpec.model_validate(
        {
            "retailer_id": 9001,
            "name": "stranger_de",
            "country": "DE",
            "currency": "EUR",
            "secure_group_key": 990001,
            "completeness": completeness,
            "delivery": {"files": [{"name": "sales", "match": "sales_*.csv", "holds": ["store_day_fact"]}]},
        }
    )


def test_completeness_check_lists_missing_and_late_cells_and_blocks_only_when_the_yaml_says_so():
    import dagster as dg

    from pos_lakehouse.quality.completeness import completeness_result

    gap, late_day = MONDAY + timedelta(days=2), MONDAY + timedelta(days=4)
    on_time = [(MONDAY + timedelta(days=i), s) for i in range(7) for s in ("S1", "S2")]
    on_time = [c for c in on_time if c != (gap, "S2") and c[0] != late_day]
    before = _calendar(_day_facts(on_time), ["S1", "S2"], now=_at(SUNDAY + timedelta(days=1), 12))
    arrived = _at(SUNDAY + timedelta(days=2))
    facts = _day_facts([*on_time, (late_day, "S1"), (late_day, "S2")], arrived={(late_day, s): arrived for s in ("S1", "S2")})
    now = arrived + timedelta(hours=1)
    cal = _calendar(facts, ["S1", "S2"], now=now, previous=before)
    key = dg.AssetKey(["silver", "stranger_de", "delivery_calendar"])

    warn = completeness_result(_spec(window_days=14), key, cal, now)
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["cells_missing"].value == 1 and warn.metadata["cells_late"].value == 2
    assert warn.metadata["missing"].value == f"- {gap}: S2" and warn.metadata["late"].value == f"- {late_day}: S1, S2"
    blocking = completeness_result(_spec(window_days=14, blocking=True), key, cal, now)
    assert not blocking.passed and blocking.severity == dg.AssetCheckSeverity.ERROR
    # Once the missing cell has arrived (late), nothing is owed: lateness alone warns, gold may flow.
    filled = facts.vstack(_day_facts([(gap, "S2")], arrived={(gap, "S2"): now}))
    cal = _calendar(filled, ["S1", "S2"], now=now + timedelta(hours=1), previous=cal)
    only_late = completeness_result(_spec(window_days=14, blocking=True), key, cal, now + timedelta(hours=1))
    assert not only_late.passed and only_late.severity == dg.AssetCheckSeverity.WARN
    assert only_late.metadata["cells_missing"].value == 0 and only_late.metadata["cells_late"].value == 3
    # Gaps older than the window are history: the check passes.
    old = completeness_result(_spec(window_days=1), key, cal, _at(SUNDAY + timedelta(days=30)))
    assert old.passed and old.metadata["cells_missing"].value == 0


def test_grid_shows_each_cell_and_a_retailers_worst_store():
    from pos_lakehouse.quality.calendar_grid import counts, grid, markdown_grid, text_grid

    gap = MONDAY + timedelta(days=2)
    cells = [(MONDAY + timedelta(days=i), s) for i in range(7) for s in ("S1", "S2") if (MONDAY + timedelta(days=i), s) != (gap, "S2")]
    cal = _calendar(_day_facts(cells), ["S1", "S2"], now=_at(SUNDAY + timedelta(days=2)))
    frame = grid(cal, MONDAY - timedelta(days=1), SUNDAY)
    assert frame.columns == ["date", "S1", "S2"]
    rows = {r[0]: r[1:] for r in frame.iter_rows()}
    assert rows[gap.strftime("%a %m-%d")] == ("+", "X")
    assert rows[(MONDAY - timedelta(days=1)).strftime("%a %m-%d")] == (".", ".")  # before the start: not owed
    by_retailer = grid(cal.with_columns(pl.lit("stranger_de").alias("retailer")), MONDAY, SUNDAY, "retailer")
    assert by_retailer["stranger_de"].to_list() == ["+", "+", "X", "+", "+", "+", "+"]
    assert counts(cal, MONDAY, SUNDAY) == {
        "cells_expected": 14,
        "cells_missing": 1,
        "cells_late": 0,
        "cells_pending": 0,
        "cells_unexpected": 0,
        "cells_delivered": 13,
    }
    assert "| date | S1 | S2 |" in markdown_grid(frame)
    assert text_grid(frame).splitlines()[0].split() == frame.columns[1:]


def test_completeness_yaml_is_checked():
    import pytest
    from pydantic import ValidationError

    assert _spec().completeness.start_date is None and not _spec().completeness.blocking
    assert _spec(starts_on="2026-09-08").completeness.start_date == date(2026, 9, 8)
    with pytest.raises(ValidationError, match="not a date"):
        _spec(starts_on="08.09.2026")
    with pytest.raises(ValidationError, match="window_days"):
        _spec(window_days=0)
    with pytest.raises(ValidationError, match="extra"):
        _spec(blocked=True)
