"""The whole medallion on an object-store data root, against real servers on loopback (moto's S3
server for `s3://`, Azurite for Azure `az://`):
landing -> bronze -> silver -> gold through the same sensors, jobs and automation, reconciled
against the generator's totals; bookmarks, quarantine and the DuckDB secure views on the store;
and the commit protocol that keeps concurrent writers safe."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import obstore
import polars as pl
import pytest
from conftest import spec_named
from object_store_server import azure_env, azure_server, s3_env, s3_server, store_root  # noqa: F401 - fixtures

from pos_lakehouse.demo.generator import read_expected, write_marche_fr
from pos_lakehouse.quality.reconcile import gold_totals, reconcile
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.storage.object_store import split, store_for


@pytest.fixture
def lake_root(store_root: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    root = store_root
    monkeypatch.setenv("POS_LAKEHOUSE_ENV", "local")
    monkeypatch.setenv("POS_LAKEHOUSE_DATA", root)
    monkeypatch.delenv("POS_LAKEHOUSE_LANDING", raising=False)
    monkeypatch.setenv("POS_LAKEHOUSE_SERVING_DIR", str(tmp_path / "serving"))
    monkeypatch.chdir(tmp_path)  # anything written to a relative "s3:/..." path by mistake would land here
    return root


def complete_periods_end() -> date:
    """The last Sunday of last month: data up to it has its week and month ended before today
    (silver's `not_in_future` rule also applies to week/month-ending dates)."""
    end = date.today().replace(day=1) - timedelta(days=1)
    return end - timedelta(days=(end.weekday() + 1) % 7)


def keys(root: str) -> list[str]:
    return sorted(m["path"] for batch in obstore.list(store_for(root), prefix=split(root)[1] + "/") for m in batch)


def read(uri: str) -> bytes:
    return bytes(obstore.get(store_for(uri), split(uri)[1]).bytes())


def upload(root: str, files: list[Path], retailer: str) -> None:
    store = store_for(root)
    base = split(root)[1]
    for f in files:
        obstore.put(store, f"{base}/landing/{retailer}/{f.name}", f)


def test_file_retailer_landing_to_gold_on_object_store_reconciles(lake_root, tmp_path):
    staging, expected_dir = tmp_path / "staging", tmp_path / "expected"
    days = 6
    files = write_marche_fr(
        staging, expected_dir, days=days, start=complete_periods_end() - timedelta(days=days - 1), n_products=30, n_stores=5
    )
    upload(lake_root, files, "marche_fr")

    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.headless import Headless

    defs = build_definitions()
    lake = Lake(root=lake_root)
    with dg.DagsterInstance.ephemeral() as instance:
        headless = Headless(defs, instance, quiet=True)
        records = headless.settle()
        assert records and all(r.success for r in records), [r.error for r in records if not r.success]

        # Gold reconciles exactly with what the generator says it delivered.
        expected = read_expected(expected_dir)
        assert expected.height == days
        diffs = reconcile(expected, gold_totals(lake, [spec_named("marche_fr")]))
        assert diffs.is_empty(), diffs
        assert lake.row_count(lake.bronze("marche_fr", "pos_daily")) == sum(pl.read_parquet(f).height for f in files)

        # Every layer is a Delta table in the bucket, nothing on the local disk.
        stored = keys(lake_root)
        for prefix in (
            "pos/bronze/marche_fr/pos_daily/_delta_log/",
            "pos/silver/marche_fr/store_day_fact/_delta_log/",
            "pos/gold/store_day_fact/_delta_log/",
        ):
            assert any(k.startswith(prefix) for k in stored), prefix
        assert not (tmp_path / "s3:").exists()

        # Bookmarks live in the Delta commits on the store: silver consumed bronze, gold consumed silver.
        silver_marks = lake.bookmarks(lake.silver("marche_fr", "store_day_fact"))
        gold_marks = lake.bookmarks(lake.gold("store_day_fact"))
        assert silver_marks and gold_marks, (silver_marks, gold_marks)
        gold_versions = {t: lake.version(lake.gold(t)) for t in ("prod_dim", "site_dim", "store_day_fact")}

        # Settling again changes nothing (the ETag cursor and bookmarks hold).
        assert headless.settle() == []
        assert {t: lake.version(lake.gold(t)) for t in gold_versions} == gold_versions

        # A corrupt delivery: rejected, its bytes and reason quarantined in the bucket, gold untouched.
        bad = tmp_path / f"marche_fr_pos_{date.today().isoformat()}.parquet"
        bad.write_bytes(b"PAR1 this is not parquet")
        upload(lake_root, [bad], "marche_fr")
        failed = [r for r in headless.settle() if not r.success]
        assert failed and bad.name in failed[0].error
        rejected = lake.scan(lake.quarantine("marche_fr", "rejected_files")).collect()
        assert rejected["file"].to_list() == [bad.name] and rejected["reason"].to_list() == ["corrupt"]
        copy = rejected["quarantined_copy"][0]
        assert copy.startswith(f"{lake_root}/quarantine/marche_fr/files/")
        assert read(copy) == bad.read_bytes()
        assert b'"reason": "corrupt"' in read(copy + ".reason.json")
        assert {t: lake.version(lake.gold(t)) for t in gold_versions} == gold_versions

    # The DuckDB secure views read the gold tables of the bucket (through a local mirror of the current files).
    from pos_lakehouse.serving.duckdb_views import build_views, database_path, query
    from pos_lakehouse.serving.policy import load_policy

    policy = load_policy()
    build = build_views(lake, policy)
    assert build.path == database_path(lake) and str(build.path).startswith(str(tmp_path / "serving"))
    mirrored = {f: Path(f).stat().st_mtime_ns for f in build.files}
    assert mirrored and all(f.startswith(str(tmp_path / "serving" / "files")) for f in mirrored)
    again = build_views(lake, policy)
    assert {f: Path(f).stat().st_mtime_ns for f in again.files} == mirrored, "immutable data files are not downloaded twice"
    gold_rows = lake.row_count(lake.gold("store_day_fact"))
    assert build.tables["store_day_fact"].rows == gold_rows > 0
    # Measures of these recent days are masked for claire (marche_fr is competition-sensitive, and
    # `value` masking covers units too); keys are not, so the rows and products read back as written.
    claire = query(lake, policy, "claire", "select count(*) as n, count(distinct prod_id) as products from store_day_fact")
    assert claire["n"].item() == gold_rows
    gold_products = lake.scan(lake.gold("store_day_fact")).select(pl.col("prod_id").n_unique()).collect().item()
    assert claire["products"].item() == gold_products > 0
    assert query(lake, policy, "noah", "select count(*) as n from store_day_fact")["n"].item() == 0


def test_concurrent_commits_all_land(lake_root):
    """Writers race for the same Delta version; the store's create-if-absent (S3: conditional PUT with
    If-None-Match; Azure: the same header on a blob write) lets exactly one win each version and the
    others retry -- no commit is lost, no locking provider needed."""
    # The primitive delta-rs relies on: the store refuses to create an object that exists.
    from obstore.exceptions import AlreadyExistsError

    store = store_for(lake_root)
    obstore.put(store, "pos/_probe", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "pos/_probe", b"2", mode="create")

    lake = Lake(root=lake_root)
    uri = lake.uri("bronze", "race", "t")
    lake.append(uri, pl.DataFrame({"writer": [0]}))
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            lake.append(uri, pl.DataFrame({"writer": [i]}), bookmarks={f"writer_{i}": str(i)})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(lake.scan(uri).collect()["writer"].to_list()) == list(range(7))
    assert lake.version(uri) == 6
    assert lake.bookmarks(uri) == {f"writer_{i}": str(i) for i in range(1, 7)}
