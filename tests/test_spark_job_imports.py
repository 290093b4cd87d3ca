"""What runs on a Spark cluster needs `dagster-pipes`, not `dagster` (nor pandera); the code location needs neither
the demo's packages nor the `spark` extra's: checked in a fresh interpreter."""

import subprocess
import sys


def test_spark_job_and_the_layers_it_runs_import_neither_dagster_nor_pandera():
    code = (
        "import sys\n"
        "import pos_lakehouse.spark.job, pos_lakehouse.spark.lake, pos_lakehouse.engines.spark\n"
        "import pos_lakehouse.layers.silver, pos_lakehouse.layers.gold\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'pandera')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_code_location_imports_neither_the_demo_nor_spark(tmp_path):
    """Demo generators and simulators (and their extra dependencies) are not part of the product's runtime;
    nor is Spark, for a Polars-only install without the `spark` extra (Spark retailers included in the defs)."""
    extras = ("fastapi", "uvicorn", "xlsxwriter", "pyspark", "delta", "dagster_databricks", "databricks", "pandas")
    code = (
        "import sys\n"
        "from pos_lakehouse.definitions import build_definitions\n"
        "build_definitions().resolve_all_job_defs()\n"
        f"print(sorted(m for m in sys.modules if m.startswith('pos_lakehouse.demo') or m.split('.')[0] in {extras!r}))\n"
    )
    env = {**__import__("os").environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_a_spark_run_without_the_spark_extra_fails_naming_it(monkeypatch, tmp_path):
    """On a Polars-only install a Spark retailer's run fails at once, saying what to install."""
    import importlib.util

    import dagster as dg
    import pytest
    from conftest import spec_named

    from pos_lakehouse.components.spark_jobs import SparkJobs

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "pyspark" else real(name, *a))
    spec = spec_named("bigbox_us")
    with pytest.raises(dg.Failure) as failed:
        SparkJobs().run(dg.build_asset_context(), spec, "silver", ["store_day_fact"], str(tmp_path))
    assert "pyspark is not installed" in str(failed.value.description) and "`spark` extra" in str(failed.value.description)
