"""highstreet_uk (1005) read from its warehouse: SQLite (the embedded default) and a real PostgreSQL on loopback."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from conftest import spec_named
from postgres_server import postgres_server

from pos_lakehouse.demo.generator import read_expected
from pos_lakehouse.demo.retailer_db import RetailerDatabase, sqlite_url, write_highstreet_uk
from pos_lakehouse.ingest.database import SourceDatabaseError, engine_for, pull_database, pull_table
from pos_lakehouse.ingest.pulled import read_state
from pos_lakehouse.layers.silver import refresh_silver
from pos_lakehouse.quality.reconcile import gold_totals, reconcile
from pos_lakehouse.retailer import DatabaseSpec

SMALL = {"n_products": 20, "n_stores": 4, "density": 0.35}


# ---- a real PostgreSQL server on loopback, started and stopped by the tests ----------------------------
@pytest.fixture(scope="module")
def postgres_url():
    """Superuser-free URL of a fresh database `warehouse` owned by role `highstreet`, password-authenticated."""
    with postgres_server() as server:
        yield server.create_database("highstreet", "hs-Secret-42", "warehouse")


@pytest.fixture
def fresh_postgres(postgres_url):
    """The PostgreSQL warehouse, emptied for each test."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS products, stores, daily_sales, inventory"))
    engine.dispose()
    return postgres_url


# ---- helpers -------------------------------------------------------------------------------------------------
def with_database(**settings):
    spec = spec_named("highstreet_uk")
    db = spec.delivery.database.model_copy(update=settings)
    return spec.model_copy(update={"delivery": spec.delivery.model_copy(update={"database": db})})


def demo_sqlite(data_root: Path) -> str:
    """Where the YAML's default URL points: `<data root>/sources/highstreet_uk/warehouse.sqlite`."""
    return sqlite_url(data_root / "sources" / "highstreet_uk" / "warehouse.sqlite")


def assert_gold_reconciles(data_root, lake, db: RetailerDatabase) -> None:
    db.write_expected(data_root / "expected")
    expected = read_expected(data_root / "expected").filter(pl.col("retailer") == "highstreet_uk")
    assert expected.height == db.days_loaded()
    diffs = reconcile(expected, gold_totals(lake, [spec_named("highstreet_uk")]))
    assert diffs.is_empty(), diffs.to_dicts()


def source_rows(db: RetailerDatabase, table: str) -> int:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


def end_to_end(data_root, lake, headless, db: RetailerDatabase, *, late_update_through_automation: bool = True) -> None:
    records = headless.settle()
    assert records and all(r.success for r in records), [r.error for r in records if not r.success]
    assert [r.name for r in records if r.name == "highstreet_uk_ingest"] == ["highstreet_uk_ingest"]
    for table in ("products", "stores", "daily_sales", "inventory"):
        assert lake.row_count(lake.bronze("highstreet_uk", table)) == source_rows(db, table)
    assert_gold_reconciles(data_root, lake, db)
    gold = lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == "cds_1005").collect()
    assert gold["secure_group_key"].unique().to_list() == [110015] and gold["currency"].unique().to_list() == ["GBP"]
    # Sales and inventory come from two tables and fill the same rows.
    with db.engine.connect() as conn:
        on_hand = conn.execute(sa.text("SELECT sum(on_hand) FROM inventory")).scalar()
    assert Decimal(str(gold["inventory_qty_on_hand"].sum())) == Decimal(on_hand)

    # A late correction of an old sale: re-pulled once, upserted in silver, not duplicated.
    sale = db.sales_rows()[0]
    db.restate(sale["trade_date"], sale["store_no"], sale["product_code"], 777, Decimal("4321.09"))
    db.add_days(1)
    if late_update_through_automation:
        records = headless.settle()
        assert records and all(r.success for r in records), [r.error for r in records if not r.success]
    else:  # the same steps the runs take, without evaluating every retailer's automation again (faster)
        spec = spec_named("highstreet_uk")
        pull_database(lake, spec)
        refresh_silver(lake, spec, spec.canonical_tables)
    assert lake.row_count(lake.bronze("highstreet_uk", "daily_sales")) == source_rows(db, "daily_sales") + 1
    silver = lake.scan(lake.silver("highstreet_uk", "store_day_fact")).collect()
    assert silver.height == source_rows(db, "daily_sales")
    fixed = silver.filter(
        (pl.col("date") == sale["trade_date"])
        & (pl.col("site_id") == f"1005_{sale['store_no']}")
        & (pl.col("prod_id") == f"1005_{sale['product_code']}")
    )
    assert fixed.height == 1 and fixed["pos_sales_units"].item() == 777
    if late_update_through_automation:
        assert_gold_reconciles(data_root, lake, db)
        assert headless.settle() == []


# ---- SQLite: the embedded default ---------------------------------------------------------------------------
def test_sqlite_end_to_end_with_a_late_update(data_root, lake, headless):
    db = write_highstreet_uk(demo_sqlite(data_root), data_root / "expected", days=3, **SMALL)
    end_to_end(data_root, lake, headless, db)


def test_late_commit_inside_the_lag_window_is_read_once(data_root, lake):
    db = write_highstreet_uk(demo_sqlite(data_root), data_root / "expected", days=2, **SMALL)
    spec = with_database(lag_seconds=120)
    pull_database(lake, spec)
    before = lake.row_count(lake.bronze("highstreet_uk", "daily_sales"))
    watermark = read_state(lake, lake.bronze("highstreet_uk", "daily_sales"))["watermark"]
    # A transaction that began a minute before the newest change commits only now: its updated_at is behind the watermark.
    first = db.sales_rows()[0]
    db.late_commit(first["trade_date"], first["store_no"], "HS999999", 3, Decimal("9.99"), seconds_ago=60)
    late = [r for r in db.sales_rows() if r["product_code"] == "HS999999"][0]
    assert late["updated_at"].isoformat() < watermark
    outcome = {o.table: o for o in pull_database(lake, spec)}["daily_sales"]
    assert outcome.rows == 1 and outcome.duplicates_skipped > 0  # the lag window was re-read, only the late row is new
    bronze = lake.scan(lake.bronze("highstreet_uk", "daily_sales")).collect()
    assert bronze.height == before + 1
    assert bronze.filter(pl.col("product_code") == "HS999999").height == 1
    # And again: nothing new, nothing appended.
    assert {o.table: o for o in pull_database(lake, spec)}["daily_sales"].rows == 0
    assert lake.row_count(lake.bronze("highstreet_uk", "daily_sales")) == before + 1
    # Outside the lag window a late commit is not seen: that is what the lag is for.
    db.late_commit(first["trade_date"], first["store_no"], "HS888888", 1, Decimal("1.00"), seconds_ago=3600)
    assert {o.table: o for o in pull_database(lake, spec)}["daily_sales"].rows == 0


def test_chunked_reads_commit_each_chunk_with_its_watermark(data_root, lake):
    db = write_highstreet_uk(demo_sqlite(data_root), data_root / "expected", days=3, **SMALL)
    spec = with_database(chunk_rows=25)
    total = source_rows(db, "daily_sales")
    engine = engine_for(spec, lake.root)
    outcome = pull_table(lake, spec, "daily_sales", engine)
    assert outcome.deliveries == -(-total // 25) and outcome.rows == total
    uri = lake.bronze("highstreet_uk", "daily_sales")
    assert lake.version(uri) == outcome.deliveries - 1  # one Delta commit per chunk
    bronze = lake.scan(uri).collect()
    assert bronze.height == total and bronze["_delivery_id"].n_unique() == outcome.deliveries
    assert bronze.select("trade_date", "store_no", "product_code").n_unique() == total
    engine.dispose()


def test_database_secrets_stay_out_of_yaml(data_root):
    with pytest.raises(ValueError, match="must not carry a password"):
        DatabaseSpec(url="postgresql://highstreet:secret@db.example/warehouse", tables={})


# ---- PostgreSQL: the same YAML, another URL ----------------------------------------------------------------------
def test_postgresql_end_to_end_with_a_late_update(data_root, lake, headless, fresh_postgres, monkeypatch):
    monkeypatch.setenv("HIGHSTREET_DB_URL", fresh_postgres)
    db = write_highstreet_uk(fresh_postgres, data_root / "expected", days=3, **SMALL)
    try:
        end_to_end(data_root, lake, headless, db, late_update_through_automation=False)
    finally:
        db.dispose()
    # The password never reaches run metadata or logs.
    for record in headless.runs:
        logs = headless.instance.all_logs(record.run_id) if record.run_id else []
        assert not any(
            "hs-Secret-42" in (e.message or "") or "hs-Secret-42" in str(getattr(e.dagster_event, "event_specific_data", "")) for e in logs
        )


def test_postgresql_wrong_password_fails_clearly(data_root, lake, fresh_postgres, monkeypatch):
    monkeypatch.setenv("HIGHSTREET_DB_URL", fresh_postgres.replace("hs-Secret-42", "not-the-password"))
    with pytest.raises(SourceDatabaseError) as info:
        pull_database(lake, spec_named("highstreet_uk"))
    message = str(info.value)
    assert "password authentication failed" in message and "highstreet" in message
    assert "not-the-password" not in message and "***" in message
