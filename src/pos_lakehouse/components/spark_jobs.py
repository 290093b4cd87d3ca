"""The `spark` resource: runs `spark/job.py` through Dagster Pipes, locally or on Databricks.

`environment` follows the project's switch (`POS_LAKEHOUSE_ENV`):
- `local`: `PipesSubprocessClient` runs `python -m pos_lakehouse.spark.job` against the Spark that
  `master` names (`settings.spark_master`: the retailer's YAML, else this resource's, with
  `POS_LAKEHOUSE_SPARK_REMOTE` overriding both):
  - `local` or a standalone master `spark://...`: the jobs of one step (a retailer's silver, then
    all its gold tables) connect to one Spark Connect server that the resource starts on first
    use and stops with the step (its driver runs here, with `local[N]` or on that cluster), so the
    JVM and Delta's jars are paid once;
  - a Spark Connect server `sc://...`: the jobs are its clients; nothing is started here;
- `databricks`: `PipesDatabricksClient` (classic compute: a new job cluster or an existing one)
  or `PipesDatabricksServerlessClient` submits the same file as a `spark_python_task`.
Either way the asset receives the same Pipes results (materializations, checks, custom messages).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.settings import SPARK_REMOTE_ENV, spark_master

JOB_MODULE = "pos_lakehouse.spark.job"
SERVER_MODULE = "pos_lakehouse.spark.session"


def missing_spark_packages(environment: str) -> list[str]:
    """The `spark` extra's packages a Spark run needs here and cannot import (a Polars-only install)."""
    import importlib.util

    needed = ["pyspark", "delta"] if environment != "databricks" else ["dagster_databricks"]
    return [name for name in needed if importlib.util.find_spec(name) is None]


class LocalSparkServer:
    """A local Spark Connect server in its own process (`python -m pos_lakehouse.spark.session PORT`).

    It listens on loopback only and requires a random token (passed by environment, never logged).
    It runs until `stop()` closes its stdin, and ends by itself when this process dies (the pipe
    closes too): nothing outlives the step that started it.
    """

    def __init__(self, env: Mapping[str, str], master: str = "local"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.token = secrets.token_urlsafe(24)
        fd, log = tempfile.mkstemp(prefix="pos_lakehouse_spark_connect_", suffix=".log")
        self.log = Path(log)
        env = {**os.environ, **env, "SPARK_CONNECT_AUTHENTICATE_TOKEN": self.token}
        command = [sys.executable, "-m", SERVER_MODULE, str(self.port), master]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=fd, stderr=subprocess.STDOUT, env=env)
        os.close(fd)

    @property
    def client_env(self) -> dict[str, str]:
        return {"POS_LAKEHOUSE_SPARK_REMOTE": f"sc://localhost:{self.port}", "SPARK_CONNECT_AUTHENTICATE_TOKEN": self.token}

    def wait_ready(self, timeout: float = 1800) -> None:
        """Until the server accepts connections (the first run also resolves Delta's jars)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise dg.Failure(f"the local Spark Connect server did not start (exit code {self.process.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)


def WorkspaceClient(**kwargs):  # noqa: N802 - a seam: tests replace it (no workspace is reachable from CI)
    """The Databricks SDK client; credentials come from the environment (DATABRICKS_HOST/TOKEN or a profile)."""
    from databricks.sdk import WorkspaceClient as _WorkspaceClient

    return _WorkspaceClient(**kwargs)


class SparkJobs(dg.ConfigurableResource):
    """Runs the Spark job of big retailers through Dagster Pipes: local subprocess or Databricks run."""

    environment: Literal["local", "databricks"] = Field(default="local", description="Where Spark runs (the project's switch).")
    # ---- local -------------------------------------------------------------------------------
    master: str = Field(
        default="local",
        description="Outside Databricks, where the job runs: `local`, a standalone master `spark://host:port` or a Spark "
        "Connect server `sc://host:port` (its token from SPARK_CONNECT_AUTHENTICATE_TOKEN). A retailer's `spark_master` "
        "overrides it; `POS_LAKEHOUSE_SPARK_REMOTE` overrides both.",
    )
    shuffle_partitions: int = Field(
        default=0,
        description="Shuffle partitions the job sets on its session; 0: one per core here, at least 2 (Spark's 200 is pure overhead on a delivery).",
    )
    bookmarks_in: Literal["auto", "commit", "properties"] = Field(
        default="auto",
        description="Where the job records a MERGE's bookmarks: in its commit (a session setting), in a commit of their own "
        "(table properties, for sessions that refuse that setting, e.g. Databricks serverless), or `auto`: the first the session allows.",
    )
    driver_memory: str = Field(default="4g", description="Local Spark driver memory (executors live in the driver).")
    cores: int = Field(default=0, description="Local Spark cores; 0 uses every core of the machine.")
    shared_server: bool = Field(
        default=True, description="Local: the jobs of one step share one Spark Connect server instead of a Spark each."
    )

    def local_server(self, context, env: Mapping[str, str], master: str = "local") -> LocalSparkServer:
        """The step's Spark Connect server for `master` (`local` or `spark://...`), started on first use."""
        if master not in self._servers:
            started = time.monotonic()
            server = LocalSparkServer(env, master)
            server.wait_ready()
            self._servers[master] = server
            where = "local" if master == "local" else f"driving {master}"
            context.log.info(
                f"Spark Connect server ({where}) ready in {time.monotonic() - started:.1f}s (shared by this step's Spark jobs)"
            )
        return self._servers[master]

    # ---- Databricks --------------------------------------------------------------------------
    compute: Literal["classic", "serverless"] = Field(default="classic", description="Databricks compute for the job run.")
    job_file: str = Field(
        default="dbfs:/pos_lakehouse/spark_job.py",
        description="Where `src/pos_lakehouse/spark/job.py` was uploaded (DBFS, workspace file or UC volume).",
    )
    wheel: str | None = Field(
        default=None, description="The project wheel (pos_lakehouse) installed on the cluster, e.g. a UC volume path."
    )
    existing_cluster_id: str | None = Field(default=None, description="Classic: run on this cluster instead of a new job cluster.")
    new_cluster: dict[str, Any] = Field(
        default_factory=lambda: {
            "spark_version": "17.3.x-scala2.13",
            "node_type_id": "Standard_D4ds_v5",
            "num_workers": 2,
            "spark_conf": {"spark.sql.session.timeZone": "UTC"},
        },
        description="Classic: the job cluster spec (Databricks `new_cluster`).",
    )
    volume_path: str | None = Field(default=None, description="Serverless: UC volume Pipes uses for context and messages.")
    environment_version: str = Field(default="3", description="Serverless: environment (client) version.")
    timeout_seconds: int = Field(default=3600, description="Databricks run timeout.")
    _servers: dict[str, LocalSparkServer] = PrivateAttr(default_factory=dict)

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[SparkJobs]:
        """The servers this step started stop with it, whether it succeeded or not."""
        try:
            yield self
        finally:
            while self._servers:
                self._servers.popitem()[1].stop()

    # ---- what the assets call ----------------------------------------------------------------
    def run(
        self, context: dg.AssetExecutionContext, spec: RetailerSpec, command: str, tables: Sequence[str], data_root: str
    ) -> dg.PipesClientCompletedInvocation:
        """Run the job for one retailer (`silver` or `gold` of some tables) and return the Pipes invocation."""
        missing = missing_spark_packages(self.environment)
        if missing:
            raise dg.Failure(
                description=f"{spec.name} runs on Spark (engine: {spec.engine}), and {', '.join(missing)} is not installed here: "
                "install the project with its `spark` extra (`pip install 'pos_lakehouse[spark]'`, `uv sync --extra spark`)"
            )
        extras = {
            "command": command,
            "retailer": spec.model_dump(mode="json"),
            "tables": list(tables),
            "data_root": data_root,
            "now": datetime.now(UTC).isoformat(),
            "bookmarks_in": self.bookmarks_in,
            "shuffle_partitions": self.shuffle_partitions or max(2, self.cores or os.cpu_count() or 2),
        }
        if self.environment == "databricks":
            return self._run_databricks(context, spec, command, extras)
        return self._run_local(context, extras, spark_master(spec.spark_master or self.master))

    def _run_local(self, context, extras: Mapping[str, Any], master: str) -> dg.PipesClientCompletedInvocation:
        env = {
            "TZ": "UTC",
            "POS_LAKEHOUSE_SPARK_MEMORY": self.driver_memory,
            "POS_LAKEHOUSE_PIPES_TRANSPORT": "local",
            "PYTHONUNBUFFERED": "1",
            # The job connects to what this says, or starts a Spark of its own on `master` when empty.
            SPARK_REMOTE_ENV: "",
        }
        if self.cores:
            env["POS_LAKEHOUSE_SPARK_CORES"] = str(self.cores)
        if master.startswith("sc://"):  # someone else's server: never start one here
            env[SPARK_REMOTE_ENV] = master
        elif self.shared_server:
            env.update(self.local_server(context, env, master).client_env)
        else:
            extras = {**extras, "master": master}
        return dg.PipesSubprocessClient(env=env).run(context=context, command=[sys.executable, "-m", JOB_MODULE], extras=dict(extras))

    # ---- Databricks ------------------------------------------------------------------------------
    def submit_task(self, spec: RetailerSpec, command: str) -> Any:
        """The `SubmitTask` for one run: the same job file, with the project wheel as a library."""
        from databricks.sdk.service import compute, jobs

        transport = "volumes" if self.compute == "serverless" else "dbfs"
        task: dict[str, Any] = {
            "task_key": f"pos_lakehouse_{spec.name}_{command}",
            "spark_python_task": {"python_file": self.job_file, "parameters": ["--transport", transport]},
            "timeout_seconds": self.timeout_seconds,
        }
        if self.compute == "serverless":
            task["environment_key"] = "pos_lakehouse"
        else:
            if self.wheel:
                task["libraries"] = [compute.Library(whl=self.wheel).as_dict()]
            if self.existing_cluster_id:
                task["existing_cluster_id"] = self.existing_cluster_id
            else:
                cluster = dict(self.new_cluster)
                cluster["spark_env_vars"] = {**cluster.get("spark_env_vars", {}), "POS_LAKEHOUSE_ENV": "databricks", "TZ": "UTC"}
                task["new_cluster"] = cluster
        return jobs.SubmitTask.from_dict(task)

    def submit_args(self, spec: RetailerSpec, command: str) -> dict[str, Any]:
        args: dict[str, Any] = {"run_name": f"pos_lakehouse {spec.name} {command}", "timeout_seconds": self.timeout_seconds}
        if self.compute == "serverless":
            from databricks.sdk.service import compute, jobs

            deps = [self.wheel] if self.wheel else []
            args["environments"] = [
                jobs.JobEnvironment(
                    environment_key="pos_lakehouse",
                    spec=compute.Environment(environment_version=self.environment_version, dependencies=deps),
                )
            ]
        return args

    def pipes_client(self, workspace=None):
        from dagster_databricks.pipes import PipesDatabricksClient, PipesDatabricksServerlessClient

        workspace = workspace or WorkspaceClient()
        if self.compute == "serverless":
            if not self.volume_path:
                raise dg.DagsterInvalidConfigError("serverless Spark needs `volume_path` (a UC volume for Pipes messages)", [], None)
            return PipesDatabricksServerlessClient(client=workspace, volume_path=self.volume_path)
        return PipesDatabricksClient(client=workspace)

    def _run_databricks(self, context, spec: RetailerSpec, command: str, extras) -> dg.PipesClientCompletedInvocation:
        return self.pipes_client().run(
            context=context, extras=dict(extras), task=self.submit_task(spec, command), submit_args=self.submit_args(spec, command)
        )


def spark_jobs_from_environment(environment: str) -> SparkJobs:
    """The `spark` resource for the project's environment; Databricks details from environment variables.
    (`POS_LAKEHOUSE_SPARK_REMOTE` is read per run, by `settings.spark_master`.)"""
    if environment != "databricks":
        return SparkJobs(
            environment="local",
            driver_memory=os.environ.get("POS_LAKEHOUSE_SPARK_MEMORY", "4g"),
            cores=int(os.environ.get("POS_LAKEHOUSE_SPARK_CORES", "0") or 0),
        )
    kwargs: dict[str, Any] = {"environment": "databricks"}
    for field, var in (
        ("compute", "POS_LAKEHOUSE_DATABRICKS_COMPUTE"),
        ("job_file", "POS_LAKEHOUSE_DATABRICKS_JOB_FILE"),
        ("wheel", "POS_LAKEHOUSE_DATABRICKS_WHEEL"),
        ("existing_cluster_id", "POS_LAKEHOUSE_DATABRICKS_CLUSTER_ID"),
        ("volume_path", "POS_LAKEHOUSE_DATABRICKS_VOLUME"),
    ):
        if os.environ.get(var):
            kwargs[field] = os.environ[var]
    return SparkJobs(**kwargs)
