"""The Spark retailer run as an operator runs it on a real cluster: a standalone master, a worker and
a Spark Connect server started from the installed pyspark on loopback (`spark_cluster.py`, the suite's
`spark_cluster` fixture), the server with its own session defaults (`Etc/UTC`, 200 shuffle
partitions, case-insensitive), as Databricks serverless has them. Layer by layer parity with the
Polars engine on a Connect session of the same cluster is `test_spark_parity.py`'s.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bigbox_data import bigbox_stores

from pos_lakehouse.layers import gold as gold_layer
from pos_lakehouse.layers import silver as silver_layer
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.reference import load_reference_file
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

pytestmark = [pytest.mark.spark, pytest.mark.slow]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
# When a row was ingested or written differs between two runs of the same files; nothing else may.
# When rows were ingested and written (and the calendar's arrival times and lateness, which follow from them).
RUN_TIMES = ("_ingested_at", "_updated_at", "first_arrival", "last_arrival", "due_at", "late_by_hours")


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


def test_spark_retailer_runs_end_to_end_through_spark_connect(spark_cluster, data_root, lake, headless, monkeypatch, tmp_path):
    """`pos-lakehouse run` as an operator points it at the cluster: POS_LAKEHOUSE_SPARK_REMOTE names the
    Connect server (no local Spark is started); gold equals the Polars engine's and reconciles with the files."""
    stores = bigbox_stores(data_root, products=12, days=5, stores=2, seed=5, reference=(40, 10))
    spec, _, landing, landing_dir, *_ = stores
    written = [pl.read_csv(p, separator="|") for p in sorted(landing_dir.iterdir())]
    names = sorted(f.name for f in landing.list_files(spec.name))
    polars = _polars_reference(tmp_path / "polars", data_root / "landing", spec, [names])

    monkeypatch.setenv("POS_LAKEHOUSE_SPARK_REMOTE", spark_cluster.connect_url)
    for key, value in spark_cluster.client_env.items():
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
