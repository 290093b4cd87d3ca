"""What runs on a Spark cluster needs `dagster-pipes`, not `dagster` (nor pandera): checked in a fresh interpreter."""

import subprocess
import sys


def test_spark_job_and_the_layers_it_runs_import_neither_dagster_nor_pandera():
    code = (
        "import sys\n"
        "import pos_lakehouse.spark.job, pos_lakehouse.spark.lake, pos_lakehouse.spark.functions\n"
        "import pos_lakehouse.layers.silver, pos_lakehouse.layers.gold\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'pandera')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
