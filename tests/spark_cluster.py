"""A real Spark cluster on loopback from the installed pyspark, offline: a standalone master, one
worker, and a Spark Connect server running on that cluster with Delta's extension, catalog and the
jars the project cached (`spark.session.jar_conf`), with the server's own session defaults (no time
zone set: Spark Connect says `Etc/UTC`, as Databricks serverless does). Shared by the cluster tests
and the benchmarks (`with spark_cluster(folder) as cluster: ...`).

pyspark's wheel has no `sbin/` scripts: the daemons start through `bin/spark-class` and
`bin/spark-submit`, each in its own process group, stopped (group and all) when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ports import free_port

CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"


@dataclass
class SparkCluster:
    """What a started cluster offers: `master_url` (spark://), `connect_url` (sc://) and the token
    its Connect clients need in `SPARK_CONNECT_AUTHENTICATE_TOKEN` (`client_env`)."""

    master_url: str
    master_ui: str
    connect_url: str
    token: str
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def client_env(self) -> dict[str, str]:
        return {"SPARK_CONNECT_AUTHENTICATE_TOKEN": self.token}

    def alive_workers(self) -> int:
        with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=5) as page:
            return int(json.load(page).get("aliveworkers", 0))

    @contextlib.contextmanager
    def connect(self):
        """A Spark Connect session on the cluster, stopped on exit.

        pyspark switches the whole process to Connect mode when it creates a remote session (it sets
        `SPARK_CONNECT_MODE_ENABLED` and keeps `spark.remote` on its shared builder); both are undone
        on exit, so a later local session in the same test process starts a JVM as usual.
        """
        from pyspark.sql import SparkSession

        saved = {k: os.environ.get(k) for k in ("SPARK_CONNECT_AUTHENTICATE_TOKEN", "SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE")}
        os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = self.token
        spark = SparkSession.builder.remote(self.connect_url).create()
        try:
            yield spark
        finally:
            spark.stop()
            SparkSession.builder._options.pop("spark.remote", None)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _wait(what: str, ready, processes: list[subprocess.Popen], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            break
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"the Spark cluster's {what} did not start:\n{tail}")


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def stop(processes: list[subprocess.Popen]) -> None:
    """Each daemon's process group: TERM, then KILL what is still there after 20 s."""
    for p in reversed(processes):
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    for p in reversed(processes):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@contextlib.contextmanager
def spark_cluster(
    workdir: Path,
    *,
    worker_cores: int = 2,
    worker_memory: str = "2g",
    # The Connect server's driver keeps every session's plans and Delta logs for the whole test
    # session (one cluster serves every Spark test): 1g ran out after the end-to-end run.
    driver_memory: str = "2g",
    executor_memory: str = "1g",
    connect_cores: int = 1,
    timeout: float = 300,
) -> Iterator[SparkCluster]:
    """A master, a worker (`worker_cores`, `worker_memory`) and a Connect server whose application
    takes `connect_cores` of the worker, leaving the rest to a classic application (`master_url`)."""
    from pos_lakehouse.spark.session import find_java_home, jar_conf

    workdir.mkdir(parents=True, exist_ok=True)
    home = _spark_home()
    env = {
        **os.environ,
        "JAVA_HOME": str(find_java_home()),
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(workdir / "work"),
        "SPARK_LOG_DIR": str(workdir),
    }
    for own in ("PYSPARK_SUBMIT_ARGS", "TZ"):  # the daemons keep the machine's defaults (time zone included)
        env.pop(own, None)
    master_port, master_ui, worker_ui, connect_port = free_port(), free_port(), free_port(), free_port()
    cluster = SparkCluster(
        master_url=f"spark://127.0.0.1:{master_port}",
        master_ui=f"http://127.0.0.1:{master_ui}",
        # `localhost`: where pyspark sends a token without TLS (local channel credentials).
        connect_url=f"sc://localhost:{connect_port}",
        token=secrets.token_urlsafe(24),
        logs=workdir,
    )
    procs = cluster.processes
    try:
        log = workdir / "master.log"
        master = "org.apache.spark.deploy.master.Master"
        command = [
            str(home / "bin" / "spark-class"),
            master,
            "--host",
            "127.0.0.1",
            "--port",
            str(master_port),
            "--webui-port",
            str(master_ui),
        ]
        procs.append(_start(command, log, env))
        _wait("master", lambda: _listening(master_port) and _listening(master_ui), procs, log, timeout)

        log = workdir / "worker.log"
        worker = "org.apache.spark.deploy.worker.Worker"
        command = [str(home / "bin" / "spark-class"), worker, "--host", "127.0.0.1", "--webui-port", str(worker_ui)]
        command += ["--cores", str(worker_cores), "--memory", worker_memory, cluster.master_url]
        procs.append(_start(command, log, env))
        _wait("worker", lambda: cluster.alive_workers() >= 1, procs, log, timeout)

        log = workdir / "connect.log"
        jars, _ = jar_conf()
        conf = {
            **jars,
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(connect_port),
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.memory": driver_memory,
            "spark.executor.memory": executor_memory,
            "spark.cores.max": str(connect_cores),
            "spark.ui.enabled": "false",
        }
        command = [str(home / "bin" / "spark-submit"), "--class", CONNECT_SERVER, "--master", cluster.master_url]
        command += [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]
        procs.append(_start(command, log, {**env, **cluster.client_env}))
        _wait("Spark Connect server", lambda: _listening(connect_port), procs, log, timeout)
        yield cluster
    finally:
        stop(procs)
