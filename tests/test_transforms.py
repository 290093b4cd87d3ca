"""Pure transforms on tiny frames: keys, SCD2, point-in-time lookup, currency, aggregates, masking."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import narwhals as nw
import polars as pl

from pos_lakehouse.engines import polars as polars_edges
from pos_lakehouse.transform import canonical, scd2
from pos_lakehouse.transform.keys import surrogate_key
from pos_lakehouse.transform.mapping import prefix_ids, to_canonical
from pos_lakehouse.transform.masking import mask_measures
from pos_lakehouse.transform.measures import aggregate_period, convert_to_usd, masked_measures, period_end, period_end_of
from pos_lakehouse.transform.scd2 import START_OF_HISTORY


def _nw(frame):
    return nw.from_native(frame.lazy())


def _pl(frame) -> pl.DataFrame:
    return frame.to_native().collect()


def scd2_versions(obs, existing, *args) -> pl.DataFrame:
    return _pl(scd2.scd2_versions(_nw(obs), _nw(existing), *args))


def point_in_time_keys(facts, dim, *args):
    return scd2.point_in_time_keys(_nw(facts), _nw(dim), *args).to_native()


NOW = datetime(2026, 11, 1, tzinfo=UTC)


def test_surrogate_keys_are_pinned():
    # Golden values: changing the key recipe silently would orphan every stored fact. Spark's
    # xxhash64(concat_ws('|', ...)) must produce these same numbers (see the Spark parity test).
    assert surrogate_key(1001, ["1001_A00007"], date(1900, 1, 1)) == 521406920559559196
    assert surrogate_key(1001, ["1001_A00007"], date(2026, 9, 20)) == -8489505005029969067
    assert surrogate_key(1002, ["1002_M001"], date(1900, 1, 1)) == 7532685742570592210
    frame = _nw(pl.DataFrame({"prod_id": ["1001_A00007"], "valid_from": [date(2026, 9, 20)]}))
    keyed = polars_edges.with_surrogate_key(frame, "k", 1001, ["prod_id"], "valid_from")
    assert _pl(keyed)["k"].item() == -8489505005029969067


def test_mapping_types_prefixes_and_explains_bad_values():
    raw = pl.LazyFrame(
        {
            " Datum ": ["01.09.2026", "02.09.2026", "kaputt"],
            "FILIALE": ["F1", "F1", "F2"],
            "artikel": ["A", "B", "C"],
            "Umsatz": ["1.234,50", "abc", "3,00"],
            "Farbe": ["rot", "blau", "grün"],
            "_delivery_id": ["d"] * 3,
            "_row_number": [1, 2, 3],
        }
    )
    mapping = {"Datum": "date", "Filiale": "site_id", "Artikel": "prod_id", "Umsatz": "pos_sales_value_lc"}
    out = _pl(prefix_ids(to_canonical(_nw(raw), mapping, ["store_day_fact"], decimal_comma=True, date_formats=["%d.%m.%Y"]), 1002))
    assert out["date"].to_list() == [date(2026, 9, 1), date(2026, 9, 2), None]
    assert out["pos_sales_value_lc"].to_list()[0] == Decimal("1234.5")
    assert out["site_id"].to_list() == ["1002_F1", "1002_F1", "1002_F2"]
    assert out["_errors"][0] is None
    assert "pos_sales_value_lc: cannot parse abc" in out["_errors"][1]
    assert "date: cannot parse kaputt" in out["_errors"][2]
    assert out["extra_attributes"][0] == '{"Farbe":"rot"}'


def test_blank_values_are_missing_padded_ones_parse_and_messages_quote_the_text():
    raw = pl.LazyFrame(
        {
            "date": [" 2026-09-01 ", "   ", "2026-09-03", "2026-09-04", None],
            "site_id": ["S", "S", "  ", "S", "S"],
            "prod_id": ["P", "P", "P", "P", "P"],
            "pos_sales_units": [" 1 234 ", "2", "", " zwei ", "5"],
        }
    )
    out = _pl(to_canonical(_nw(raw), {}, ["store_day_fact"], date_formats=["%Y-%m-%d"]))
    assert out["date"].to_list() == [date(2026, 9, 1), None, date(2026, 9, 3), date(2026, 9, 4), None]
    assert out["pos_sales_units"].to_list() == [Decimal("1234"), Decimal("2"), None, None, Decimal("5")]
    assert out["site_id"].to_list() == ["S", "S", None, "S", "S"]
    errors = out["_errors"].to_list()
    assert errors[0] is None
    assert errors[1] == "date: required value is missing"  # blank: missing, not unparseable
    assert errors[2] == "site_id: required value is missing"  # a blank measure is no error
    assert errors[3] == "pos_sales_units: cannot parse zwei as Decimal(precision=18, scale=4)"
    assert errors[4] == "date: required value is missing"


def _obs(rows):
    return pl.DataFrame(
        rows, schema={"prod_id": pl.String, "_observed_on": pl.Date, "prod_name": pl.String, "brand": pl.String}, orient="row"
    )


def test_scd2_rename_opens_a_version_and_closes_the_old_one():
    table = canonical.PROD_DIM
    first = scd2_versions(
        _obs([("1001_P", date(2026, 9, 1), "Soap", "B"), ("1001_P", date(2026, 9, 2), "Soap", "B")]),
        canonical.empty_frame(table),
        table,
        ["prod_name"],
        1001,
        "prod_key",
        NOW,
    )
    assert first.height == 1
    assert first["valid_from"].item() == START_OF_HISTORY and first["is_current"].item()
    assert first["prod_key"].item() == surrogate_key(1001, ["1001_P"], START_OF_HISTORY)

    # Unchanged re-delivery: nothing to write.
    again = scd2_versions(_obs([("1001_P", date(2026, 9, 3), "Soap", "B")]), first, table, ["prod_name"], 1001, "prod_key", NOW)
    assert again.is_empty()

    # A brand change is not tracked: updated in place on the current version (type 1).
    type1 = scd2_versions(_obs([("1001_P", date(2026, 9, 4), "Soap", "B2")]), first, table, ["prod_name"], 1001, "prod_key", NOW)
    assert type1.height == 1 and type1["brand"].item() == "B2" and type1["prod_key"].item() == first["prod_key"].item()

    renamed = scd2_versions(_obs([("1001_P", date(2026, 9, 20), "Soap XL", "B")]), first, table, ["prod_name"], 1001, "prod_key", NOW)
    by_name = {r["prod_name"]: r for r in renamed.iter_rows(named=True)}
    assert by_name["Soap"]["valid_to"] == date(2026, 9, 19) and not by_name["Soap"]["is_current"]
    assert by_name["Soap XL"]["valid_from"] == date(2026, 9, 20) and by_name["Soap XL"]["is_current"]
    assert by_name["Soap XL"]["prod_key"] == surrogate_key(1001, ["1001_P"], date(2026, 9, 20))

    dim = pl.concat([first.filter(pl.col("prod_key") != by_name["Soap"]["prod_key"]), renamed], how="diagonal_relaxed")
    facts = pl.LazyFrame({"date": [date(2026, 9, 19), date(2026, 9, 20), date(2026, 9, 1)], "prod_id": ["1001_P", "1001_P", "1001_X"]})
    keyed = point_in_time_keys(facts, dim.lazy(), "prod_id", "prod_key", "date").collect().sort("date")
    assert keyed.filter(pl.col("prod_id") == "1001_P")["prod_key"].to_list() == [
        by_name["Soap"]["prod_key"],
        by_name["Soap XL"]["prod_key"],
    ]
    assert keyed.filter(pl.col("prod_id") == "1001_X")["prod_key"].item() is None  # unknown product: caller quarantines


def test_fx_conversion_hit_and_miss():
    facts = pl.LazyFrame(
        {
            "date": [date(2026, 9, 1), date(2026, 9, 2)],
            "currency": ["EUR", "EUR"],
            "pos_sales_value_lc": [Decimal("10.00"), Decimal("5.00")],
            "pos_returns_value_lc": [None, None],
            "inventory_value_lc": [None, None],
        },
        schema_overrides={c: canonical.MONEY for c in canonical.VALUE_MEASURES},
    )
    fx = pl.LazyFrame({"date": [date(2026, 9, 1)], "currency": ["EUR"], "usd_per_unit": [1.1]})
    out = _pl(convert_to_usd(_nw(facts), _nw(fx), "date")).sort("date")
    assert out["pos_sales_value_usd"].to_list() == [Decimal("11.0000"), None]
    assert out["fx_rate_to_usd"].to_list() == [1.1, None]


def test_week_and_month_aggregates_sum_flows_and_take_stocks_at_period_end():
    days = pl.date_range(date(2026, 8, 24), date(2026, 9, 13), eager=True)  # Mon 24 Aug .. Sun 13 Sep
    daily = pl.DataFrame(
        {
            "date": days,
            "site_id": "S",
            "prod_id": "P",
            "pos_sales_units": [Decimal(i + 1) for i in range(len(days))],
            "inventory_qty_on_hand": [Decimal(100 - i) for i in range(len(days))],
            "prod_key": 1,
            "site_key": 2,
            "currency": "EUR",
            "fx_rate_to_usd": 1.0,
        }
    ).with_columns(
        [
            pl.lit(None, canonical.TABLES["store_day_fact"].column(c).dtype).alias(c)
            for c in canonical.STORE_DAY_FACT.source_names
            | {
                "pos_sales_value_usd",
                "pos_returns_value_usd",
                "inventory_value_usd",
                "data_provider_code",
                "secure_group_key",
                "_source_file",
                "_delivery_id",
                "_ingested_at",
            }
            if c not in ("date", "site_id", "prod_id", "pos_sales_units", "inventory_qty_on_hand", "currency")
        ]
    )
    weeks = _pl(aggregate_period(_nw(daily), "week")).sort("week_end_date")
    assert weeks["week_end_date"].to_list() == [date(2026, 8, 30), date(2026, 9, 6), date(2026, 9, 13)]
    assert weeks["pos_sales_units"].sum() == daily["pos_sales_units"].sum()
    assert weeks["inventory_qty_on_hand"].to_list() == [Decimal(94), Decimal(87), Decimal(80)]
    months = _pl(aggregate_period(_nw(daily), "month")).sort("month_end_date")
    assert months["month_end_date"].to_list() == [date(2026, 8, 31), date(2026, 9, 30)]
    assert months["pos_sales_units"].sum() == daily["pos_sales_units"].sum()
    assert weeks.filter(pl.col("week_end_date") == date(2026, 9, 6))["pos_sales_units"].item() == sum(Decimal(i) for i in range(8, 15))
    assert period_end_of(date(2026, 9, 2), "week", "saturday") == date(2026, 9, 5)
    probe = _nw(pl.DataFrame({"date": pl.date_range(date(2026, 8, 24), date(2026, 10, 3), eager=True)}))
    ends = _pl(
        probe.with_columns(period_end(nw.col("date"), "week", "saturday").alias("w"), period_end(nw.col("date"), "month").alias("m"))
    )
    assert ends["w"].to_list() == [period_end_of(d, "week", "saturday") for d in ends["date"]]
    assert ends["m"].to_list() == [period_end_of(d, "month") for d in ends["date"]]


def test_masking_on_a_hand_computed_example():
    # Two-month calendar blocks (Jul-Aug, Sep-Oct, ...): a day shows the mean of the same product
    # and store over the previous block, published only when that block's records span both of its
    # months at least 7 days apart; otherwise (and where there is no previous block) NULL.
    frame = pl.DataFrame(
        {
            "prod_id": ["P", "P", "P", "P", "Q", "Q", "Q"],
            "site_id": ["S"] * 7,
            "date": [
                date(2026, 7, 10),
                date(2026, 8, 20),
                date(2026, 9, 5),
                date(2026, 10, 30),
                date(2026, 7, 1),
                date(2026, 7, 20),
                date(2026, 9, 5),
            ],
            "pos_sales_value_lc": [Decimal(10), Decimal(30), Decimal(7), Decimal(9), Decimal(50), Decimal(70), Decimal(100)],
        },
        schema_overrides={"pos_sales_value_lc": canonical.MONEY},
    )
    out = _pl(mask_measures(_nw(frame), "date", "day", ["pos_sales_value_lc"])).sort("prod_id", "date")
    # P's Jul-Aug block (10, 30) is published for its Sep-Oct days; Q's lies in July only: withheld.
    assert out["at_masked_pos_sales_value_lc"].cast(pl.Float64).to_list() == [None, None, 20.0, 20.0, None, None, None]
    weekly = _pl(mask_measures(_nw(frame.rename({"date": "week_end_date"})), "week_end_date", "week", ["pos_sales_value_lc"]))
    assert weekly["at_masked_pos_sales_value_lc"].null_count() == weekly.height  # coarser grains are withheld
    assert masked_measures("none") == ()
    assert "inventory_qty_on_order" in masked_measures("volume") and "inventory_qty_on_order" not in masked_measures("value")
    # Value masking masks the quantities value is a price times: units x the last real price would give it back.
    assert {"pos_sales_units", "pos_returns_units", "inventory_qty_on_hand"} <= set(masked_measures("value"))


def test_ranges_within_a_budget_never_split_a_key():
    from pos_lakehouse.transform.chunks import ranges_within

    sizes = [(1, 4), (2, 4), (3, 9), (4, 1), (5, 1), (6, 3)]
    ranges = ranges_within(sizes, 6)
    assert ranges == [(1, 1), (2, 2), (3, 3), (4, 6)]
    # Every key in exactly one range, and only a lone key may exceed the budget.
    covered = [k for lo, hi in ranges for k, _ in sizes if lo <= k <= hi]
    assert covered == [k for k, _ in sizes]
    for lo, hi in ranges:
        rows = sum(n for k, n in sizes if lo <= k <= hi)
        assert rows <= 6 or lo == hi
    assert ranges_within([], 6) == []
