"""A curious analyst against the secure views: no way around them, no arithmetic through the mask.

Two halves:

* **Reach.** Every statement that names something other than a secure view -- a gold file by its
  path (quoted, double-quoted, globbed, relative), a table function, ATTACH/COPY/INSTALL/LOAD/SET/
  PRAGMA, comment and string tricks, CTEs and subqueries reaching the policy tables or the file --
  is refused with one line; and the engine itself, given a statement the parser let through, can
  open no file and holds no rows beyond the reader's.
* **Inversion.** Gold written from the real transforms (`mask_measures`, `aggregate_period`) on
  data ending yesterday, so recent blocks really are masked. The reader sees day, week and month
  views; every subtraction they can do (day vs week vs month, neighbours in time, block means
  times counts, the old "7 x masked - six older days") and, stronger, every linear combination of
  what they see, must fail to give back any masked record's real value.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import narwhals as nw
import numpy as np
import polars as pl
import pytest
from serving_data import fact_rows, frame, write_gold

from pos_lakehouse.serving.duckdb_views import QueryFailed, QueryRejected, _reader_connection, build_views, database_path, query
from pos_lakehouse.serving.policy import AccessPolicy, PolicyError
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.masking import mask_measures
from pos_lakehouse.transform.measures import aggregate_period, masked_measures

MASKED, PLAIN = ("cds_1001", 110011), ("cds_1002", 110012)
THRESHOLD = 28
HISTORY_DAYS = 250
MEASURES = list(masked_measures("volume"))  # every measure and its USD twin
TOL = 0.005  # values carry 2 decimals, masked means 4: a recovered value lands within this
# Money a reader can rebuild as a visible quantity times a price read off older records.
PRICED = {
    "pos_sales_value_lc": "pos_sales_units",
    "pos_returns_value_lc": "pos_returns_units",
    "inventory_value_lc": "inventory_qty_on_hand",
}


def rolling_mask(frame: pl.DataFrame, date_col: str, grain: str, measures) -> pl.DataFrame:
    """The rule masking used before: a trailing 7-day mean per product and store (kept here to show its weakness)."""
    assert grain == "day"
    out = frame.sort("prod_id", "site_id", date_col).with_columns(
        [
            pl.col(m).cast(pl.Float64).rolling_mean_by(date_col, window_size="7d").over("prod_id", "site_id").alias(f"at_masked_{m}")
            for m in measures
        ]
    )
    return out


def _today() -> date:  # the views' notion of today (DuckDB's current_date)
    return duckdb.execute("select current_date").fetchone()[0]


def _block_end(d: date) -> date:
    end_month = ((d.month - 1) // 2) * 2 + 2
    return date(d.year + (end_month == 12), end_month % 12 + 1, 1) - timedelta(days=1)


def _block(d: date) -> int:
    return d.year * 6 + (d.month - 1) // 2


def _is_masked(d: date, today: date) -> bool:
    """The documented rule: masked while the record's block is not wholly older than the threshold."""
    return (today - _block_end(d)).days < THRESHOLD


def _policy(masked_measures: str = "all") -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "retailers": {
                MASKED[0]: {
                    "name": "masked_fr",
                    "secure_group_key": MASKED[1],
                    "competition_sensitive": True,
                    "mask_younger_than_days": THRESHOLD,
                    "masked_measures": masked_measures,
                },
                PLAIN[0]: {"name": "plain_de", "secure_group_key": PLAIN[1]},
            },
            "groups": {"admins": {"all_retailers": True}, "masked_only": {"secure_group_keys": [MASKED[1]]}},
            "users": {"ada": ["admins"], "claire": ["masked_only"], "guest": []},
        }
    )


# ---- gold written from the real transforms ---------------------------------------------------------
def _daily(today: date, days: list[date] | None = None, seed: int = 7, priced: bool = False) -> pl.DataFrame:
    """Daily facts of the masked retailer: dense series, plus sparse series the mask must suppress.

    `priced`: each money measure is its quantity times a fixed price of the product and store (as
    at a retailer without promotions), instead of an independent value."""
    ts = datetime.now(UTC)
    start = today - timedelta(days=HISTORY_DAYS)
    every_day = days or [start + timedelta(days=i) for i in range(HISTORY_DAYS)]
    series: dict[tuple[str, str], list[date]] = {(f"1001_P{p}", f"1001_S{s}"): every_day for p in range(2) for s in range(2)}
    # Sparse: in each block, records in one month only (a block mean would be that month's total).
    series[("1001_ONE_MONTH", "1001_S0")] = [d for d in every_day if d.month % 2 == 1 and d.day in (3, 11, 19)]
    # Sparse: two records per block, a month end and the next day (both in one week).
    series[("1001_ONE_WEEK", "1001_S0")] = [
        d for d in every_day if (d + timedelta(days=1)).day == 1 and d.month % 2 == 1 or d.day == 1 and d.month % 2 == 0
    ]
    rows = []
    for (prod, site), dates in series.items():
        for d in dates:
            rng = random.Random(f"{seed}|{prod}|{site}|{d}")  # a record's values do not depend on what else is generated
            fx = 1.05 + 0.003 * (d.toordinal() % 23)  # a different visible rate almost every day
            lc = {m: round(rng.uniform(1, 1000), 2) for m in canonical.VALUE_MEASURES}
            units = {m: round(rng.uniform(1, 500), 2) for m in canonical.VOLUME_MEASURES}
            if priced:
                price = random.Random(f"{prod}|{site}").uniform(0.5, 20)
                lc = {m: round(units[q] * price, 2) for m, q in PRICED.items()}
            rows.append(
                {
                    "date": d,
                    "site_id": site,
                    "prod_id": prod,
                    **{m: Decimal(str(v)) for m, v in units.items()},
                    **{m: Decimal(str(v)) for m, v in lc.items()},
                    **{m.replace("_lc", "_usd"): Decimal(str(round(v * fx, 4))) for m, v in lc.items()},
                    "fx_rate_to_usd": fx,
                    "currency": "EUR",
                    "data_provider_code": MASKED[0],
                    "secure_group_key": MASKED[1],
                    "prod_key": zlib.crc32(prod.encode()),
                    "site_key": zlib.crc32(site.encode()),
                    "_updated_at": ts,
                    "_ingested_at": ts,
                    "_source_file": "t",
                    "_delivery_id": "t",
                }
            )
    return frame("store_day_fact", rows)


def _publish(lake, daily: pl.DataFrame, measures: list[str] = MEASURES) -> dict[str, pl.DataFrame]:
    """Silver's twins (the real transforms), then gold for day, week and month."""
    out = {"store_day_fact": mask_measures(daily, "date", "day", measures)}
    for table, grain in (("store_week_fact", "week"), ("store_month_fact", "month")):
        end_col = canonical.TABLES[table].natural_keys[0]
        period = aggregate_period(nw.from_native(daily.lazy()), grain, "sunday").collect().to_native()
        out[table] = mask_measures(period, end_col, grain, measures)
    for table, df in out.items():
        write_gold(lake, table, df.to_dicts())
    return out


@pytest.fixture
def masked_gold(lake):
    today = _today()
    real = _publish(lake, _daily(today))
    write_gold(lake, "store_day_fact", fact_rows(*PLAIN, [today - timedelta(days=3)]))
    policy = _policy()
    build_views(lake, policy)
    return lake, policy, today, real


# ---- reach: only the views ------------------------------------------------------------------------
def _gold_file(lake) -> str:
    return next(iter(build_views(lake, _policy()).tables["store_day_fact"].files))


def _attacks(gold_file: str, data_root: str) -> list[str]:
    rel = gold_file.replace(data_root, "..", 1)
    gold_dir = gold_file.rsplit("/", 2)[0]
    db = str(Path(data_root) / "serving" / "gold.duckdb")
    return [
        # Files by path: the reproduction, and its variants.
        f"select count(*), sum(pos_sales_value_lc) from '{gold_file}'",
        f'select count(*) from "{gold_file}"',
        f"select * from '{gold_dir}/**/*.parquet'",
        f"from '{gold_file}'",
        f"select * from '{rel}'",
        "select * from 'gold/store_day_fact/x.parquet'",
        f"select * from store_day_fact union all select * from '{gold_file}'",
        f"select * from store_day_fact, '{gold_file}' limit 1",
        # Table functions.
        f"select * from read_parquet('{gold_file}')",
        f"select * from parquet_scan(['{gold_file}'])",
        "select * from read_csv('/etc/passwd')",
        f"select * from glob('{gold_dir}/*')",
        f"select * from delta_scan('{gold_dir}')",
        f"select * from query('select * from read_parquet(''{gold_file}'')')",
        "select * from query_table('access.reader_keys')",
        "select * from range(10)",
        f"select * from parquet_metadata('{gold_file}')",
        "select read_text('/etc/hostname')",
        "select content from read_blob('/etc/hostname')",
        "select current_setting('allowed_paths')",
        "select getvariable('pos_reader')",
        "select * from duckdb_settings()",
        "select * from duckdb_databases()",
        # Statements other than a query.
        f"attach '{db}' as g",
        f"ATTACH DATABASE '{db}' AS g (READ_ONLY)",
        f"copy store_day_fact to '{data_root}/leak.csv'",
        f"copy (select * from store_day_fact) to '{data_root}/leak.parquet' (format parquet)",
        "install httpfs",
        "load httpfs",
        "force install delta",
        "set enable_external_access = true",
        "set variable pos_reader = 'ada'",
        "reset lock_configuration",
        "pragma database_list",
        "pragma show_tables",
        "call pragma_version()",
        "create table x as select 1",
        "insert into store_day_fact select * from store_day_fact",
        "drop view store_day_fact",
        "export database '/tmp/x'",
        "summarize store_day_fact",
        "show tables",
        # Comments and string tricks.
        f"select 1; select * from '{gold_file}'",
        f"select 1 /* ; */ ; attach '{db}' as g",
        f"select 1 -- harmless\n; select * from read_parquet('{gold_file}')",
        f"/* read_parquet */ select * from '{gold_file}' -- store_day_fact",
        f"select * from store_day_fact where prod_id = ''; select * from '{gold_file}' --'",
        "select * from STORE_DAY_FACT, 'store_day_fact.parquet'",
        'select * from "store_day_fact.parquet"',
        "select * from `store_day_fact`",
        # CTEs and subqueries reaching base tables or the policy.
        f"with s as (select * from '{gold_file}') select * from s",
        f"with s as (select * from read_parquet('{gold_file}')) select * from s",
        f"select * from store_day_fact where prod_id in (select prod_id from '{gold_file}')",
        f"select (select count(*) from '{gold_file}')",
        f"select * from (select * from '{gold_file}') t",
        "select * from (with x as (select 1) select * from x), x",  # a CTE name read outside its scope
        "select * from access.reader_keys",
        "select * from access.retailers",
        "with k as (select * from access.reader_keys) select * from k",
        "select * from gold_views.main.store_day_fact",
        "select * from memory.main.store_day_fact",
        "select * from system.main.duckdb_tables",
        "select * from information_schema.tables",
        "select * from main.nosuchview",
        "describe access.reader_keys",
    ]


def test_every_way_around_the_views_is_refused_in_one_line(masked_gold, data_root):
    lake, policy, _, _ = masked_gold
    for sql in _attacks(_gold_file(lake), str(data_root)):
        with pytest.raises(QueryRejected) as refused:
            rows = query(lake, policy, "guest", sql)
            pytest.fail(f"not refused: {sql!r} returned {rows.height} rows")
        message = str(refused.value)
        assert message and "\n" not in message, (sql, message)
    assert not (data_root / "leak.csv").exists() and not (data_root / "leak.parquet").exists()


def test_the_reproduction_is_refused_by_the_cli(masked_gold, capsys):
    from pos_lakehouse.cli import main

    lake, _, _, _ = masked_gold
    gold_file = _gold_file(lake)
    # As a user in no group, reading a gold Parquet file by its path returned every row, unmasked.
    sql = f"select count(*), sum(pos_sales_value_lc) from '{gold_file}'"
    assert main(["query", "--as", "guest", sql]) == 2  # noqa: S608
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: only the secure views may be queried") and "\n" not in err, err
    assert "Traceback" not in captured.err and captured.out == ""


def test_allowed_queries_still_work(masked_gold):
    lake, policy, _, real = masked_gold
    n_masked = real["store_day_fact"].height
    for sql in (
        "select count(*) as n from store_day_fact",
        "select count(*) as n from main.store_day_fact",
        'select count(*) as n from "STORE_DAY_FACT"',
        "with s as (select * from store_day_fact) select count(*) as n from s",
        "select count(*) as n from (select * from store_day_fact where date < current_date) t",
        "select count(*) as n from store_day_fact d left join prod_dim p on d.prod_id = p.prod_id",
        "/* comments are fine */ select count(*) as n from store_day_fact -- really",
        "select count(*) as n from store_day_fact where prod_id <> 'read_parquet(''x'')'",
    ):
        assert query(lake, policy, "ada", sql)["n"][0] == n_masked + 6, sql
    assert query(lake, policy, "claire", "select count(*) as n from store_day_fact")["n"][0] == n_masked
    assert query(lake, policy, "guest", "select count(*) as n from store_day_fact")["n"][0] == 0
    assert "pos_sales_units" in query(lake, policy, "ada", "describe store_day_fact")["column_name"].to_list()
    # An engine error is one line too, not a traceback.
    with pytest.raises(QueryFailed, match="the query failed: .*no_such_column") as failed:
        query(lake, policy, "ada", "select no_such_column from store_day_fact")
    assert "\n" not in str(failed.value)


@pytest.mark.parametrize("user", ["mallory", "ADA", "Ada", " ada", "ada ", "ada' or '1'='1", "", "guest; ada"])
def test_unknown_and_differently_cased_users_are_refused(masked_gold, user):
    lake, policy, _, _ = masked_gold
    with pytest.raises(PolicyError, match="unknown user"):
        query(lake, policy, user, "select count(*) from store_day_fact")


def test_the_engine_holds_only_the_readers_rows_even_past_the_parser(masked_gold, data_root):
    """What if the allow-list had a gap? Run raw SQL on the reader's connection, unchecked."""
    lake, _, _, real = masked_gold
    gold_file = _gold_file(lake)
    con = _reader_connection(database_path(lake), "claire", ["store_day_fact"])
    try:
        assert con.execute("select count(*) from store_day_fact").fetchone()[0] == real["store_day_fact"].height
        assert con.execute("select distinct secure_group_key from store_day_fact").fetchall() == [(MASKED[1],)]
        for sql in (
            f"select count(*) from '{gold_file}'",
            f"select count(*) from read_parquet('{gold_file}')",
            f"select * from read_text('{gold_file}')",
            f"attach '{database_path(lake)}' as g",
            f"copy store_day_fact to '{data_root}/leak.csv'",
            "install httpfs",
            "set enable_external_access = true",
            "set lock_configuration = false",
            "select * from gold_views.main.store_day_fact",
            "select * from access.reader_keys",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql).fetchall()
        assert con.execute("select current_setting('allowed_paths')").fetchone()[0] == []
        # The only tables there are the copied views: nothing of other readers, no policy tables.
        assert con.execute("select table_name from duckdb_tables()").fetchall() == [("store_day_fact",)]
    finally:
        con.close()
    assert not (data_root / "leak.csv").exists()


# ---- inversion: nothing a masked reader sees gives back a masked value ------------------------------
def _visible(lake, policy, table: str) -> pl.DataFrame:
    key = canonical.TABLES[table].natural_keys[0]
    cols = ", ".join([key, "site_id", "prod_id", "fx_rate_to_usd", *MEASURES, *[f"at_masked_{m}" for m in MEASURES]])
    return query(lake, policy, "claire", f"select {cols} from {table} order by 1, 2, 3").with_columns(
        [pl.col(c).cast(pl.Float64) for c in (*MEASURES, *[f"at_masked_{m}" for m in MEASURES])]
    )


def _series(df: pl.DataFrame, key: str, m: str) -> dict[tuple[str, str], dict[date, float | None]]:
    out: dict[tuple[str, str], dict[date, float | None]] = defaultdict(dict)
    for d, site, prod, v in df.select(key, "site_id", "prod_id", pl.col(m).cast(pl.Float64)).iter_rows():
        out[(prod, site)][d] = v
    return out


def _week_end(d: date) -> date:
    return d + timedelta(days=6 - d.weekday())


def _month_end(d: date) -> date:
    return _block_end(d) if d.month % 2 == 0 else date(d.year + (d.month == 12), d.month % 12 + 1, 1) - timedelta(days=1)


def _candidates(day: dict, week: dict, month: dict, d: date) -> list[float]:
    """Every subtraction we could think of that might give back day d's real value."""
    v = day.get(d)
    dates = sorted(day)
    out = []
    if v is not None:
        out.append(v)
        prev6 = [day.get(d - timedelta(days=i)) for i in range(1, 7)]
        if all(p is not None for p in prev6):
            out.append(7 * v - sum(prev6))  # the rolling-mean inversion
        prev = day.get(d - timedelta(days=1))
        if prev is not None:
            out.append(v - prev)
            out += [k * v - (k - 1) * prev for k in range(2, 64)]  # a growing block mean, day by day
        for blk in (_block(d), _block(d) - 1):  # this block's or the previous block's mean x count, minus the rest
            members = [e for e in dates if _block(e) == blk]
            for n in {len(members), len([e for e in dates if _block(e) == _block(d)])}:
                total = n * v
                others = [day[e] for e in members if e != d and day[e] is not None]
                out += [total - sum(others), total]
    for period, end in ((week, _week_end(d)), (month, _month_end(d))):
        p = period.get(end)
        if p is not None:
            span = [e for e in dates if (_week_end(e) if period is week else _month_end(e)) == end and e != d]
            out.append(p - sum(day[e] or 0 for e in span))
    return out


def test_no_subtraction_recovers_a_masked_value(masked_gold):
    lake, policy, today, real = masked_gold
    seen = {t: _visible(lake, policy, t) for t in ("store_day_fact", "store_week_fact", "store_month_fact")}
    masked_days = published = 0
    for m in ("pos_sales_value_lc", "pos_sales_units", "inventory_qty_on_hand", "pos_sales_value_usd"):
        truth = _series(real["store_day_fact"], "date", m)
        day, week, month = (_series(seen[t], canonical.TABLES[t].natural_keys[0], m) for t in seen)
        for series, values in truth.items():
            for d, x in values.items():
                if not _is_masked(d, today):
                    assert day[series][d] == pytest.approx(x), "an old record shows its real value"
                    continue
                masked_days += 1
                published += day[series][d] is not None
                hits = [c for c in _candidates(day[series], week[series], month[series], d) if abs(c - x) < TOL]
                assert not hits, f"{m} of {series} on {d}: real {x} recovered as {hits}"
        # Masked weeks and months are withheld; the unmasked ones only sum unmasked days.
        for table, ends in (("store_week_fact", week), ("store_month_fact", month)):
            for values in ends.values():
                for end, v in values.items():
                    assert (v is None) == _is_masked(end, today), (table, m, end, v)
        # A masked week or month record against what the day view reveals: a published block mean times
        # its block's record count is that block's total; minus the block's other visible days, too.
        if m.startswith("inventory"):
            continue  # stocks are not summed over a period
        real_week = _series(real["store_week_fact"], "week_end_date", m)
        real_month = _series(real["store_month_fact"], "month_end_date", m)
        for series, values in day.items():
            dates = sorted(values)
            totals = {}
            for d in dates:
                if _is_masked(d, today) and values[d] is not None:
                    prev = [e for e in dates if _block(e) == _block(d) - 1]
                    totals[_block(d) - 1] = len(prev) * values[d]
            guesses = list(totals.values()) + [
                t - sum(values[e] for e in dates if _block(e) == blk and e != skip) for blk, t in totals.items() for skip in [None]
            ]
            for reals in (real_week[series], real_month[series]):
                for end, w in reals.items():
                    if _is_masked(end, today):
                        assert not [g for g in guesses if abs(g - w) < TOL], (series, end, w)
    # The data really exercised the mask: many masked records, most of them with a published value.
    assert masked_days >= 4 * 4 * 20 and published > masked_days / 3


def _observations(day_dates: list[date], week_ends: list[date], month_ends: list[date], shown_blocks: set[int], today: date) -> np.ndarray:
    """Rows of the linear system a reader who knows the rule can write for one product and store's flows."""
    idx = {d: i for i, d in enumerate(day_dates)}
    rows = []
    for d in day_dates:  # unmasked days: the value itself
        if not _is_masked(d, today):
            rows.append(np.eye(len(day_dates))[idx[d]])
    for ends, end_of in ((week_ends, _week_end), (month_ends, _month_end)):
        for end in ends:  # unmasked periods: the sum of their days
            if not _is_masked(end, today):
                rows.append(np.array([1.0 if end_of(d) == end else 0.0 for d in day_dates]))
    for blk in shown_blocks:  # a published mean x the visible count of its block = the block's sum
        rows.append(np.array([1.0 if _block(d) == blk else 0.0 for d in day_dates]))
    return np.array(rows)


def test_no_linear_combination_of_what_a_reader_sees_recovers_a_masked_value(masked_gold):
    lake, policy, today, _ = masked_gold
    seen = {t: _visible(lake, policy, t) for t in ("store_day_fact", "store_week_fact", "store_month_fact")}
    m = "pos_sales_value_lc"
    day, week, month = (_series(seen[t], canonical.TABLES[t].natural_keys[0], m) for t in seen)
    twins = _series(seen["store_day_fact"], "date", f"at_masked_{m}")
    checked = 0
    for series in day:
        dates = sorted(day[series])
        shown = {_block(d) - 1 for d in dates if twins[series][d] is not None}  # also old records' twin columns
        a = _observations(dates, sorted(week[series]), sorted(month[series]), shown, today)
        rank = np.linalg.matrix_rank(a)
        targets = [np.eye(len(dates))[i] for i, d in enumerate(dates) if _is_masked(d, today)]
        for ends, end_of in ((week[series], _week_end), (month[series], _month_end)):
            targets += [np.array([1.0 if end_of(d) == end else 0.0 for d in dates]) for end in ends if _is_masked(end, today)]
        for t in targets:
            assert np.linalg.matrix_rank(np.vstack([a, t])) > rank, f"{series}: a masked record is a combination of visible values"
            checked += 1
    assert checked > 100


def test_the_attacks_do_break_the_old_rolling_mean(lake):
    """The inversion has teeth: against the former trailing 7-day mean (masked by record age) it recovers
    every masked value, oldest first: 7 x masked - the six days before, which are real or already recovered."""
    today = _today()
    daily = _daily(today)
    old = _series(rolling_mask(daily, "date", "day", MEASURES), "date", "at_masked_pos_sales_value_lc")
    truth = _series(daily, "date", "pos_sales_value_lc")
    recovered = masked = 0
    for s, vals in truth.items():
        if not s[0].startswith("1001_P"):
            continue  # the dense series: every day present
        known = {d: x for d, x in vals.items() if (today - d).days >= THRESHOLD}
        for d in sorted(set(vals) - set(known)):
            masked += 1
            window = [d - timedelta(days=i) for i in range(1, 7)]
            if all(w in known for w in window):
                guess = 7 * old[s][d] - sum(known[w] for w in window)
                if abs(guess - vals[d]) < TOL:
                    known[d] = guess
                    recovered += 1
    assert recovered == masked > 100
    # ... while against the block rule, the same chain finds nothing (already covered for every masked
    # record, and by the linear-algebra test, above).


def test_masked_values_do_not_move_as_new_days_arrive(lake):
    """Two queries on different days must not differ by a newly delivered day's value."""
    today = _today()
    policy = _policy()
    start = today - timedelta(days=HISTORY_DAYS)
    before = [start + timedelta(days=i) for i in range(HISTORY_DAYS - 3)]
    _publish(lake, _daily(today, before))
    build_views(lake, policy)
    first = _visible(lake, policy, "store_day_fact")
    _publish(lake, _daily(today, [start + timedelta(days=i) for i in range(HISTORY_DAYS)]))  # three more days
    build_views(lake, policy)
    second = _visible(lake, policy, "store_day_fact")
    keys = ["date", "site_id", "prod_id"]
    both = first.join(second, on=keys, suffix="_after")
    assert both.height == first.height
    for m in MEASURES:
        moved = both.filter(~pl.col(m).eq_missing(pl.col(f"{m}_after")))
        assert moved.is_empty(), f"{m}: {moved.height} visible values changed when later days arrived"


def test_units_times_the_last_real_price_does_not_recover_masked_values(lake):
    """`antitrust: value` as silver and the views apply it, against a reader who multiplies: a masked
    value is the record's units times the unit price of the newest real record of its product and store
    (exact when prices are steady). Units on show gave back every masked value; masking value masks the
    units (and stock on hand) it is a price times, so the product is a block mean, not the value."""
    today = _today()
    real = _publish(lake, _daily(today, priced=True), list(masked_measures("value")))["store_day_fact"]
    policy = _policy("value")
    build_views(lake, policy)
    pairs = [*PRICED.items(), *((v.replace("_lc", "_usd"), q) for v, q in PRICED.items())]
    cols = ", ".join(["date", "site_id", "prod_id", "fx_rate_to_usd", *sorted({c for p in pairs for c in p})])
    seen = query(lake, policy, "claire", f"select {cols} from store_day_fact order by date")  # noqa: S608
    truth = {(r["prod_id"], r["site_id"], r["date"]): r for r in real.to_dicts()}
    masked = recovered = 0
    for value, quantity in pairs:
        last_price: dict[tuple[str, str], float] = {}
        for r in seen.iter_rows(named=True):
            series = (r["prod_id"], r["site_id"])
            fx = float(r["fx_rate_to_usd"]) if value.endswith("_usd") else 1.0  # the day's rate is on show
            if not _is_masked(r["date"], today):
                if r[quantity]:
                    last_price[series] = float(r[value]) / fx / float(r[quantity])
                continue
            x = float(truth[(*series, r["date"])][value])
            masked += 1
            if r[quantity] is not None and series in last_price:
                recovered += abs(float(r[quantity]) * last_price[series] * fx - x) <= 0.01 * abs(x)
    # The data really exercised the mask, and the multiplication recovers (almost) nothing.
    assert masked >= 6 * 4 * 20
    assert recovered <= 0.05 * masked, f"{recovered} of {masked} masked values recovered as units x last real price"


# ---- the delivery calendar: who owes what is itself a retailer's data -------------------------------
def _calendar_rows(code: str, key: int, days: list[date], sites: int = 2) -> list[dict]:
    rid = code.removeprefix("cds_")
    ts = datetime.now(UTC)
    return [
        {
            "date": d,
            "site_id": f"{rid}_S{s}",
            "grain": "day",
            "expected": True,
            "delivered": s == 0,
            "status": "delivered" if s == 0 else "missing",
            "rows": 3 if s == 0 else 0,
            "files": 1 if s == 0 else 0,
            "data_provider_code": code,
            "secure_group_key": key,
            "_updated_at": ts,
        }
        for d in days
        for s in range(sites)
    ]


def test_the_calendar_view_returns_only_the_readers_retailers(masked_gold):
    lake, _, today, _ = masked_gold
    days = [today - timedelta(days=i) for i in range(1, 6)]
    write_gold(lake, "delivery_calendar", _calendar_rows(*MASKED, days) + _calendar_rows(*PLAIN, days, sites=3))
    policy = _policy()
    build_views(lake, policy)
    per_retailer = "select data_provider_code, count(*) as n from delivery_calendar group by 1 order by 1"
    assert query(lake, policy, "ada", per_retailer).rows() == [(MASKED[0], 10), (PLAIN[0], 15)]
    assert query(lake, policy, "claire", per_retailer).rows() == [(MASKED[0], 10)]
    assert query(lake, policy, "guest", per_retailer).rows() == []
    # Asking for the other retailer by its code or key finds nothing; a join through a view the
    # reader can see does not widen it either.
    for sql in (
        f"select count(*) as n from delivery_calendar where data_provider_code = '{PLAIN[0]}'",
        f"select count(*) as n from delivery_calendar where secure_group_key = {PLAIN[1]} or true",
        "select count(*) as n from delivery_calendar c join store_day_fact d using (data_provider_code) where c.data_provider_code <> d.data_provider_code",
    ):
        n = query(lake, policy, "claire", sql)["n"][0]
        assert n == (10 if "or true" in sql else 0), sql
    con = _reader_connection(database_path(lake), "claire", ["delivery_calendar"])
    try:
        assert con.execute("select distinct secure_group_key from delivery_calendar").fetchall() == [(MASKED[1],)]
        assert con.execute("select table_name from duckdb_tables()").fetchall() == [("delivery_calendar",)]
    finally:
        con.close()
