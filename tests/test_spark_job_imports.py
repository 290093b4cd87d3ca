"""What runs on a Spark cluster needs `dagster-pipes`, not `dagster` (nor pandera): checked in a fresh interpreter."""

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


def test_the_code_location_does_not_import_the_demo(tmp_path):
    """Demo generators and simulators (and their extra dependencies) are not part of the product's runtime."""
    code = (
        "import sys\n"
        "from pos_lakehouse.definitions import build_definitions\n"
        "build_definitions()\n"
        "print(sorted(m for m in sys.modules if m.startswith('pos_lakehouse.demo') or m.split('.')[0] in ('fastapi', 'uvicorn', 'xlsxwriter')))\n"
    )
    env = {**__import__("os").environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
