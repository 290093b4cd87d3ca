"""Throughput of one large delivery, landing -> gold on Polars, against a bare Polars baseline.

    uv run python benchmarks/throughput.py              # >= 5,000,000 fact rows
    uv run python benchmarks/throughput.py --rows 500000
    uv run python benchmarks/throughput.py --rows 1000000 --profile   # and silver's stages

The delivery is bigbox_us-shaped (one pipe-delimited file per store, every date, product and
store columns inline: the demo's large-volume retailer) and goes through the same code as the
Dagster assets: `layers.bronze.ingest_files`, `layers.silver.refresh_silver` (dims, facts,
derived periods, FX and masking) and `layers.gold.refresh_gold_tables` for every gold table.

Measured in the same run, each in its own child process:

- baseline: the same files through `pl.scan_csv` sunk into one Delta table: what a bare "read the
  files and write Delta" job costs on this machine;
- floor: the bare medallion, plain Polars streaming sinks, each an overwrite and no MERGE:
  CSV -> bronze (strings), bronze -> silver (typed, hashed key), silver -> gold (copy),
  silver -> week aggregate and silver -> month aggregate (each: sums per period end, store and
  product, and the stock on the period's last day), as the pipeline writes both period tables.
  The issue that set the target defined the floor with the week aggregate and let the month one
  be added; the ratio to the floor without it is printed too;
- pipeline: the project's code.

Each phase runs `--runs` times (default 2), the phases alternating, each from no tables of its
own; the fastest run of each phase counts (load from other tenants of a shared machine only ever
adds time) and every run's time is printed.

All three run with the allocator settings the package applies when it is imported
(`pos_lakehouse.runtime`), so the ratios compare the work done, not the runtime's tuning. The
floor is also run once with Polars' own allocator defaults (what a plain Polars job gets) and
that ratio is printed beside the other.

Peak memory is each child's maximum resident set size (`wait4` rusage; Polars allocates outside
Python's heap, which `tracemalloc` cannot see); per stage, the process's high-water mark is
reset (`/proc/self/clear_refs`) before the stage and read (`VmHWM`) after it. Targets at
5 million rows: pipeline/floor <= 3, peak <= 2.5 GB, bronze alone <= 1.5x the baseline.

`--profile` also prints silver's own stages (`pos_lakehouse.profiling`: dimensions, fact typing
and keys, dedup, quarantine, writes, FX and masks, week, month, calendar, bookkeeping), each with
its time and peak, from the fastest pipeline run: what each change to silver is judged by.

The delivery's dates end yesterday (a benchmark of loading, not of quarantining future dates).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, timedelta
from pathlib import Path

# Imported first, so every phase (baseline and floor too) runs with the allocator settings the
# package applies on import, as the pipeline does.
from pos_lakehouse.runtime import ALLOCATOR_ENV

# The targets the product is held to on a quiet machine (landing to gold within 2x the bare floor,
# bronze at read-and-write speed, 5M rows in 2 GB).
TARGET_RATIO = 2.0  # pipeline / floor
TARGET_PEAK_GB = 2.0
TARGET_BRONZE = 1.3  # bronze stage / baseline
PRODUCTS = 2000
DAYS = 100
DENSITY = 0.51


def generate(landing: Path, rows: int, seed: int = 1003) -> int:
    """bigbox_us files holding at least `rows` fact rows; returns the exact number written."""
    import numpy as np

    from pos_lakehouse.demo.file_retailers import _US_BRANDS, _US_DEPTS, _US_STATES, bigbox_store_frame
    from pos_lakehouse.demo.generator import DEMO_LAST_DAY

    landing.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    price = rng.integers(97, 4999, PRODUCTS)
    dates = [DEMO_LAST_DAY - timedelta(days=DAYS - 1 - d) for d in range(DAYS)]
    stores = max(1, math.ceil(rows / (PRODUCTS * DAYS * 0.5)))
    written = 0
    for store in range(1, stores + 1):
        frame, _ = bigbox_store_frame(rng, store, dates, price, _US_BRANDS, _US_DEPTS, _US_STATES[store % len(_US_STATES)], DENSITY)
        frame.write_csv(landing / f"bigbox_us_store_{store:04d}_{dates[0]:%Y%m%d}_{dates[-1]:%Y%m%d}.txt", separator="|")
        written += frame.height
    return written


def run_baseline(landing: Path, target: Path) -> dict:
    import polars as pl

    started = time.perf_counter()
    pl.scan_csv(sorted(str(p) for p in landing.glob("*.txt")), separator="|").sink_delta(str(target), mode="overwrite")
    return {"seconds": time.perf_counter() - started}


def _reset_peak() -> None:
    """Reset this process's resident-set high-water mark (Linux), so the next stage's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_gb() -> float:
    """This process's resident-set high-water mark since the last reset, in GB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def run_floor(landing: Path, root: Path) -> dict:
    """The bare medallion: plain Polars streaming sinks, each layer an overwrite, no MERGE."""
    import polars as pl

    files = sorted(str(p) for p in landing.glob("*.txt"))
    uris = {layer: str(root / f"floor_{layer}") for layer in ("bronze", "silver", "gold", "week", "month")}
    stages, peaks = {}, {}

    def stage(name, fn):
        _reset_peak()
        t = time.perf_counter()
        fn()
        stages[name], peaks[name] = time.perf_counter() - t, _peak_gb()

    stage("bronze", lambda: pl.scan_csv(files, separator="|", infer_schema=False).sink_delta(uris["bronze"], mode="overwrite"))

    def silver():
        day = pl.col("SALES_DATE").str.to_date("%m/%d/%Y")
        typed = pl.scan_delta(uris["bronze"]).select(
            day.alias("date"),
            pl.col("STORE_NBR").alias("site_id"),
            pl.col("ITEM_NBR").alias("prod_id"),
            pl.col("UNIT_QTY").cast(pl.Float64).alias("pos_sales_units"),
            pl.col("SALES_AMT").cast(pl.Float64).alias("pos_sales_value_lc"),
            pl.col("RETURN_QTY").cast(pl.Float64).alias("pos_returns_units"),
            pl.col("ON_HAND_QTY").cast(pl.Float64).alias("inventory_qty_on_hand"),
            pl.concat_str([pl.col("STORE_NBR"), pl.col("ITEM_NBR"), pl.col("SALES_DATE")], separator="|")
            .hash(42)
            .reinterpret(signed=True)
            .alias("row_key"),
        )
        typed.sink_delta(uris["silver"], mode="overwrite")

    stage("silver", silver)
    stage("gold", lambda: pl.scan_delta(uris["silver"]).sink_delta(uris["gold"], mode="overwrite"))

    def period(name: str, end: pl.Expr):
        days = pl.scan_delta(uris["silver"])
        days.group_by(end.alias(f"{name}_end_date"), "site_id", "prod_id").agg(
            pl.col("pos_sales_units", "pos_sales_value_lc", "pos_returns_units").sum(),
            pl.col("inventory_qty_on_hand").sort_by("date").last(),
        ).sink_delta(uris[name], mode="overwrite")

    stage("week", lambda: period("week", pl.col("date").dt.offset_by("1w").dt.truncate("1w") - pl.duration(days=1)))
    stage("month", lambda: period("month", pl.col("date").dt.month_end()))
    return {"seconds": sum(stages.values()), "stages": stages, "stage_peak_gb": peaks}


def run_pipeline(root: Path, profile: bool = False) -> dict:
    from pos_lakehouse.ingest.landing import LocalLandingZone
    from pos_lakehouse.layers.bronze import ingest_files
    from pos_lakehouse.layers.gold import GOLD_TABLES, refresh_gold_tables
    from pos_lakehouse.layers.silver import refresh_silver
    from pos_lakehouse.profiling import recording
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.settings import RETAILERS_DIR
    from pos_lakehouse.storage.lake import Lake

    spec = next(s for s in load_retailer_specs(RETAILERS_DIR) if s.name == "bigbox_us")
    lake = Lake(root=str(root))
    silver_profile: dict = {}
    landing = LocalLandingZone(root=str(root / "landing"))
    stages, peaks = {}, {}
    started = time.perf_counter()
    _reset_peak()
    names = [f.name for f in landing.list_files(spec.name)]
    outcomes = ingest_files(lake, landing, spec, names)
    rejected = [o.describe() for o in outcomes if o.status != "ingested"]
    if rejected:
        raise SystemExit(f"benchmark delivery rejected: {rejected}")
    stages["bronze"], peaks["bronze"] = time.perf_counter() - started, _peak_gb()
    _reset_peak()
    t = time.perf_counter()
    cpu = time.process_time()
    if profile:
        with recording() as recorded:
            silver = refresh_silver(lake, spec, spec.silver_tables)
        silver_profile = recorded.as_dict()
    else:
        silver = refresh_silver(lake, spec, spec.silver_tables)
    # The profile resets the high-water mark per stage: the stage's peak is the highest of them.
    stages["silver"], peaks["silver"] = time.perf_counter() - t, max([_peak_gb(), *(f["peak_gb"] for f in silver_profile.values())])
    silver_cpu = time.process_time() - cpu
    _reset_peak()
    t = time.perf_counter()
    # As a delivery run publishes them (`components.gold_publication`).
    refreshed = refresh_gold_tables(lake, spec, [t for t in GOLD_TABLES if t in spec.silver_tables])
    gold_rows = {table: r.partition_rows for table, r in refreshed.items()}
    stages["gold"], peaks["gold"] = time.perf_counter() - t, _peak_gb()
    return {
        "seconds": time.perf_counter() - started,
        "stages": stages,
        "stage_peak_gb": peaks,
        "bronze_rows": sum(o.rows for o in outcomes),
        "silver_fact_rows": silver["store_day_fact"].inserted,
        "quarantined": sum(r.quarantined for r in silver.values()),
        "gold_rows": gold_rows,
        "silver_profile": silver_profile,
        "silver_cpu_seconds": silver_cpu,
    }


def print_profile(pipeline: dict) -> None:
    """Silver's stages, nested as they ran; a stage's time includes its inner stages'."""
    stages = pipeline["silver_profile"]
    total = pipeline["stages"]["silver"]
    print(
        f"silver profile ({total:.2f}s in all, {pipeline['silver_cpu_seconds']:.1f} CPU-s): wall time summed over runs, the process's "
        "CPU time meanwhile (all threads), peak RSS while it ran; inner stages indented:"
    )
    for name, f in stages.items():
        runs = f" x{f['runs']}" if f["runs"] > 1 else ""
        print(
            f"  {'  ' * f['depth']}{name + runs:<{52 - 2 * f['depth']}} {f['seconds']:7.2f}s {f['seconds'] / total:6.1%} "
            f"{f['cpu_seconds']:7.2f} CPU-s  {f['peak_gb']:5.2f} GB"
        )
    print(f"  (uptime: {_load()})")


def _load() -> str:
    """The machine's load averages (1, 5, 15 min), printed with the figures: a shared machine's load slows every phase."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


# ---- the same delivery on the Spark engine (`--engine spark`) ----------------------------
def run_spark(root: Path) -> dict:
    """Bronze as the Polars pipeline writes it, then silver and gold on local Spark (the job's code).

    Spark's fixed start-up cost (JVM, Delta jars, first query) is timed apart from the work.
    """
    os.environ["TZ"] = "UTC"
    time.tzset()
    from datetime import datetime

    from pos_lakehouse.ingest.landing import LocalLandingZone
    from pos_lakehouse.layers.bronze import ingest_files
    from pos_lakehouse.layers.gold import GOLD_TABLES
    from pos_lakehouse.layers.gold import refresh_gold as spark_refresh_gold
    from pos_lakehouse.layers.silver import refresh_silver as spark_refresh_silver
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.settings import RETAILERS_DIR
    from pos_lakehouse.spark.lake import SparkLake
    from pos_lakehouse.spark.session import local_spark
    from pos_lakehouse.storage.lake import Lake

    spec = next(s for s in load_retailer_specs(RETAILERS_DIR) if s.name == "bigbox_us")
    landing = LocalLandingZone(root=str(root / "landing"))
    ingest_files(Lake(root=str(root)), landing, spec, [f.name for f in landing.list_files(spec.name)])
    started = time.perf_counter()
    spark = local_spark("pos_lakehouse_benchmark")
    # Big batches: generated code pays off (the job turns it off for a delivery's small batches).
    spark.conf.set("spark.sql.codegen.wholeStage", "true")
    spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK")
    spark.range(1).count()
    startup = time.perf_counter() - started
    lake = SparkLake(spark, str(root))
    t = time.perf_counter()
    silver = spark_refresh_silver(lake, spec, spec.silver_tables, datetime.now(UTC))
    stages = {"silver": time.perf_counter() - t}
    t = time.perf_counter()
    gold_rows = {table: spark_refresh_gold(lake, spec, table).partition_rows for table in GOLD_TABLES if table in spec.silver_tables}
    stages["gold"] = time.perf_counter() - t
    spark.stop()
    return {
        "startup": startup,
        "seconds": sum(stages.values()),
        "stages": stages,
        "silver_fact_rows": silver["store_day_fact"].inserted,
        "gold_rows": gold_rows,
    }


def report_spark(work_root: Path, pipeline: dict) -> None:
    """Run the Spark phase on a fresh copy of the landing folder and print its ratio to Polars."""
    spark_root = work_root.parent / "spark_data"
    if spark_root.exists():
        shutil.rmtree(spark_root)
    shutil.copytree(work_root / "landing", spark_root / "landing")
    result, gb = _child("spark", "--root", str(spark_root))
    polars_work = pipeline["stages"]["silver"] + pipeline["stages"]["gold"]
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result["stages"].items())
    print(
        f"spark     (silver + gold):     {result['seconds']:8.1f}s  + start-up {result['startup']:.1f}s  peak RSS {gb:5.2f} GB (Python side; the JVM is its own process)"
    )
    print(
        f"  stages: {stages}; silver facts {result['silver_fact_rows']:,}; gold {', '.join(f'{k} {v:,}' for k, v in result['gold_rows'].items())}"
    )
    print(
        f"Spark/Polars time ratio (silver + gold): {result['seconds'] / polars_work:.2f} "
        f"(with start-up: {(result['seconds'] + result['startup']) / polars_work:.2f}); Spark fixed start-up cost: {result['startup']:.1f}s"
    )


FLOOR_TABLES = ("floor_bronze", "floor_silver", "floor_gold", "floor_week", "floor_month")


def _remove(root: Path, *names: str) -> None:
    for name in names:
        shutil.rmtree(root / name, ignore_errors=True)


def _child(phase: str, *args: str, env: dict[str, str] | None = None) -> tuple[dict, float]:
    """Run one phase in a child process; its result and its peak resident memory in GB."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    proc = subprocess.Popen([sys.executable, __file__, "--phase", phase, "--out", str(out), *args], env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} failed with exit code {proc.returncode}")
    result = json.loads(out.read_text())
    out.unlink()
    return result, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="fact rows in the delivery (at least)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and tables")
    parser.add_argument("--runs", type=int, default=2, help="runs of each phase, alternating; the fastest of each counts")
    parser.add_argument("--profile", action="store_true", help="also print silver's stages (time and peak each)")
    parser.add_argument("--engine", choices=["polars", "spark"], default="polars", help="spark: also run silver+gold on local Spark")
    parser.add_argument("--phase", choices=["baseline", "floor", "pipeline", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase == "baseline":
        args.out.write_text(json.dumps(run_baseline(args.root / "landing" / "bigbox_us", args.root / "baseline_delta")))
        return 0
    if args.phase == "floor":
        args.out.write_text(json.dumps(run_floor(args.root / "landing" / "bigbox_us", args.root)))
        return 0
    if args.phase == "pipeline":
        args.out.write_text(json.dumps(run_pipeline(args.root, args.profile)))
        return 0
    if args.phase == "spark":
        args.out.write_text(json.dumps(run_spark(args.root)))
        return 0

    load_at_start = _load()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pos_throughput_"))
    root = work / "data"
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    rows = generate(root / "landing" / "bigbox_us", args.rows)
    size = sum(p.stat().st_size for p in (root / "landing" / "bigbox_us").iterdir())
    print(
        f"delivery: {rows:,} fact rows in {len(list((root / 'landing' / 'bigbox_us').iterdir()))} pipe-delimited files "
        f"({size / 1024**2:,.0f} MiB), generated in {time.perf_counter() - t:.1f}s"
    )

    runs: dict[str, list[tuple[dict, float]]] = {"baseline": [], "floor": [], "plain_floor": [], "pipeline": []}
    for _ in range(args.runs):
        # Phases alternate, so a burst of load from other tenants falls on every phase alike; each
        # starts from no tables of its own.
        _remove(root, "baseline_delta")
        runs["baseline"].append(_child("baseline", "--root", str(root)))
        _remove(root, *FLOOR_TABLES)
        runs["floor"].append(_child("floor", "--root", str(root)))
        _remove(root, *FLOOR_TABLES)
        # An empty setting: the package leaves it alone and Polars applies its defaults.
        runs["plain_floor"].append(_child("floor", "--root", str(root), env={ALLOCATOR_ENV: ""}))
        _remove(root, "bronze", "silver", "gold", "quarantine")
        runs["pipeline"].append(_child("pipeline", "--root", str(root), *(["--profile"] if args.profile else [])))
    # Other tenants' load only ever adds time: each phase's fastest run counts, every run is printed.
    (baseline, baseline_gb), (floor, floor_gb), (plain_floor, _), (pipeline, pipeline_gb) = (
        min(runs[phase], key=lambda run: run[0]["seconds"]) for phase in ("baseline", "floor", "plain_floor", "pipeline")
    )
    # Resetting the high-water mark per stage also resets what the process reports at exit: the
    # peak is the highest of every run and stage.
    floor_gb = max(gb for result, process_gb in runs["floor"] for gb in (process_gb, *result["stage_peak_gb"].values()))
    pipeline_gb = max(gb for result, process_gb in runs["pipeline"] for gb in (process_gb, *result["stage_peak_gb"].values()))
    ratio = pipeline["seconds"] / floor["seconds"]
    bronze_ratio = pipeline["stages"]["bronze"] / baseline["seconds"]

    def stage_line(result: dict) -> str:
        return ", ".join(f"{k} {v:.1f}s ({result['stage_peak_gb'][k]:.2f} GB)" for k, v in result["stages"].items())

    print(
        f"baseline  (scan_csv -> Delta): {baseline['seconds']:8.1f}s  {rows / baseline['seconds']:>12,.0f} rows/s  peak RSS {baseline_gb:5.2f} GB"
    )
    print(f"floor     (plain medallion):   {floor['seconds']:8.1f}s  {rows / floor['seconds']:>12,.0f} rows/s  peak RSS {floor_gb:5.2f} GB")
    print(f"  stages (time, peak RSS): {stage_line(floor)}")
    print(
        f"pipeline  (landing -> gold):   {pipeline['seconds']:8.1f}s  {rows / pipeline['seconds']:>12,.0f} rows/s  peak RSS {pipeline_gb:5.2f} GB"
    )
    print(f"  stages (time, peak RSS): {stage_line(pipeline)}")
    if args.runs > 1:
        print(
            "  every run (s): "
            + "; ".join(phase + " " + ", ".join(f"{r['seconds']:.1f}" for r, _ in results) for phase, results in runs.items())
        )
    print(
        f"  bronze rows {pipeline['bronze_rows']:,}; silver facts {pipeline['silver_fact_rows']:,}; quarantined {pipeline['quarantined']:,}; "
        f"gold {', '.join(f'{k} {v:,}' for k, v in pipeline['gold_rows'].items())}"
    )
    ok_ratio, ok_mem, ok_bronze = ratio <= TARGET_RATIO, pipeline_gb <= TARGET_PEAK_GB, bronze_ratio <= TARGET_BRONZE
    print(f"ratio pipeline/floor: {ratio:.2f} (target <= {TARGET_RATIO:g}: {'met' if ok_ratio else 'MISSED'})")
    four_stages = floor["seconds"] - floor["stages"]["month"]
    print(
        f"  floor without the month aggregate (the issue's four stages): {four_stages:.1f}s; pipeline/that floor: {pipeline['seconds'] / four_stages:.2f}"
    )
    print(
        f"  floor with Polars' default allocator settings: {plain_floor['seconds']:.1f}s; "
        f"pipeline/that floor: {pipeline['seconds'] / plain_floor['seconds']:.2f}"
    )
    print(
        f"ratio pipeline/baseline: {pipeline['seconds'] / baseline['seconds']:.2f}; floor/baseline: {floor['seconds'] / baseline['seconds']:.2f}"
    )
    print(f"bronze alone vs baseline: {bronze_ratio:.2f} (target <= {TARGET_BRONZE:g}: {'met' if ok_bronze else 'MISSED'})")
    print(f"peak memory: {pipeline_gb:.2f} GB (target <= {TARGET_PEAK_GB:g} GB at 5M rows: {'met' if ok_mem else 'MISSED'})")
    print(f"uptime at the end: {_load()} (at the start: {load_at_start})")
    if args.profile:
        print_profile(pipeline)
    if args.engine == "spark":
        report_spark(root, pipeline)
    if not args.keep and args.workdir is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
