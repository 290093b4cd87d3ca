"""Corrupt or empty files fail their run with the file and the problem named; nothing loaded is lost."""

from __future__ import annotations

import polars as pl
from conftest import spec_named

from pos_lakehouse.demo.generator import read_expected, write_marche_fr
from pos_lakehouse.quality.reconcile import gold_totals, reconcile


def _gold_snapshot(lake):
    return {t: lake.scan(lake.gold(t)).collect().sort(pl.all()) for t in ("prod_dim", "site_dim", "store_day_fact")}


def _deliver_bad(data_root, lake, headless, name: str, content: bytes):
    write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=3, n_products=20, n_stores=3)
    assert all(r.success for r in headless.settle())
    before = _gold_snapshot(lake)
    bronze_before = lake.row_count(lake.bronze("marche_fr", "pos_daily"))
    (data_root / "landing" / "marche_fr" / name).write_bytes(content)
    runs = headless.settle()
    failed = [r for r in runs if not r.success]
    assert len(failed) == 1 and failed[0].name == "marche_fr_ingest"
    assert lake.row_count(lake.bronze("marche_fr", "pos_daily")) == bronze_before
    after = _gold_snapshot(lake)
    for t in before:
        assert after[t].equals(before[t]), t
    assert reconcile(read_expected(data_root / "expected"), gold_totals(lake, [spec_named("marche_fr")])).is_empty()
    rejected = lake.scan(lake.quarantine("marche_fr", "rejected_files")).collect()
    return failed[0].error, rejected


def test_corrupt_file(data_root, lake, headless):
    error, rejected = _deliver_bad(data_root, lake, headless, "marche_fr_pos_2026-12-01.parquet", b"PAR1 this is not parquet")
    assert "marche_fr_pos_2026-12-01.parquet" in error and "corrupt" in error
    assert rejected["reason"].to_list() == ["corrupt"]
    assert (data_root / "quarantine" / "marche_fr" / "files").is_dir()


def test_empty_file(data_root, lake, headless):
    error, rejected = _deliver_bad(data_root, lake, headless, "marche_fr_pos_2026-12-02.parquet", b"")
    assert "marche_fr_pos_2026-12-02.parquet" in error and "empty_file" in error
    assert rejected["file"].to_list() == ["marche_fr_pos_2026-12-02.parquet"]


def test_truncated_file(data_root, lake, headless):
    good = write_marche_fr(data_root / "tmp", data_root / "tmp_expected", days=1, n_products=5, n_stores=2)[0].read_bytes()
    error, rejected = _deliver_bad(data_root, lake, headless, "marche_fr_pos_2026-12-03.parquet", good[: len(good) // 2])
    assert "marche_fr_pos_2026-12-03.parquet" in error
    assert rejected["reason"].to_list() == ["corrupt"]
