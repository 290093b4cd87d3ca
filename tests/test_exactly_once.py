"""Silver and gold exactly once, whoever runs them: two processes, two Dagster instances, one lake.

Every silver and gold commit names its writer in a Delta application transaction (one per retailer
and table; gold's version is the silver version it consumed). An append decided on "nothing is
stored here yet" lands on the snapshot it was decided on or not at all; a commit whose consumed
version the table already records is skipped. Unit-level checks of both, then two real driver
processes (separate DAGSTER_HOMEs, so no pool of either instance can keep them apart) running the
same retailer's deliveries at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import spec_named

from pos_lakehouse.demo.generator import read_expected, write_marche_fr
from pos_lakehouse.layers.gold import GOLD_TABLES, gold_keys
from pos_lakehouse.quality.reconcile import gold_totals, reconcile
from pos_lakehouse.storage.interface import Writer
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical

PROJECT = Path(__file__).resolve().parents[1]
DEFS = PROJECT / "src" / "pos_lakehouse" / "defs"


def _rows(n: int, day: date) -> pl.DataFrame:
    return pl.DataFrame({"day": [day] * n, "k": list(range(n)), "v": [1.0] * n})


# ---- unit level: the writer's transaction ------------------------------------------------------
def test_a_commit_whose_consumed_version_is_recorded_is_a_no_op(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = lake.gold("t")
    writer = Writer("gold/t/cds_1", version=7, once=True)
    rows = _rows(3, date.today())
    lake.merge(uri, rows, keys=["k"])
    first = lake.merge(uri, rows.with_columns(pl.col("v") + 1), keys=["k"], writer=writer)
    assert first["num_target_rows_updated"] == 3
    assert Lake.table(uri).transaction_version("pos_lakehouse.writer.gold/t/cds_1") == 7
    version = lake.version(uri)
    # The same work again (another process, the same silver version): nothing is committed.
    again = lake.merge(uri, rows.with_columns(pl.col("v") + 5), keys=["k"], writer=writer)
    assert again == {} and lake.version(uri) == version
    assert lake.scan(uri).select(pl.col("v").sum()).collect().item() == 6.0
    # Newer work (a later silver version) is committed.
    lake.merge(uri, rows.with_columns(pl.col("v") + 5), keys=["k"], writer=Writer("gold/t/cds_1", version=8, once=True))
    assert lake.version(uri) == version + 1


def test_an_append_decided_on_an_older_snapshot_is_refused(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = lake.silver("r", "facts")  # silver commits name their writer by themselves
    day = date.today()
    mine, theirs = lake.pin(uri), lake.pin(uri)  # both see no table: "nothing stored, append"
    assert lake.append_by_partition(uri, "day", _rows(4, day), pin=theirs)
    # The second append of the same rows, decided on the same (empty) snapshot, does not land ...
    assert not lake.append_by_partition(uri, "day", _rows(4, day), pin=mine)
    assert lake.row_count(uri) == 4
    assert not [p for p in Path(uri).rglob("*.parquet") if p.stat().st_size and "part-" in p.name and _unreferenced(lake, uri, p)]
    # ... while an append decided on the newest snapshot does (another day's rows).
    assert lake.append_by_partition(uri, "day", _rows(2, day - timedelta(days=1)), pin=lake.pin(uri))
    assert lake.row_count(uri) == 6


def _unreferenced(lake: Lake, uri: str, path: Path) -> bool:
    return str(path) not in {str(Path(f)) for f in Lake.table(uri).file_uris()}


# ---- two processes, two instances, one lake ----------------------------------------------------
_DRIVER = textwrap.dedent(
    """
    import json, sys, time, warnings
    from pathlib import Path
    warnings.filterwarnings("ignore")
    import dagster as dg
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.headless import Headless

    defs = build_definitions()
    with dg.DagsterInstance.get() as instance:
        driver = Headless(defs, instance, quiet=True)
        Path(sys.argv[1]).touch()  # loaded; both drivers start their work together, once both are
        while not Path(sys.argv[2]).exists():
            time.sleep(0.01)
        records = driver.settle()
    print(json.dumps([f"{r.name}: {r.error}" for r in records if not r.success]))
    """
)


def _duplicate_keys(frame: pl.DataFrame, keys: list[str]) -> int:
    counts = frame.group_by(keys).len()
    return int((counts["len"] - 1).sum())


@pytest.mark.slow
def test_two_instances_running_one_retailer_at_once_store_each_key_once(tmp_path):
    root = tmp_path / "data"
    landing = root / "landing" / "marche_fr"
    start = date.today() - timedelta(days=40)
    write_marche_fr(landing, root / "expected", days=20, start=start, n_products=150, n_stores=12)
    defs = tmp_path / "defs"
    shutil.copytree(DEFS, defs, ignore=shutil.ignore_patterns("__pycache__"))
    # Each driver says when its code location is loaded; both are told to go at the same moment.
    go = tmp_path / "go"
    drivers = []
    for name in ("a", "b"):
        home = tmp_path / f"home_{name}"
        home.mkdir()
        shutil.copy(PROJECT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "POS_LAKEHOUSE_DATA": str(root),
            "POS_LAKEHOUSE_ENV": "local",
            "POS_LAKEHOUSE_DEFS_DIR": str(defs),
            "POS_LAKEHOUSE_ONLY_RETAILERS": "marche_fr",
        }
        cmd = [sys.executable, "-c", _DRIVER, str(tmp_path / f"ready_{name}"), str(go)]
        drivers.append(subprocess.Popen(cmd, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 600
    while not all((tmp_path / f"ready_{n}").exists() for n in ("a", "b")):
        assert time.monotonic() < deadline and all(d.poll() is None for d in drivers), [d.communicate() for d in drivers]
        time.sleep(0.05)
    go.touch()
    outcomes = [d.communicate(timeout=900) for d in drivers]

    lake = Lake(root=str(root))
    spec = spec_named("marche_fr")
    for table in spec.silver_tables:
        keys = list(canonical.TABLES[table].natural_keys)
        if table in canonical.DIMENSIONS:
            keys = [canonical.KEY_COLUMN[table]]
        assert _duplicate_keys(lake.scan(lake.silver("marche_fr", table)).collect(), keys) == 0, table
    for table in GOLD_TABLES:
        if lake.exists(lake.gold(table)):
            gold = lake.scan(lake.gold(table)).filter(pl.col("data_provider_code") == spec.data_provider_code).collect()
            assert _duplicate_keys(gold, gold_keys(table)) == 0, table
    # Neither driver's runs failed (a MERGE meeting a key stored twice would) ...
    for d, (out, err) in zip(drivers, outcomes, strict=True):
        assert d.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "[]", (out[-2000:], err[-2000:])
    # ... and gold holds every delivered row once, its units and value as the generator wrote them.
    assert reconcile(read_expected(root / "expected"), gold_totals(lake, [spec])).is_empty()


# ---- self-repair of what an earlier version left ------------------------------------------------
def test_keys_stored_twice_by_an_earlier_version_are_repaired_on_the_next_run(data_root, lake, monkeypatch):
    from pos_lakehouse.demo.file_retailers import write_kaufhalle_de
    from pos_lakehouse.ingest.landing import LocalLandingZone
    from pos_lakehouse.layers import gold as gold_layer
    from pos_lakehouse.layers.bronze import ingest_files
    from pos_lakehouse.layers.silver import facts as silver_facts
    from pos_lakehouse.layers.silver import refresh_silver

    spec = spec_named("kaufhalle_de")
    files = write_kaufhalle_de(
        data_root / "landing" / "kaufhalle_de", data_root / "expected", weeks=2, start=date.today() - timedelta(days=30), n_products=12
    )

    def run_layers(names):
        ingest_files(lake, LocalLandingZone(root=str(data_root / "landing")), spec, names)
        silver = refresh_silver(lake, spec, spec.canonical_tables)
        return silver, {t: gold_layer.refresh_gold(lake, spec, t) for t in spec.canonical_tables}

    run_layers([f.name for f in files[:-1]])
    # What two processes appending the same batch left before: 40 keys stored twice in silver and gold.
    silver_uri, gold_uri = lake.silver("kaufhalle_de", "store_day_fact"), lake.gold("store_day_fact")
    lake.append(silver_uri, lake.scan(silver_uri).head(40).collect())
    lake.append(gold_uri, lake.scan(gold_uri).filter(pl.col("data_provider_code") == "cds_1002").head(40).collect())
    keys = list(canonical.TABLES["store_day_fact"].natural_keys)
    assert _duplicate_keys(lake.scan(silver_uri).collect(), keys) == 40
    # A table this code created is marked as holding each key once, and not checked again...
    assert lake.bookmarks(silver_uri)[silver_facts.UNIQUE_KEYS_MARK] == "checked"
    # ...tables and gold partitions written before the check existed carry no mark of it.
    monkeypatch.setattr(gold_layer, "UNIQUE_KEYS_MARK", "unique_keys_of_an_older_table")
    monkeypatch.setattr(silver_facts, "UNIQUE_KEYS_MARK", "unique_keys_of_an_older_table")

    silver, gold = run_layers([files[-1].name])

    assert silver["store_day_fact"].duplicates_removed == 40 and gold["store_day_fact"].duplicates_removed == 40
    assert lake.bookmarks(silver_uri)["unique_keys_of_an_older_table"] == "checked"  # checked once
    assert _duplicate_keys(lake.scan(silver_uri).collect(), keys) == 0
    gold_rows = lake.scan(gold_uri).filter(pl.col("data_provider_code") == "cds_1002").collect()
    assert _duplicate_keys(gold_rows, gold_keys("store_day_fact")) == 0
    assert reconcile(read_expected(data_root / "expected"), gold_totals(lake, [spec])).is_empty()
