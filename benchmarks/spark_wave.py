"""What one wave of a Spark retailer costs locally: its silver Pipes job, then one for all its gold tables.

    uv run python benchmarks/spark_wave.py
    uv run python benchmarks/spark_wave.py --default-only   # one wave with `SparkJobs()` as it is

Runs the same two `SparkJobs.run` calls in one Dagster step twice, on fresh copies of the same
bronze: once with a Spark of each job's own (`shared_server=False`: a JVM start-up and jar set-up
per job) and once with the step's shared local Spark Connect server (the default). Prints the
time of each job and of the wave.
"""

import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from pos_lakehouse.components.spark_jobs import SparkJobs

RETAILERS_DIR = Path(__file__).resolve().parents[1] / "src" / "pos_lakehouse" / "defs" / "retailers"


def wave(root: Path, shared: bool | None) -> dict[str, float]:
    from pos_lakehouse.layers.gold import GOLD_TABLES
    from pos_lakehouse.retailer import load_retailer_specs

    spec = next(s for s in load_retailer_specs(RETAILERS_DIR) if s.name == "marche_fr").model_copy(update={"engine": "spark"})
    gold = [t for t in GOLD_TABLES if t in spec.silver_tables]
    times: dict[str, float] = {}

    keys = [dg.AssetKey(["silver", spec.name, t]) for t in spec.silver_tables] + [dg.AssetKey(["gold", t]) for t in gold]

    @dg.multi_asset(specs=[dg.AssetSpec(k) for k in keys])
    def one_wave(context: dg.AssetExecutionContext, spark: SparkJobs):
        for command, tables in (("silver", spec.silver_tables), ("gold", gold)):
            started = time.monotonic()
            invocation = spark.run(context, spec, command, tables, str(root))
            times[command] = time.monotonic() - started
            # Not implicit: the silver job would otherwise also "materialize" the step's gold keys.
            yield from invocation.get_results(implicit_materializations=False)

    started = time.monotonic()
    options = {} if shared is None else {"shared_server": shared}  # None: the resource's default (older code has no switch)
    result = dg.materialize([one_wave], resources={"spark": SparkJobs(cores=2, driver_memory="2g", **options)})
    assert result.success
    times["wave (with server stop)"] = time.monotonic() - started
    return times


def main() -> None:
    from pos_lakehouse.demo.generator import write_marche_fr
    from pos_lakehouse.ingest.landing import LocalLandingZone
    from pos_lakehouse.layers.bronze import ingest_files
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.storage.lake import Lake

    os.environ.setdefault("DAGSTER_HOME", tempfile.mkdtemp())
    work = Path(tempfile.mkdtemp(prefix="spark_wave_"))
    spec = next(s for s in load_retailer_specs(RETAILERS_DIR) if s.name == "marche_fr")
    staging = work / "staging"
    files = write_marche_fr(staging / "landing" / "marche_fr", work / "expected", days=2, n_products=20, n_stores=3)
    ingest_files(
        Lake(root=str(staging)), LocalLandingZone(root=str(staging / "landing")), spec, [f.name for f in files], now=datetime.now(UTC)
    )
    figures = {}
    modes = [("a Spark per job", False), ("one shared Spark Connect server", True)]
    for label, shared in [("the resource's default", None)] if "--default-only" in sys.argv else modes:
        root = work / str(shared)
        shutil.copytree(staging, root)
        figures[label] = wave(root, shared)
    for label, times in figures.items():
        print(f"{label}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
