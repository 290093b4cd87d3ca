"""The local path of a Spark retailer, as a Dagster step runs it: the step starts a Spark Connect
server of its own (token-protected, stopped with the step), and the Spark job runs in a subprocess
as its client, reporting back through Pipes."""

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import spec_named

from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.storage.lake import Lake

pytestmark = pytest.mark.spark

COUNT = "from pyspark.sql import SparkSession; import os; print(SparkSession.builder.remote(os.environ['POS_LAKEHOUSE_SPARK_REMOTE']).getOrCreate().range(3).count())"
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


def _client(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", COUNT], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


def test_the_steps_server_runs_its_jobs_through_pipes_serves_its_token_only_and_stops_when_the_step_fails(data_root: Path, lake: Lake):
    """The silver asset of an `engine: spark` retailer runs the job in a subprocess on the step's
    server and reports back through Pipes; the server refuses a client without its token, and
    stops with the step although the step fails after its Spark jobs.

    One table is enough to prove the path (what the job computes is the parity and cluster tests'
    subject): every Spark action of a cold local server costs about a second here."""
    from pos_lakehouse.components.spark_jobs import LocalSparkServer, SparkJobs

    spec = spec_named("marche_fr").model_copy(update={"engine": "spark"})
    files = write_marche_fr(data_root / "landing" / "marche_fr", data_root / "expected", days=1, n_products=4, n_stores=2)
    ingest_files(lake, LocalLandingZone(root=str(data_root / "landing")), spec, [f.name for f in files], now=T0)
    tables = ["prod_dim"]
    seen: list[LocalSparkServer] = []

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
        server = spark.local_server(context, {})  # the one the job ran on: started once, reused by the step's later jobs
        seen.append(server)
        ok = _client(server.client_env)
        assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1] == "3", ok.stderr[-2000:]
        # Another local user without the token (or with a guessed one) is refused.
        wrong = _client({**server.client_env, "SPARK_CONNECT_AUTHENTICATE_TOKEN": "guessed"})
        assert wrong.returncode != 0 and "3" not in wrong.stdout.split()
        raise RuntimeError("the step fails after its Spark jobs")

    result = dg.materialize([silver], resources={"spark": SparkJobs(cores=2, driver_memory="2g")}, raise_on_error=False)
    assert not result.success
    (server,) = seen
    assert server.process.poll() is not None  # stopped with the step, although the step failed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert not server.log.exists()

    reported = {tuple(e.materialization.asset_key.path): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(reported) == {("silver", "marche_fr", t) for t in tables}
    products = pl.read_parquet(files[0])["code_article"].n_unique()
    assert reported[("silver", "marche_fr", "prod_dim")]["dagster/row_count"].value == products
    assert reported[("silver", "marche_fr", "prod_dim")]["engine"].value == "spark"
    assert {c.name for c in reported[("silver", "marche_fr", "prod_dim")]["dagster/column_schema"].schema.columns} >= {
        "prod_key",
        "prod_name",
    }
    assert lake.row_count(lake.silver("marche_fr", "prod_dim")) == products
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
