"""Same deliveries through the Polars engine and the Spark engine: identical silver, gold and keys.

The Spark side is a Spark Connect session on the suite's loopback cluster (`spark_cluster` in
conftest), with the server's own session defaults (`Etc/UTC`, 200 shuffle partitions,
case-insensitive) as Databricks serverless has them, and as the local path has them too (the
Dagster step's jobs are clients of a local Connect server): the job's settings
(`apply_job_settings`) make it right.

Three data roots get byte-identical bronze (the same files ingested at the same instants); then
silver and gold are refreshed with Polars in one and with PySpark + delta-spark in the other, in
two incremental rounds: the second brings a new day that renames a product (an SCD2 change) and a
corrected re-delivery of the first day (a restatement). Silver's MERGEs record their bookmarks in
commits of their own (`bookmarks_in="properties"`, as on a session that refuses the commit-metadata
setting), gold's in the MERGE's own commit (`commit`); the Polars Lake reads both. The third root
is an `engine: auto` retailer: the first, larger delivery goes to Spark, the second to Polars.
Every silver and gold table must hold the same rows, column for column and in key order. Spark
tests are few and small: each Spark action has a fixed cost that dwarfs these row counts.
"""

import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import spec_named

from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.demo.reference import write_corporate_reference
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers import gold as polars_gold  # one definition: run on either Lake
from pos_lakehouse.layers import silver as polars_silver
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.engine_choice import engine_for, pending_bronze_rows
from pos_lakehouse.layers.reference import load_reference_file
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.keys import surrogate_key

pytestmark = pytest.mark.spark

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
GOLD = polars_gold.GOLD_TABLES


@pytest.fixture
def spark(spark_cluster, monkeypatch):
    """A Connect session on the cluster, as the server hands it out (nothing set), in a process
    whose time zone is UTC (Spark hands timestamps back as naive datetimes in the process's zone,
    which the job pins the same way)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    with spark_cluster.connect() as session:
        yield session
    monkeypatch.undo()
    time.tzset()


def _rows(uri: str, table: str) -> pl.DataFrame:
    t = canonical.TABLES[table]
    keys = list(t.natural_keys) + (["valid_from"] if table in canonical.DIMENSIONS else [])
    return pl.read_delta(uri).select([c.name for c in t.columns]).sort(keys)


def test_spark_surrogate_keys_are_bit_for_bit_the_polars_ones(spark):
    import narwhals as nw

    from pos_lakehouse.engines.spark import with_surrogate_key

    cases = [
        ("1001_A00007", date(1900, 1, 1)),
        ("1003_Caf\u00e9 \u00fcber", date(2026, 9, 14)),
        ("1008_\u5bff\u53f8", date(2026, 12, 31)),
        ("", date(2000, 2, 29)),
    ]
    frame = nw.from_native(spark.createDataFrame(cases, "prod_id string, valid_from date"))
    got = {r["prod_id"]: r["k"] for r in with_surrogate_key(frame, "k", 1001, ["prod_id"], "valid_from").to_native().collect()}
    assert got == {p: surrogate_key(1001, [p], d) for p, d in cases}


def _correction(first_day: Path) -> tuple[pl.DataFrame, str]:
    """A corrected re-delivery of a day: its first row dropped (deleted from silver and gold), the
    next one changed, repeated with other units before it (that earlier copy quarantined as a
    duplicate), and one with an unreadable sales value (quarantined with its reason)."""
    original = pl.read_parquet(first_day).with_columns(pl.all().cast(pl.String))
    changed_units = str(int(original["qte_vendue"][1]) + 5)
    correction = pl.concat(
        [
            original.slice(1, 1).with_columns(pl.lit("999").alias("qte_vendue")),
            original.slice(1).with_columns(
                pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(changed_units)).otherwise(pl.col("qte_vendue")).alias("qte_vendue"),
                pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("abc")).otherwise(pl.col("ca_ttc_eur")).alias("ca_ttc_eur"),
            ),
        ]
    )
    return correction, changed_units


def test_same_deliveries_same_silver_gold_and_keys(spark, tmp_path: Path):
    from pos_lakehouse.spark.lake import SparkLake
    from pos_lakehouse.spark.session_conf import apply_job_settings

    spec = spec_named("marche_fr")
    staging = tmp_path / "staging"
    files = write_marche_fr(
        staging / "marche_fr", tmp_path / "expected", days=4, n_products=8, n_stores=2, density=1.0, renames={3: (3, "Produit 00003 Bio")}
    )
    correction, changed_units = _correction(files[0])
    correction.write_parquet(staging / "marche_fr" / files[0].name.replace(".parquet", "_v2.parquet"))
    reference = write_corporate_reference(tmp_path / "reference_files", products=40, sites=10)
    roots = {"polars": tmp_path / "polars", "spark": tmp_path / "spark"}
    lakes = {name: Lake(root=str(root)) for name, root in roots.items()}
    for name, root in roots.items():
        shutil.copytree(staging, root / "landing")
        for path in reference:
            load_reference_file(lakes[name], path.stem, path)
    # The delivery calendar is always built in process with Polars, here from the facts each engine wrote.
    tables = [t for t in spec.silver_tables if t != "delivery_calendar"]

    server_default = spark.conf.get("spark.sql.session.timeZone")
    apply_job_settings(spark, shuffle_partitions=2, spec=spec)
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC" != server_default

    rounds = [[f.name for f in files[:3]], [files[3].name, files[0].name.replace(".parquet", "_v2.parquet")]]
    auto_spec = spec.model_copy(update={"engine": "auto", "spark_from_rows": pl.read_parquet(files[3]).height + correction.height + 1})
    auto = Lake(root=str(tmp_path / "auto"))
    chosen, done = [], []
    for i, names in enumerate(rounds):
        at = T0 + timedelta(hours=i)
        for name, root in roots.items():
            ingest_files(lakes[name], LocalLandingZone(root=str(root / "landing")), spec, names, now=at)
        if i:  # the auto lake's first delivery was the Spark lake's own work: it starts as a copy of it
            ingest_files(auto, LocalLandingZone(root=str(tmp_path / "auto" / "landing")), spec, names, now=at)
        chosen.append(engine_for(auto_spec, pending_bronze_rows(auto if i else lakes["spark"], auto_spec, spec.silver_tables)))
        at += timedelta(minutes=1)
        # As the Spark job does: a Lake per job (its silver, then its gold), each bookmarking its own way.
        silver_lake = SparkLake(spark, str(roots["spark"]), bookmarks_in="properties")
        gold_lake = SparkLake(spark, str(roots["spark"]), bookmarks_in="commit")
        done.append(
            {
                "polars": polars_silver.refresh_silver(lakes["polars"], spec, [*tables, "delivery_calendar"], at),
                "spark": polars_silver.refresh_silver(silver_lake, spec, tables, at)
                | polars_silver.refresh_silver(lakes["spark"], spec, ["delivery_calendar"], at),
            }
        )
        if i and chosen[-1] == "polars":
            polars_silver.refresh_silver(auto, spec, spec.silver_tables, at)
        for table in (t for t in GOLD if t in spec.silver_tables):
            polars_gold.refresh_gold(lakes["polars"], spec, table)
            polars_gold.refresh_gold(gold_lake, spec, table)
            if i and chosen[-1] == "polars":
                polars_gold.refresh_gold(auto, spec, table)
        if i == 0:
            shutil.copytree(roots["spark"], tmp_path / "auto")

    day_fact = done[-1]["polars"]["store_day_fact"]
    assert day_fact.removed >= 1 and day_fact.quarantined == 2 and day_fact.quarantine_reasons, day_fact
    operations = {}
    for table in spec.silver_tables:
        polars_rows = _rows(lakes["polars"].silver("marche_fr", table), table)
        spark_rows = _rows(lakes["spark"].silver("marche_fr", table), table)
        assert polars_rows.height > 0
        assert spark_rows.equals(polars_rows), f"silver.{table} differs:\n{polars_rows}\n{spark_rows}"
        # The engine's report of what it did matches too (rows read, inserted, updated, quarantined, dates).
        for both in done:
            assert both["spark"][table] == both["polars"][table], (table, both["polars"][table], both["spark"][table])
        # Bookmarks written by Spark, in commits of their own, are read by the Polars Lake: the engines can take turns.
        uris = {name: lakes[name].silver("marche_fr", table) for name in roots}
        assert lakes["spark"].bookmarks(uris["spark"]) == lakes["polars"].bookmarks(uris["polars"]), table
        operations[table] = [c.get("operation") for c in lakes["spark"].commits(uris["spark"], 20)]
        assert table == "delivery_calendar" or "SET TBLPROPERTIES" in operations[table], operations
    assert "MERGE" in operations["store_day_fact"], operations  # the restatement MERGEd
    for table in (t for t in GOLD if t in spec.silver_tables):
        uris = {name: lakes[name].gold(table) for name in roots}
        assert _rows(uris["spark"], table).equals(_rows(uris["polars"], table)), f"gold.{table} differs"
        # The MERGE's own commit carries them. Less the mark of the one-time duplicate-key repair,
        # which only the Polars Lake can run.
        assert lakes["spark"].bookmarks(uris["spark"]) == _without_repair_mark(lakes["polars"].bookmarks(uris["polars"])), table

    # The restatement: the dropped row is gone, the changed one carries its new units, the
    # repeated one its last copy; both engines quarantined the same rows for the same reasons.
    first_day = pl.read_parquet(files[0])
    day_rows = _rows(lakes["spark"].gold("store_day_fact"), "store_day_fact").filter(
        pl.col("date") == first_day["date_vente"].cast(pl.Date)[0]
    )
    dropped = first_day.row(0, named=True)
    assert (
        day_rows.filter(
            (pl.col("prod_id") == f"1001_{dropped['code_article']}") & (pl.col("site_id") == f"1001_{dropped['code_magasin']}")
        ).height
        == 0
    )
    redone = first_day.row(1, named=True)
    assert day_rows.filter(
        (pl.col("prod_id") == f"1001_{redone['code_article']}") & (pl.col("site_id") == f"1001_{redone['code_magasin']}")
    )["pos_sales_units"].cast(pl.Int64).to_list() == [int(changed_units)]
    rejected = {
        name: pl.read_delta(lakes[name].quarantine("marche_fr", "rejected_rows"))
        .select("reason", "_row_number", "raw_values")
        .sort("_row_number")
        for name in roots
    }
    assert rejected["spark"].height == 2 and rejected["spark"].equals(rejected["polars"])

    # The rename opened a second version with its own key, identical in both engines.
    prod = {name: _rows(lakes[name].silver("marche_fr", "prod_dim"), "prod_dim") for name in roots}
    renamed = prod["spark"].filter(pl.col("prod_id") == "1001_A00003")
    assert renamed.height == 2 and renamed["prod_name"].to_list() == ["Produit 00003", "Produit 00003 Bio"]
    assert renamed["prod_key"].to_list() == [surrogate_key(1001, ["1001_A00003"], d) for d in renamed["valid_from"].to_list()]
    assert prod["spark"]["prod_key"].to_list() == prod["polars"]["prod_key"].to_list()
    assert pl.read_delta(lakes["spark"].gold("store_day_fact")).select(pl.col("prod_key").is_null().sum()).item() == 0

    # engine: auto took Spark for the first, larger delivery and Polars for the second, and ended
    # where either engine alone does.
    assert chosen == ["spark", "polars"]
    for table in spec.silver_tables:
        assert _rows(auto.silver("marche_fr", table), table).equals(_rows(lakes["polars"].silver("marche_fr", table), table)), table
    for table in (t for t in GOLD if t in spec.silver_tables):
        assert _rows(auto.gold(table), table).equals(_rows(lakes["polars"].gold(table), table)), f"auto: gold.{table} differs"


def _without_repair_mark(marks: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in marks.items() if not k.startswith(polars_gold.UNIQUE_KEYS_MARK)}


def test_spark_merges_extra_attributes_to_the_polars_bytes(spark):
    """Both engines keep the same `extra_attributes` text, mapped (retired) keys removed."""
    import narwhals as nw
    from test_extra_attributes import MERGE_CASES

    from pos_lakehouse.engines import polars as polars_edges
    from pos_lakehouse.engines import spark as spark_edges

    rows = [(i, new, stored) for i, (new, stored) in enumerate(MERGE_CASES)]
    schema = {"i": pl.Int64, "new": pl.String, "stored": pl.String}
    for retired in ((), ("Importe",)):
        frame = nw.from_native(pl.DataFrame(rows, schema=schema, orient="row").lazy())
        want = polars_edges.merge_json(frame, "new", "stored", "merged", retired).collect().to_native().sort("i")["merged"].to_list()
        native = spark.createDataFrame(rows, "i long, new string, stored string")
        merged = spark_edges.merge_json(nw.from_native(native), "new", "stored", "merged", retired).to_native()
        got = [r["merged"] for r in sorted(merged.collect(), key=lambda r: r["i"])]
        assert got == want, retired
