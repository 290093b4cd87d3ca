"""Retailers on real dates: data up to yesterday, open periods, future-dated rows, dated snapshots, week dates.

Every delivery is built here relative to `date.today()` (not by the demo generator) and runs
through the code location: the landing sensors, the ingest jobs and declarative automation.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest

from pos_lakehouse.demo.generator import gtin13
from pos_lakehouse.transform.scd2 import START_OF_HISTORY

YESTERDAY = date.today() - timedelta(days=1)


# ---- marche_fr: one Parquet file per day ---------------------------------------------------


def _marche_day(landing, day: date, *, units: int = 3, products: int = 4, stores: int = 2, name: str | None = None):
    """One marche_fr daily file: every product sold `units` times (plus its index) in every store."""
    rows = [(s, p) for s in range(stores) for p in range(products)]
    frame = pl.DataFrame(
        {
            "date_vente": [day] * len(rows),
            "code_magasin": [f"M{s:03d}" for s, _ in rows],
            "nom_magasin": [f"Marche {s:03d}" for s, _ in rows],
            "gln_magasin": [None] * len(rows),
            "ville": ["Lyon"] * len(rows),
            "region": ["ARA"] * len(rows),
            "format_magasin": ["super"] * len(rows),
            "code_article": [f"A{p:05d}" for _, p in rows],
            "ean": [gtin13(p) for _, p in rows],
            "libelle_article": [f"Produit {p}" for _, p in rows],
            "marque": ["Bonjour"] * len(rows),
            "categorie": ["Epicerie"] * len(rows),
            "qte_vendue": [units + p for _, p in rows],
            "ca_ttc_eur": pl.Series([Decimal(units + p) * Decimal("1.50") for _, p in rows], dtype=pl.Decimal(18, 2)),
            "qte_retournee": [0] * len(rows),
            "montant_retour_eur": pl.Series([Decimal(0)] * len(rows), dtype=pl.Decimal(18, 2)),
            "stock_fin_journee": [10] * len(rows),
            "qte_en_commande": [0] * len(rows),
        },
        schema_overrides={"gln_magasin": pl.String},
    )
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / (name or f"marche_fr_pos_{day.isoformat()}.parquet")
    frame.write_parquet(path)
    return frame


def _settle_ok(headless):
    runs = headless.settle()
    failed = [(r.name, r.error) for r in runs if not r.success]
    assert not failed, failed
    return runs


def _settle_with_overflow(headless, file_part: str):
    """Settle where a delivery's rows are mostly quarantined: its good rows load, and its run fails
    naming the file and `max_quarantined_share` (no other run fails)."""
    runs = headless.settle()
    failed = [r.error or "" for r in runs if not r.success]
    assert failed and all("max_quarantined_share" in e and file_part in e for e in failed), failed
    return runs


def _gold(lake, table: str, code: str) -> pl.DataFrame:
    return lake.scan(lake.gold(table)).filter(pl.col("data_provider_code") == code).collect()


def _check(instance, asset: list[str], name: str):
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(dg.AssetKey(asset), name)])
    return next(iter(record.values())).event.dagster_event.event_specific_data


def _week_end(day: date) -> date:  # weeks end on Sunday (the YAML default)
    return day + timedelta(days=6 - day.weekday())


def _month_end(day: date) -> date:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


@pytest.mark.slow
def test_open_week_and_month_are_published_to_date_and_recomputed_as_days_arrive(data_root, lake, headless, instance):
    landing = data_root / "landing" / "marche_fr"
    days = [YESTERDAY - timedelta(days=d) for d in range(12, -1, -1)]
    for day in days:
        _marche_day(landing, day)
    _settle_ok(headless)

    for table in ("store_day_fact", "store_week_fact", "store_month_fact"):
        for name in ("structure_and_keys", "row_rules"):
            assert _check(instance, ["silver", "marche_fr", table], name).passed, (table, name)
    day_facts = _gold(lake, "store_day_fact", "cds_1001")
    assert day_facts["date"].max() == YESTERDAY

    def _period(table, end_col, end):
        rows = _gold(lake, table, "cds_1001").filter(pl.col(end_col) == end)
        assert rows.height == 8  # 4 products x 2 stores
        return rows

    week = _period("store_week_fact", "week_end_date", _week_end(YESTERDAY))
    assert set(week["is_complete"]) == {YESTERDAY.weekday() == 6}
    assert set(week["days_covered"]) == {YESTERDAY.weekday() + 1} and set(week["days_expected"]) == {7}
    in_week = day_facts.filter(pl.col("date") > _week_end(YESTERDAY) - timedelta(days=7))
    assert week["pos_sales_units"].sum() == in_week["pos_sales_units"].sum()
    month = _period("store_month_fact", "month_end_date", _month_end(YESTERDAY))
    # The month holds the days delivered in it (13 at most); complete only when they are all its days.
    month_days = len([d for d in days if d.month == YESTERDAY.month])
    assert set(month["days_covered"]) == {month_days} and set(month["days_expected"]) == {_month_end(YESTERDAY).day}
    assert set(month["is_complete"]) == {month_days == _month_end(YESTERDAY).day}
    in_month = day_facts.filter(pl.col("date") >= YESTERDAY.replace(day=1))
    assert month["pos_sales_value_lc"].sum() == in_month["pos_sales_value_lc"].sum()
    earlier = _gold(lake, "store_week_fact", "cds_1001").filter(pl.col("week_end_date") < _week_end(YESTERDAY))
    # Whole weeks delivered are complete; the first week, delivered from a day after its start, is not.
    first_week_days = (_week_end(days[0]) - days[0]).days + 1
    for end, rows in earlier.group_by("week_end_date"):
        covered = first_week_days if end[0] == _week_end(days[0]) else 7
        assert set(rows["days_covered"]) == {covered} and set(rows["is_complete"]) == {covered == 7}, end

    # Today's sales arrive: the open periods are recomputed to date.
    today = date.today()
    _marche_day(landing, today, units=5)
    _settle_ok(headless)
    week = _period("store_week_fact", "week_end_date", _week_end(today))
    assert set(week["days_covered"]) == {today.weekday() + 1}
    assert set(week["is_complete"]) == {today.weekday() == 6}
    month = _period("store_month_fact", "month_end_date", _month_end(today))
    assert set(month["days_covered"]) == {len([d for d in [*days, today] if d.month == today.month])}
    day_facts = _gold(lake, "store_day_fact", "cds_1001")
    in_month = day_facts.filter(pl.col("date") >= today.replace(day=1))
    assert month["pos_sales_units"].sum() == in_month["pos_sales_units"].sum()
    if today.weekday() == 0:  # the week that ended yesterday is complete now
        closed = _period("store_week_fact", "week_end_date", YESTERDAY)
        assert closed["is_complete"].all() and set(closed["days_covered"]) == {7}


@pytest.mark.slow
def test_future_dated_file_is_quarantined_and_later_good_files_reach_gold(data_root, lake, headless, instance):
    landing = data_root / "landing" / "marche_fr"
    _marche_day(landing, YESTERDAY - timedelta(days=3))
    _settle_ok(headless)
    future = date.today() + timedelta(days=5)
    _marche_day(landing, future)
    # A good file can also carry one bad row among good ones: only that row is held back.
    mixed = _marche_day(landing, YESTERDAY - timedelta(days=2), name=f"marche_fr_pos_{YESTERDAY - timedelta(days=2)}_mixed.parquet")
    mixed_path = landing / f"marche_fr_pos_{YESTERDAY - timedelta(days=2)}_mixed.parquet"
    mixed.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(future)).otherwise(pl.col("date_vente")).alias("date_vente")
    ).write_parquet(mixed_path)
    _settle_with_overflow(headless, str(future))  # the all-future file; the mixed one is under the share
    for day in (YESTERDAY - timedelta(days=1), YESTERDAY):
        _marche_day(landing, day)
    _settle_ok(headless)

    gold = _gold(lake, "store_day_fact", "cds_1001")
    assert gold["date"].max() == YESTERDAY
    assert gold.filter(pl.col("date") > date.today()).is_empty()
    assert gold.group_by("date").len().sort("date")["len"].to_list() == [8, 7, 8, 8]
    rejected = lake.scan(lake.quarantine("marche_fr", "rejected_rows")).collect()
    assert rejected["reason"].to_list() == ["date: in the future"] * 9
    assert rejected["_source_file"].str.contains(str(future)).sum() == 8
    assert json.loads(rejected.filter(pl.col("_source_file").str.contains("mixed"))["raw_values"].item())["code_article"] == "A00000"
    assert _check(instance, ["silver", "marche_fr", "store_day_fact"], "structure_and_keys").passed
    assert _check(instance, ["silver", "marche_fr", "store_day_fact"], "bronze_rows_accounted").passed
    # Gold week and month hold yesterday's period.
    assert _gold(lake, "store_week_fact", "cds_1001")["week_end_date"].max() == _week_end(YESTERDAY)
    assert _gold(lake, "store_month_fact", "cds_1001")["month_end_date"].max() == _month_end(YESTERDAY)


# ---- kaufhalle_de: undated article snapshots named by their day ------------------------------

_ARTIKEL_HEADER = "Artikelnummer;EAN;Bezeichnung;Marke;Warengruppe;Grundpreis;Pfand"


def _artikel(landing, day: date, names: dict[str, str], brands: dict[str, str], price: str) -> None:
    lines = [_ARTIKEL_HEADER] + [f"{nr};;{names[nr]};{brands[nr]};Getränke;{price};0,00" for nr in sorted(names)]
    landing.mkdir(parents=True, exist_ok=True)
    (landing / f"kaufhalle_artikel_{day.strftime('%Y%m%d')}.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))


@pytest.mark.slow
def test_thirty_daily_dimension_snapshots_in_one_batch_become_versions_on_their_dates(data_root, lake, headless):
    landing = data_root / "landing" / "kaufhalle_de"
    first = date.today() - timedelta(days=30)
    renamed_1, renamed_2, rebranded = first + timedelta(days=9), first + timedelta(days=20), first + timedelta(days=25)
    for d in range(30):
        day = first + timedelta(days=d)
        names = {"100001": "Apfelsaft", "100002": "Mineralwasser", "100003": "Bier"}
        if day >= renamed_1:
            names["100001"] = "Apfelsaft naturtrüb"
        if day >= renamed_2:
            names["100001"] = "Apfelsaft naturtrüb 1,5 l"
        brands = {"100001": "Gut&Günstig", "100002": "Quelle", "100003": "Brauhaus" if day < rebranded else "Brauhaus Neu"}
        _artikel(landing, day, names, brands, price=f"{d},99")
    _settle_ok(headless)

    for uri in (lake.silver("kaufhalle_de", "prod_dim"), lake.gold("prod_dim")):
        prod = lake.scan(uri).filter(pl.col("prod_id").str.starts_with("1002_")).collect().sort("prod_id", "valid_from")
        apfel = prod.filter(pl.col("prod_id") == "1002_100001")
        assert apfel["prod_name"].to_list() == ["Apfelsaft", "Apfelsaft naturtrüb", "Apfelsaft naturtrüb 1,5 l"]
        assert apfel["valid_from"].to_list() == [START_OF_HISTORY, renamed_1, renamed_2]
        assert apfel["valid_to"].to_list() == [renamed_1 - timedelta(days=1), renamed_2 - timedelta(days=1), None]
        assert apfel["is_current"].to_list() == [False, False, True]
        bier = prod.filter(pl.col("prod_id") == "1002_100003")
        assert bier["brand"].to_list() == ["Brauhaus", "Brauhaus Neu"] and bier["valid_from"][1] == rebranded
        assert prod.filter(pl.col("prod_id") == "1002_100002").height == 1
        # Untracked attributes of the current versions come from the newest snapshot.
        current = prod.filter(pl.col("is_current"))
        assert current.height == 3
        assert {json.loads(e)["Grundpreis"] for e in current["extra_attributes"]} == {"29,99"}


# ---- polder_nl: weekly files dated by week end ----------------------------------------------


def _polder_week(landing, week_date: date, products: int = 3) -> None:
    frame = pl.DataFrame(
        {
            "Weekeinde": [week_date] * products,
            "Winkelnummer": ["W001"] * products,
            "Winkelnaam": ["Polder Delft 001"] * products,
            "Plaats": ["Delft"] * products,
            "Artikelnummer": [f"NL{p:05d}" for p in range(products)],
            "EAN": [None] * products,
            "Omschrijving": [f"Product {p}" for p in range(products)],
            "Merk": ["Hollands"] * products,
            "Categorie": ["Zuivel"] * products,
            "Aantal": [10 + p for p in range(products)],
            "Omzet": [12.5 + p for p in range(products)],
            "Voorraad": [4] * products,
        },
        schema_overrides={"EAN": pl.String},
    )
    landing.mkdir(parents=True, exist_ok=True)
    frame.write_excel(landing / f"polder_nl_week_{week_date.isoformat()}.xlsx", worksheet="Verkopen", dtype_formats={pl.Date: "yyyy-mm-dd"})


@pytest.mark.slow
def test_misaligned_weekly_file_is_quarantined_by_the_week_rule(data_root, lake, headless, instance):
    landing = data_root / "landing" / "polder_nl"
    last_sunday = date.today() - timedelta(days=date.today().weekday() + 1)
    wednesday = last_sunday - timedelta(days=4)
    _polder_week(landing, last_sunday)
    _polder_week(landing, wednesday)  # not a week end: the file says week ends, the retailer's weeks end on Sunday
    _polder_week(landing, last_sunday + timedelta(days=7))  # a week that has not ended yet
    _settle_with_overflow(headless, "polder_nl")

    weeks = _gold(lake, "store_week_fact", "cds_1006")
    assert weeks["week_end_date"].to_list() == [last_sunday] * 3
    assert weeks["is_complete"].all() and set(weeks["days_covered"]) == {7}
    assert weeks["pos_sales_units"].sum() == 33
    rejected = lake.scan(lake.quarantine("polder_nl", "rejected_rows")).collect()
    by_reason = dict(rejected.group_by("reason").agg(pl.col("_source_file").first()).iter_rows())
    assert rejected.height == 6 and rejected.group_by("reason").len()["len"].to_list() == [3, 3]
    assert str(wednesday) in by_reason["week_end_date: not on a week end of a week ending sunday"]
    assert str(last_sunday + timedelta(days=7)) in by_reason["week_end_date: in the future"]
    assert _check(instance, ["silver", "polder_nl", "store_week_fact"], "bronze_rows_accounted").passed


# ---- the rules themselves, on frames ----------------------------------------------------------


def test_week_date_rules_align_or_quarantine_never_pass_through():
    import narwhals as nw

    from pos_lakehouse.transform.mapping import ERROR_COLUMN
    from pos_lakehouse.transform.row_rules import align_week_dates

    sunday = date.today() - timedelta(days=date.today().weekday() + 8)  # a Sunday in the past
    monday, wednesday = sunday + timedelta(days=1), sunday + timedelta(days=3)
    frame = nw.from_native(
        pl.LazyFrame(
            {"week_end_date": [sunday, monday, wednesday], ERROR_COLUMN: [None, None, None]}, schema_overrides={ERROR_COLUMN: pl.String}
        )
    )

    def run(date_is, misaligned):
        return align_week_dates(frame, "week_end_date", "sunday", date_is, misaligned).collect().to_native()

    ends = run("end", "quarantine")
    assert ends["week_end_date"].to_list() == [sunday, monday, wednesday]
    assert ends[ERROR_COLUMN].to_list() == [None] + ["week_end_date: not on a week end of a week ending sunday"] * 2
    starts = run("start", "quarantine")  # Monday starts the week ending the next Sunday
    assert starts["week_end_date"].to_list()[1] == sunday + timedelta(days=7)
    assert [e is None for e in starts[ERROR_COLUMN]] == [False, True, False]
    aligned = run("end", "align")
    assert aligned["week_end_date"].to_list() == [sunday, sunday + timedelta(days=7), sunday + timedelta(days=7)]
    assert aligned[ERROR_COLUMN].null_count() == 3


def test_period_coverage_and_observed_on():
    import narwhals as nw

    from pos_lakehouse.retailer import ObservedOn
    from pos_lakehouse.transform.measures import with_period_coverage

    months = nw.from_native(pl.LazyFrame({"month_end_date": [date(2026, 10, 31), date(2026, 11, 30)], "days_covered": [31, 25]}))
    out = with_period_coverage(months, "month_end_date", "month").collect().to_native()
    assert out["is_complete"].to_list() == [True, False] and out["days_expected"].to_list() == [31, 30]
    weeks = nw.from_native(pl.LazyFrame({"week_end_date": [date(2026, 11, 22), date(2026, 11, 29)], "days_covered": [7, 3]}))
    out = with_period_coverage(weeks, "week_end_date", "week").collect().to_native()
    assert out["is_complete"].to_list() == [True, False] and out["days_expected"].to_list() == [7, 7]
    rule = ObservedOn(pattern=r"dim_products_(\d{8})", format="%Y%m%d")
    assert rule.date_of("landing/x/dim_products_20261125.csv") == date(2026, 11, 25)
    assert rule.date_of("dim_products_latest.csv") is None
    with pytest.raises(ValueError, match="not a regular expression"):
        ObservedOn(pattern="dim_(", format="%Y")


@pytest.mark.slow
def test_late_fx_rates_and_a_corrected_master_re_enrich_silver_and_gold(data_root, lake, headless):
    from pos_lakehouse.demo.reference import CORPORATE_FOLDER, write_corporate_reference

    corporate = data_root / "landing" / CORPORATE_FOLDER
    write_corporate_reference(corporate, products=50, sites=10)

    def fx(last: date) -> None:  # EUR rates from a month back up to `last`
        days = [last - timedelta(days=d) for d in range(30)]
        pl.DataFrame({"date": days, "currency": ["EUR"] * len(days), "usd_per_unit": [1.25] * len(days)}).write_csv(
            corporate / "fx_rates.csv"
        )

    fx(YESTERDAY - timedelta(days=2))
    landing = data_root / "landing" / "marche_fr"
    for d in (3, 2, 1):
        _marche_day(landing, YESTERDAY - timedelta(days=d - 1), products=5)
    _settle_ok(headless)
    day = _gold(lake, "store_day_fact", "cds_1001")
    late = pl.col("date") > YESTERDAY - timedelta(days=2)
    assert day.filter(late)["pos_sales_value_usd"].null_count() == 20
    assert day.filter(~late)["pos_sales_value_usd"].null_count() == 0

    prod = _gold(lake, "prod_dim", "cds_1001").filter(pl.col("prod_id") == "1001_A00004")
    assert prod["corp_brand"].to_list() == [brand_before := prod["corp_brand"].item()] and brand_before is not None

    fx(YESTERDAY)  # the missing rates arrive, and the product master is corrected
    master = pl.read_csv(corporate / "product_master.csv", infer_schema=False)
    master.with_columns(
        pl.when(pl.col("gtin") == gtin13(4)).then(pl.lit("Corrected Brand")).otherwise(pl.col("corp_brand")).alias("corp_brand")
    ).write_csv(corporate / "product_master.csv")
    runs = _settle_ok(headless)  # no new delivery: silver re-enriches because its reference upstream changed
    assert any(r.name == "marche_fr_ingest" for r in runs)  # the reference refresh sensor re-ran its silver
    day = _gold(lake, "store_day_fact", "cds_1001")
    assert day["pos_sales_value_usd"].null_count() == 0
    assert (day["pos_sales_value_usd"].cast(pl.Float64) - day["pos_sales_value_lc"].cast(pl.Float64) * 1.25).abs().max() < 1e-6
    month = _gold(lake, "store_month_fact", "cds_1001")
    all_days = _gold(lake, "store_day_fact", "cds_1001")
    assert month["pos_sales_value_usd"].sum() == all_days["pos_sales_value_usd"].sum()
    prod = _gold(lake, "prod_dim", "cds_1001").filter(pl.col("prod_id") == "1001_A00004")
    assert prod["corp_brand"].to_list() == ["Corrected Brand"] and prod["is_current"].all()
    others = _gold(lake, "prod_dim", "cds_1001").filter(pl.col("prod_id") != "1001_A00004")
    assert "Corrected Brand" not in others["corp_brand"].to_list()
