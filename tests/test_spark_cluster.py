"""The Spark retailer on a real cluster: a standalone master, a worker and a Spark Connect server
started from the installed pyspark on loopback (`spark_cluster.py`), the server with its own session
defaults (`Etc/UTC`, 200 shuffle partitions, case-insensitive), as Databricks serverless has them.

The job sets what it needs on the session it gets; silver and gold equal the Polars engine's on the
same files, also when the MERGEs' bookmarks go to a commit of their own (the way a session that may
not set the commit-metadata setting records them), which the Polars Lake reads back.
The cluster starts once for the module (about half a minute).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bigbox_data import bigbox_stores, write_store
from spark_cluster import spark_cluster

from pos_lakehouse.layers import gold as gold_layer
from pos_lakehouse.layers import silver as silver_layer
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.engine_choice import engine_for, pending_bronze_rows
from pos_lakehouse.layers.reference import load_reference_file
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

pytestmark = [pytest.mark.spark, pytest.mark.slow]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
# When a row was ingested or written differs between two runs of the same files; nothing else may.
# When rows were ingested and written (and the calendar's arrival times and lateness, which follow from them).
RUN_TIMES = ("_ingested_at", "_updated_at", "first_arrival", "last_arrival", "due_at", "late_by_hours")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with spark_cluster(tmp_path_factory.mktemp("spark_cluster")) as started:
        yield started


def _rows(uri: str, table: str, code: str | None = None) -> pl.DataFrame:
    t = canonical.TABLES[table]
    keys = list(t.natural_keys) + (["valid_from"] if table in canonical.DIMENSIONS else [])
    rows = pl.read_delta(uri)
    if code is not None:
        rows = rows.filter(pl.col("data_provider_code") == code)
    return rows.select([c.name for c in t.columns if c.name not in RUN_TIMES]).sort(keys)


def _polars_reference(root: Path, landing_from: Path, spec, rounds: list[list[str]]) -> Lake:
    """The same landing files through the Polars engine, round by round."""
    from pos_lakehouse.ingest.landing import LocalLandingZone

    lake = Lake(root=str(root))
    for path in sorted((landing_from.parent / "corporate").iterdir()):
        load_reference_file(lake, path.stem, path)
    (root / "landing").mkdir(parents=True)
    shutil.copytree(landing_from / spec.name, root / "landing" / spec.name)
    for i, names in enumerate(rounds):
        ingest_files(lake, LocalLandingZone(root=str(root / "landing")), spec, names, now=T0 + timedelta(hours=i))
        silver_layer.refresh_silver(lake, spec, spec.silver_tables, T0 + timedelta(hours=i, minutes=1))
        for table in gold_layer.GOLD_TABLES:
            if table in spec.silver_tables:
                gold_layer.refresh_gold(lake, spec, table)
    return lake


def test_connect_session_with_server_defaults_gives_polars_silver_gold_and_bookmarks(cluster, tmp_path):
    """Layer by layer through a Connect session whose server set nothing; the MERGEs' bookmarks
    recorded in commits of their own (`bookmarks_in="properties"`), over two deliveries (the second
    restates a store's days with rows left out). A third lake is `engine: auto`: the first, larger
    delivery goes to Spark, the second to Polars, and it ends where either engine alone does."""
    from pos_lakehouse.ingest.landing import LocalLandingZone
    from pos_lakehouse.spark.lake import SparkLake
    from pos_lakehouse.spark.session_conf import apply_job_settings

    stores = bigbox_stores(tmp_path / "spark", products=12, days=6, stores=2, seed=11, reference=(40, 10))
    spec, lake, landing, landing_dir, rng, price, dates = stores
    first = sorted(f.name for f in landing.list_files(spec.name))
    second_rows = write_store(landing_dir, rng, 1, dates[1:4], price, drop_every=4)
    second = sorted(f.name for f in landing.list_files(spec.name) if f.name not in first)
    polars = _polars_reference(tmp_path / "polars", tmp_path / "spark" / "landing", spec, [first, second])
    auto_spec = spec.model_copy(update={"engine": "auto", "spark_from_rows": second_rows + 1})
    switching = Lake(root=str(tmp_path / "auto"))
    chosen = []

    with cluster.connect() as spark:
        server_default = spark.conf.get("spark.sql.session.timeZone")
        apply_job_settings(spark, shuffle_partitions=2, spec=spec)
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC" != server_default
        spark_lake = SparkLake(spark, lake.root, bookmarks_in="properties")
        for i, names in enumerate([first, second]):
            # The `engine: auto` lake takes the same deliveries. Its first is the Spark lake's own work
            # (the same files and reference data on the same session), so after the first round it
            # is a copy of the Spark lake; its second is its own, on the engine the size picks.
            for polars_lake, root in ((lake, "spark"), *([(switching, "auto")] if i else [])):
                ingest_files(polars_lake, LocalLandingZone(root=str(tmp_path / root / "landing")), spec, names, now=T0 + timedelta(hours=i))
            chosen.append(engine_for(auto_spec, pending_bronze_rows(switching if i else lake, auto_spec, spec.silver_tables)))
            at = T0 + timedelta(hours=i, minutes=1)
            pairs = [(spark_lake, lake), *([(switching, switching)] if i and chosen[-1] == "polars" else [])]
            for target, in_process in pairs:
                # As the silver asset does: Spark writes the facts, the Dagster process (Polars) the calendar.
                on_engine = [t for t in spec.silver_tables if t != "delivery_calendar" or target is in_process]
                silver_layer.refresh_silver(target, spec, on_engine, at)
                if target is not in_process:
                    silver_layer.refresh_silver(in_process, spec, ["delivery_calendar"], at)
                for table in gold_layer.GOLD_TABLES:
                    if table in spec.silver_tables:
                        gold_layer.refresh_gold(target, spec, table)
            if i == 0:
                shutil.copytree(tmp_path / "spark", tmp_path / "auto")

    operations = {}
    for table in spec.silver_tables:
        want = _rows(polars.silver(spec.name, table), table)
        assert want.height > 0
        assert _rows(lake.silver(spec.name, table), table).equals(want), f"silver.{table} differs"
        # Spark's bookmarks, in commits of their own, read by the Polars Lake as Polars wrote its own.
        assert lake.bookmarks(lake.silver(spec.name, table)) == polars.bookmarks(polars.silver(spec.name, table)), table
        operations[table] = [c.get("operation") for c in lake.commits(lake.silver(spec.name, table), 20)]
        assert table == "delivery_calendar" or "SET TBLPROPERTIES" in operations[table], operations
    assert any("MERGE" in ops for ops in operations.values()), operations  # the restatement MERGEd
    for table in gold_layer.GOLD_TABLES:
        if table in spec.silver_tables:
            assert _rows(lake.gold(table), table).equals(_rows(polars.gold(table), table)), f"gold.{table} differs"
            # Less the mark of the one-time duplicate-key repair, which only the Polars Lake can run.
            assert lake.bookmarks(lake.gold(table)) == _without_repair_mark(polars.bookmarks(polars.gold(table))), table
    # engine: auto took Spark for the first delivery and Polars for the smaller second one.
    assert chosen == ["spark", "polars"]
    for table in spec.silver_tables:
        assert _rows(switching.silver(spec.name, table), table).equals(_rows(polars.silver(spec.name, table), table)), table
    for table in gold_layer.GOLD_TABLES:
        if table in spec.silver_tables:
            assert _rows(switching.gold(table), table).equals(_rows(polars.gold(table), table)), f"auto: gold.{table} differs"


def test_spark_retailer_runs_end_to_end_through_spark_connect(cluster, data_root, lake, headless, monkeypatch, tmp_path):
    """`pos-lakehouse run` as an operator points it at the cluster: POS_LAKEHOUSE_SPARK_REMOTE names the
    Connect server (no local Spark is started); gold equals the Polars engine's and reconciles with the files."""
    stores = bigbox_stores(data_root, products=12, days=5, stores=2, seed=5, reference=(40, 10))
    spec, _, landing, landing_dir, *_ = stores
    written = [pl.read_csv(p, separator="|") for p in sorted(landing_dir.iterdir())]
    names = sorted(f.name for f in landing.list_files(spec.name))
    polars = _polars_reference(tmp_path / "polars", data_root / "landing", spec, [names])

    monkeypatch.setenv("POS_LAKEHOUSE_SPARK_REMOTE", cluster.connect_url)
    for key, value in cluster.client_env.items():
        monkeypatch.setenv(key, value)
    records = headless.tick_landing()
    assert [r.name for r in records] == [f"{spec.name}_ingest"] and all(r.success for r in records), records

    code = f"cds_{spec.retailer_id}"
    for table in gold_layer.GOLD_TABLES:
        if table in spec.silver_tables:
            got, want = _rows(lake.gold(table), table, code), _rows(polars.gold(table), table, code)
            assert want.height > 0 and got.equals(want), f"gold.{table} differs:\n{want}\n{got}"
    facts = _rows(lake.gold("store_day_fact"), "store_day_fact", code)
    assert facts["pos_sales_units"].sum() == sum(int(f["UNIT_QTY"].sum()) for f in written)
    assert facts.height == sum(f.height for f in written)


def _without_repair_mark(marks: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in marks.items() if not k.startswith(gold_layer.UNIQUE_KEYS_MARK)}
