"""Same deliveries through the Polars engine and the Spark engine: identical silver, gold and keys.

Two data roots get byte-identical bronze (the same files ingested at the same instants); then
silver and gold are refreshed with Polars in one and with PySpark + delta-spark in the other, in
two incremental rounds (the second renames a product: an SCD2 change). Every silver and gold
table must hold the same rows, column for column and in key order. Spark tests are few and
small: each Spark action has a fixed cost that dwarfs these row counts.
"""

import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import spec_named

from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.demo.reference import write_corporate_reference
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers import gold as polars_gold  # one definition: run on either Lake
from pos_lakehouse.layers import silver as polars_silver
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.reference import load_reference_file
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.keys import surrogate_key

pytestmark = pytest.mark.spark

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark():
    """One local Spark for the module (JVM start-up and the Delta jars are the fixed cost)."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"  # Spark hands back timestamps in the process time zone
    time.tzset()
    from pos_lakehouse.spark.session import local_spark

    session = local_spark("pos_lakehouse_tests", cores=2, memory="2g")
    session.conf.set("spark.sql.caseSensitive", "true")
    yield session
    session.stop()
    if previous is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = previous
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


def test_same_deliveries_same_silver_gold_and_keys(spark, tmp_path: Path):
    from pos_lakehouse.spark.lake import SparkLake

    spec = spec_named("marche_fr")
    staging = tmp_path / "staging"
    files = write_marche_fr(
        staging / "marche_fr", tmp_path / "expected", days=3, n_products=8, n_stores=2, density=1.0, renames={2: (3, "Produit 00003 Bio")}
    )
    reference = write_corporate_reference(tmp_path / "reference_files", products=40, sites=10)
    roots = {"polars": tmp_path / "polars", "spark": tmp_path / "spark"}
    lakes = {name: Lake(root=str(root)) for name, root in roots.items()}
    for name, root in roots.items():
        shutil.copytree(staging, root / "landing")
        for path in reference:
            load_reference_file(lakes[name], path.stem, path)
    spark_lake = SparkLake(spark, str(roots["spark"]))
    # The delivery calendar is always built in process with Polars, here from the facts each engine wrote.
    tables = [t for t in spec.silver_tables if t != "delivery_calendar"]

    def deliver(names: list[str], at: datetime) -> None:
        for name, root in roots.items():
            ingest_files(lakes[name], LocalLandingZone(root=str(root / "landing")), spec, names, now=at)

    def refresh(at: datetime) -> dict:
        done = {
            "polars": polars_silver.refresh_silver(lakes["polars"], spec, [*tables, "delivery_calendar"], at),
            "spark": polars_silver.refresh_silver(spark_lake, spec, tables, at)
            | polars_silver.refresh_silver(lakes["spark"], spec, ["delivery_calendar"], at),
        }
        for table in polars_gold.GOLD_TABLES:
            if table in spec.silver_tables:
                polars_gold.refresh_gold(lakes["polars"], spec, table)
                polars_gold.refresh_gold(spark_lake, spec, table)
        return done

    deliver([f.name for f in files[:2]], T0)
    first = refresh(T0 + timedelta(minutes=1))
    deliver([files[2].name], T0 + timedelta(hours=1))
    second = refresh(T0 + timedelta(hours=1, minutes=1))
    # A corrected re-delivery of the first day restates its store-days: one row dropped (deleted
    # from silver and gold), one changed, one repeated in the file (the earlier copy quarantined
    # as a duplicate) and one with an unreadable sales value (quarantined with its reason).
    original = pl.read_parquet(files[0]).with_columns(pl.all().cast(pl.String))
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
    for root in roots.values():
        correction.write_parquet(root / "landing" / "marche_fr" / files[0].name.replace(".parquet", "_v2.parquet"))
    deliver([files[0].name.replace(".parquet", "_v2.parquet")], T0 + timedelta(hours=2))
    third = refresh(T0 + timedelta(hours=2, minutes=1))
    day_fact = third["polars"]["store_day_fact"]
    assert day_fact.removed >= 1 and day_fact.quarantined == 2 and day_fact.quarantine_reasons, day_fact

    for table in spec.silver_tables:
        polars_rows = _rows(lakes["polars"].silver("marche_fr", table), table)
        spark_rows = _rows(lakes["spark"].silver("marche_fr", table), table)
        assert polars_rows.height > 0
        assert spark_rows.equals(polars_rows), f"silver.{table} differs:\n{polars_rows}\n{spark_rows}"
        # The engine's report of what it did matches too (rows read, inserted, updated, quarantined, dates).
        for done in (first, second, third):
            assert done["spark"][table] == done["polars"][table], (table, done["polars"][table], done["spark"][table])
        # Bookmarks written by Spark are read by the Polars Lake: the engines can take turns.
        assert lakes["spark"].bookmarks(lakes["spark"].silver("marche_fr", table)) == lakes["polars"].bookmarks(
            lakes["polars"].silver("marche_fr", table)
        )
    for table in polars_gold.GOLD_TABLES:
        if table in spec.silver_tables:
            assert _rows(lakes["spark"].gold(table), table).equals(_rows(lakes["polars"].gold(table), table)), f"gold.{table} differs"

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


def test_spark_retailer_runs_through_pipes_subprocess(data_root: Path, lake: Lake):
    """The silver asset of a `engine: spark` retailer runs the job in a subprocess and reports back through Pipes."""
    from pos_lakehouse.components.spark_jobs import SparkJobs

    spec = spec_named("marche_fr").model_copy(update={"engine": "spark"})
    files = write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=1, n_products=4, n_stores=2)
    ingest_files(lake, LocalLandingZone(root=str(data_root / "landing")), spec, [f.name for f in files], now=T0)
    tables = ["prod_dim", "site_dim", "store_day_fact"]

    @dg.multi_asset(
        specs=[dg.AssetSpec(["silver", "marche_fr", t]) for t in tables],
        check_specs=[dg.AssetCheckSpec("one_current_version", asset=["silver", "marche_fr", "prod_dim"])],
    )
    def silver(context: dg.AssetExecutionContext, spark: SparkJobs):
        from pos_lakehouse.layers.silver import silver_result_from_dict
        from pos_lakehouse.quality.checks import run_silver_checks

        invocation = spark.run(context, spec, "silver", tables, lake.root)
        yield from invocation.get_results()
        # The job reports results, not checks: the checks run here, on the tables it wrote.
        reported = {m["table"]: silver_result_from_dict(m["silver"]) for m in invocation.get_custom_messages()}
        assert set(reported) == set(tables)
        yield from (
            c
            for c in run_silver_checks(context, lake, spec, tables, reported)
            if c.check_name == "one_current_version" and c.asset_key.path[-1] == "prod_dim"
        )

    result = dg.materialize([silver], resources={"spark": SparkJobs(cores=2, driver_memory="2g")})
    assert result.success
    reported = {tuple(e.materialization.asset_key.path): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(reported) == {("silver", "marche_fr", t) for t in tables}
    rows = pl.read_parquet(files[0]).height
    assert reported[("silver", "marche_fr", "store_day_fact")]["dagster/row_count"].value == rows
    assert reported[("silver", "marche_fr", "store_day_fact")]["engine"].value == "spark"
    assert {c.name for c in reported[("silver", "marche_fr", "store_day_fact")]["dagster/column_schema"].schema.columns} >= {
        "site_key",
        "pos_sales_units",
    }
    assert lake.row_count(lake.silver("marche_fr", "store_day_fact")) == rows
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


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
