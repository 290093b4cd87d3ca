"""The Spark engine against a bare PySpark medallion on the same files, in one run.

    uv run python benchmarks/spark_throughput.py                  # 1,000,000 fact rows, local Spark
    uv run python benchmarks/spark_throughput.py --rows 5000000
    uv run python benchmarks/spark_throughput.py --cluster        # both on a standalone cluster through Spark Connect
    uv run python benchmarks/spark_throughput.py --demo --no-floor --profile   # the demo's bigbox_us (54k rows, reference data)

The delivery is `throughput.py`'s (bigbox_us-shaped pipe-delimited store files). Each side runs in
its own child process with a Spark of its own (the same driver settings and the job's session
settings, `spark/session_conf.py`):

- floor: the bare medallion of `throughput.py`'s Polars floor written with plain PySpark DataFrame
  reads and writes, each stage an overwrite, no MERGE: CSV -> bronze (strings), bronze -> silver
  (typed, xxhash64 key), silver -> gold (copy), silver -> week and -> month aggregates (sums per
  period end, store and product; the stock on the period's last day);
- spark: the project's path for an `engine: spark` retailer: bronze on Polars (as the delivery's
  run writes it), then `refresh_silver` and `refresh_gold` for every gold table on a `SparkLake`.

The fixed cost (session start, Delta's jars, the first job) is timed apart; the ratio compares the
stages. With `--cluster` the sessions are Spark Connect clients of `tests/spark_cluster.py`'s
cluster (master, one worker, Connect server; started and stopped here), whose own start-up is
printed but counted in neither side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from throughput import generate

TARGET_RATIO = 2.0  # spark / floor at 1M rows


def _session(remote: str | None, extra: dict[str, str] | None = None):
    """A session and the time it took to be ready for work (session + a first job)."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    started = time.perf_counter()
    if remote:
        from pyspark.sql import SparkSession

        from pos_lakehouse.spark.session_conf import apply_job_settings

        spark = SparkSession.builder.remote(remote).create()
        apply_job_settings(spark, shuffle_partitions=max(2, os.cpu_count() or 2))
    else:
        from pos_lakehouse.spark.session import local_spark

        spark = local_spark("pos_lakehouse_spark_throughput", extra=extra)
    spark.range(1).count()
    return spark, time.perf_counter() - started


def run_floor(root: Path, remote: str | None) -> dict:
    from pyspark.sql import functions as F

    spark, fixed = _session(remote)
    landing = str(root / "landing" / "bigbox_us")
    uris = {layer: str(root / f"floor_{layer}") for layer in ("bronze", "silver", "gold", "week", "month")}
    stages: dict[str, float] = {}

    def stage(name, fn):
        t = time.perf_counter()
        fn()
        stages[name] = time.perf_counter() - t

    def overwrite(df, uri):
        df.write.format("delta").mode("overwrite").save(uri)

    stage("bronze", lambda: overwrite(spark.read.option("header", True).option("sep", "|").csv(landing), uris["bronze"]))

    def silver():
        b = spark.read.format("delta").load(uris["bronze"])
        overwrite(
            b.select(
                F.to_date("SALES_DATE", "MM/dd/yyyy").alias("date"),
                F.col("STORE_NBR").alias("site_id"),
                F.col("ITEM_NBR").alias("prod_id"),
                F.col("UNIT_QTY").cast("double").alias("pos_sales_units"),
                F.col("SALES_AMT").cast("double").alias("pos_sales_value_lc"),
                F.col("RETURN_QTY").cast("double").alias("pos_returns_units"),
                F.col("ON_HAND_QTY").cast("double").alias("inventory_qty_on_hand"),
                F.xxhash64(F.concat_ws("|", "STORE_NBR", "ITEM_NBR", "SALES_DATE")).alias("row_key"),
            ),
            uris["silver"],
        )

    stage("silver", silver)
    stage("gold", lambda: overwrite(spark.read.format("delta").load(uris["silver"]), uris["gold"]))

    def period(name, end):
        days = spark.read.format("delta").load(uris["silver"])
        overwrite(
            days.groupBy(end.alias(f"{name}_end_date"), "site_id", "prod_id").agg(
                *[F.sum(c).alias(c) for c in ("pos_sales_units", "pos_sales_value_lc", "pos_returns_units")],
                F.max_by("inventory_qty_on_hand", "date").alias("inventory_qty_on_hand"),
            ),
            uris[name],
        )

    stage("week", lambda: period("week", F.next_day(F.date_sub("date", 1), "Sun")))
    stage("month", lambda: period("month", F.last_day("date")))
    spark.stop()
    return {"fixed": fixed, "seconds": sum(stages.values()), "stages": stages}


def run_spark(root: Path, remote: str | None, profile: bool = False) -> dict:
    from pos_lakehouse.ingest.landing import LocalLandingZone
    from pos_lakehouse.layers import silver as silver_layer
    from pos_lakehouse.layers.bronze import ingest_files
    from pos_lakehouse.layers.gold import GOLD_TABLES, refresh_gold
    from pos_lakehouse.layers.silver import refresh_silver
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.settings import RETAILERS_DIR
    from pos_lakehouse.spark.lake import SparkLake
    from pos_lakehouse.storage.lake import Lake

    spec = next(s for s in load_retailer_specs(RETAILERS_DIR) if s.name == "bigbox_us")
    landing = LocalLandingZone(root=str(root / "landing"))
    t = time.perf_counter()
    ingest_files(Lake(root=str(root)), landing, spec, [f.name for f in landing.list_files(spec.name)])
    stages = {"bronze (Polars)": time.perf_counter() - t}
    jobs = None
    if profile:
        from spark_profile import SESSION_CONF, JobProfile

        spark, fixed = _session(remote, SESSION_CONF)
        jobs = JobProfile(spark)
        # Each step `refresh_silver` takes, as a stage named after it and its table.
        steps = ["refresh_dimension", "reenrich_current_versions", "refresh_facts", "refill_late_fx", "refresh_period_facts"]
        jobs.wrap_stages(silver_layer, steps, lambda step, args: f"silver {args[2]} {step.split('_', 1)[1]}")
    else:
        spark, fixed = _session(remote)
    staged = jobs.stage if jobs else lambda _: contextlib.nullcontext()
    lake = SparkLake(spark, str(root))
    t = time.perf_counter()
    now = datetime.now(UTC)
    silver = refresh_silver(lake, spec, [t for t in spec.silver_tables if t != silver_layer.CALENDAR], now)
    stages["silver"] = time.perf_counter() - t
    # As the silver asset does: the delivery calendar is built in the Dagster process (Polars), untimed.
    refresh_silver(Lake(root=str(root)), spec, [silver_layer.CALENDAR], now)
    gold_rows = {}
    for table in (t for t in GOLD_TABLES if t in spec.silver_tables):
        t = time.perf_counter()
        with staged(f"gold {table}"):
            gold_rows[table] = refresh_gold(lake, spec, table).partition_rows
        stages[f"gold {table}"] = time.perf_counter() - t
    report = jobs.report() if jobs else None
    spark.stop()
    return {
        "fixed": fixed,
        "seconds": sum(stages.values()),
        "stages": stages,
        "silver_fact_rows": silver["store_day_fact"].inserted,
        "gold_rows": gold_rows,
        "profile": report,
    }


def _child(phase: str, root: Path, remote: str | None, profile: bool = False) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--out", str(out)]
    command += (["--remote", remote] if remote else []) + (["--profile"] if profile else [])
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="fact rows in the delivery (at least)")
    parser.add_argument("--cluster", action="store_true", help="run both sides on a loopback cluster through Spark Connect")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--profile", action="store_true", help="count the Spark path's jobs per stage and per call site (local Spark only)")
    parser.add_argument("--no-floor", action="store_true", help="run the Spark path only (no ratio)")
    parser.add_argument(
        "--demo", action="store_true", help="the demo's bigbox_us delivery (and corporate reference data) instead of --rows"
    )
    parser.add_argument("--phase", choices=["floor", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = run_floor(args.root, args.remote) if args.phase == "floor" else run_spark(args.root, args.remote, args.profile)
        args.out.write_text(json.dumps(result))
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pos_spark_throughput_"))
    roots = {side: work / side for side in ("floor", "spark")}
    t = time.perf_counter()
    if args.demo:
        rows = _demo_delivery(roots)
    else:
        rows = generate(roots["floor"] / "landing" / "bigbox_us", args.rows)
        shutil.copytree(roots["floor"] / "landing", roots["spark"] / "landing")
    print(
        f"delivery: {rows:,} fact rows, generated in {time.perf_counter() - t:.1f}s; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if args.profile and args.cluster:
        parser.error("--profile needs local Spark (a Spark Connect client has no status tracker)")
    with _where(args.cluster, work) as remote:
        floor = None if args.no_floor else _child("floor", roots["floor"], remote)
        spark = _child("spark", roots["spark"], remote, args.profile)
    for name, result in (("floor", floor), ("spark", spark)):
        if result is None:
            continue
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in result["stages"].items())
        print(
            f"{name:6} {result['seconds']:8.1f}s  {rows / result['seconds']:>10,.0f} rows/s  fixed cost (session + first job) {result['fixed']:.1f}s"
        )
        print(f"  stages: {stages}")
    print(f"  spark: silver facts {spark['silver_fact_rows']:,}; gold {', '.join(f'{k} {v:,}' for k, v in spark['gold_rows'].items())}")
    if spark["profile"]:
        print(f"spark jobs per stage (load {os.getloadavg()[0]:.1f}):\n{spark['profile']}")
    if floor is not None:
        ratio = spark["seconds"] / floor["seconds"]
        with_fixed = (spark["seconds"] + spark["fixed"]) / (floor["seconds"] + floor["fixed"])
        print(
            f"ratio spark/floor: {ratio:.2f} (target <= {TARGET_RATIO:g}: {'met' if ratio <= TARGET_RATIO else 'MISSED'}); with fixed costs: {with_fixed:.2f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.workdir is None:
        shutil.rmtree(work)
    return 0


def _demo_delivery(roots: dict[str, Path]) -> int:
    """The demo's bigbox_us files in both landings, and its corporate reference data in the Spark
    side's lake (the enrichment then matches as in the demo)."""
    import polars as pl

    from pos_lakehouse.demo.file_retailers import write_bigbox_us
    from pos_lakehouse.demo.reference import write_corporate_reference
    from pos_lakehouse.layers.reference import load_reference_file
    from pos_lakehouse.storage.lake import Lake

    files = write_bigbox_us(roots["floor"] / "landing" / "bigbox_us", roots["floor"] / "expected")
    shutil.copytree(roots["floor"] / "landing", roots["spark"] / "landing")
    lake = Lake(root=str(roots["spark"]))
    for path in write_corporate_reference(roots["spark"] / "corporate"):
        load_reference_file(lake, path.stem, path)
    return sum(pl.scan_csv(f, separator="|").select(pl.len()).collect().item() for f in files)


@contextlib.contextmanager
def _where(cluster: bool, work: Path) -> Iterator[str | None]:
    """Local Spark (no remote), or a loopback cluster's Connect server for the block."""
    if not cluster:
        yield None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from spark_cluster import spark_cluster

    t = time.perf_counter()
    with spark_cluster(work / "cluster", connect_cores=2, driver_memory="2g", executor_memory="1536m") as started:
        os.environ.update(started.client_env)
        print(f"cluster (master, worker, Connect server) started in {time.perf_counter() - t:.1f}s")
        yield started.connect_url


if __name__ == "__main__":
    raise SystemExit(main())
