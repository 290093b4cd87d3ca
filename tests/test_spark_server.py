"""The local Spark Connect server that a step's Spark jobs share: token-protected, stopped with the step."""

import os
import socket
import subprocess
import sys

import dagster as dg
import pytest

pytestmark = pytest.mark.spark

COUNT = "from pyspark.sql import SparkSession; import os; print(SparkSession.builder.remote(os.environ['POS_LAKEHOUSE_SPARK_REMOTE']).getOrCreate().range(3).count())"


def _client(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", COUNT], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


def test_the_steps_server_serves_its_token_only_and_stops_when_the_step_fails():
    from pos_lakehouse.components.spark_jobs import LocalSparkServer, SparkJobs

    seen: list[LocalSparkServer] = []

    @dg.asset
    def failing_wave(context: dg.AssetExecutionContext, spark: SparkJobs) -> None:
        server = spark.local_server(context, {"TZ": "UTC", "POS_LAKEHOUSE_SPARK_CORES": "2", "POS_LAKEHOUSE_SPARK_MEMORY": "1g"})
        seen.append(server)
        assert spark.local_server(context, {}) is server  # started once, reused by the step's later jobs
        ok = _client(server.client_env)
        assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1] == "3", ok.stderr[-2000:]
        # Another local user without the token (or with a guessed one) is refused.
        wrong = _client({**server.client_env, "SPARK_CONNECT_AUTHENTICATE_TOKEN": "guessed"})
        assert wrong.returncode != 0 and "3" not in wrong.stdout.split()
        raise RuntimeError("the wave fails after its Spark jobs")

    result = dg.materialize([failing_wave], resources={"spark": SparkJobs(cores=2, driver_memory="1g")}, raise_on_error=False)
    assert not result.success
    (server,) = seen
    assert server.process.poll() is not None  # stopped with the step, although the step failed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert not server.log.exists()
