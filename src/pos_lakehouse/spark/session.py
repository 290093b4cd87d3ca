"""Local Spark with Delta Lake: a JDK, Delta's jars (Ivy once, then the local cache), a session sized
for the machine, and the Spark Connect server that the local Pipes jobs of one step share.

On Databricks the cluster provides the session, Java and Delta; nothing here runs there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

SUPPORTED_JAVA = (17, 21)
CACHE_DIR = Path(os.environ.get("POS_LAKEHOUSE_CACHE", Path.home() / ".cache" / "pos_lakehouse")).expanduser()
CONNECT_PLUGIN = "org.apache.spark.sql.connect.SparkConnectPlugin"


class SparkSetupError(RuntimeError):
    """Local Spark cannot start; the message says what is missing and how to provide it."""


def find_java_home() -> Path:
    """A JDK 17 or 21 (what Spark 4 supports): `$JAVA_HOME`, then `java` on PATH, then /usr/lib/jvm."""
    named = [os.environ.get("JAVA_HOME"), (Path(shutil.which("java") or "").resolve().parent.parent if shutil.which("java") else None)]
    homes = [Path(h) for h in named if h] + sorted(Path("/usr/lib/jvm").glob("*"))
    seen: list[str] = []
    for home in dict.fromkeys(h for h in homes if (h / "bin" / "java").exists()):
        out = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30)
        major = re.search(r'version "(\d+)', out.stderr + out.stdout)
        seen.append(f"{home} (Java {major.group(1) if major else '?'})")
        if major and int(major.group(1)) in SUPPORTED_JAVA:
            return home
    raise SparkSetupError(
        f"local Spark needs a JDK 17 or 21 and none was found (found: {', '.join(seen) or 'none'}); "
        "install one (e.g. `apt-get install openjdk-17-jdk-headless`) and set JAVA_HOME"
    )


def jar_conf() -> tuple[dict[str, str], Path | None]:
    """Delta's jars for the installed `delta-spark` and `pyspark`: from the list of those Ivy resolved
    on the first run (no resolution, no network), else through Ivy and the list to write."""
    import pyspark

    delta, spark = metadata.version("delta-spark"), ".".join(pyspark.__version__.split(".")[:2])
    packages = f"io.delta:delta-spark_{spark}_2.13:{delta},io.delta:delta-storage:{delta}"
    manifest = CACHE_DIR / "jars" / f"{packages.replace(':', '_').replace(',', '-')}.txt"
    jars = manifest.read_text().split() if manifest.exists() else []
    if jars and all(Path(j).exists() for j in jars):
        return {"spark.jars": ",".join(jars)}, None
    return {"spark.jars.packages": packages, "spark.jars.ivy": str(CACHE_DIR / "ivy")}, manifest


def local_conf(*, cores: int | None = None, memory: str | None = None) -> dict[str, str]:
    """Settings for a small machine (2 cores, memory shared with Dagster): few partitions, UTC."""
    cores = cores or int(os.environ.get("POS_LAKEHOUSE_SPARK_CORES", "0")) or (os.cpu_count() or 2)
    partitions = str(max(2, cores))
    codegen = os.environ.get("POS_LAKEHOUSE_SPARK_CODEGEN", "false")  # compiling costs more than it saves on small batches
    return {
        "spark.master": f"local[{cores}]",
        "spark.driver.memory": memory or os.environ.get("POS_LAKEHOUSE_SPARK_MEMORY", "4g"),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": os.environ.get("POS_LAKEHOUSE_SPARK_UI", "false"),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": partitions,  # 200 by default: pure overhead on small data
        "spark.default.parallelism": partitions,
        "spark.sql.adaptive.coalescePartitions.initialPartitionNum": partitions,
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        "spark.sql.autoBroadcastJoinThreshold": str(64 * 1024 * 1024),
        "spark.sql.session.timeZone": "UTC",
        # Readable by every Delta reader (delta-rs included): micro-second timestamps, no INT96.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Tables stay at the protocol delta-rs writes too, so Polars retailers can share gold.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",  # log replay uses 50 partitions otherwise
        "spark.sql.codegen.wholeStage": codegen,
        "spark.sql.codegen.factoryMode": "FALLBACK" if codegen == "true" else "NO_CODEGEN",
    }


def local_spark(app_name: str = "pos_lakehouse", *, extra: dict[str, str] | None = None, **kwargs):
    """A local SparkSession with Delta; the first run resolves the jars through Ivy and lists them in the cache."""
    from pyspark.sql import SparkSession

    os.environ["JAVA_HOME"] = str(find_java_home())
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    log = os.environ.get("POS_LAKEHOUSE_SPARK_LOG")
    (jars, manifest), builder = jar_conf(), SparkSession.builder.appName(app_name)
    for k, v in {**local_conf(**kwargs), **jars, **(extra or {})}.items():
        builder = builder.config(k, v)
    try:
        with _jvm_output_to(log):
            spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: most often Ivy could not reach Maven Central
        reason = _ivy_failure(log) or str(exc).splitlines()[0]
        raise SparkSetupError(f"local Spark did not start ({reason}); Delta's jars come from Maven Central on the first run") from exc
    spark.sparkContext.setLogLevel(os.environ.get("POS_LAKEHOUSE_SPARK_LOG_LEVEL", "WARN"))
    if manifest is not None:  # list the jars Ivy resolved for the next sessions
        resolved = [re.sub("^file:/*", "/", j) for j in spark.sparkContext.getConf().get("spark.jars", "").split(",") if j]
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text("\n".join(resolved) + "\n")
    return spark


def serve(port: int) -> None:
    """A Spark Connect server on 127.0.0.1:`port` (token from `SPARK_CONNECT_AUTHENTICATE_TOKEN`)
    until stdin closes: the parent stopped it, or died."""
    extra = {
        "spark.plugins": CONNECT_PLUGIN,
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
    }
    spark = local_spark("pos_lakehouse_connect", extra=extra)
    sys.stdin.read()
    spark.stop()


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
    saved, fd = [os.dup(1), os.dup(2)], os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for target in (1, 2):
            os.dup2(fd, target)
        yield
    finally:
        for target, original in zip((1, 2), saved, strict=True):
            os.dup2(original, target)
        for f in (fd, *saved):
            os.close(f)


def _ivy_failure(log: str | None) -> str | None:
    """The `unresolved dependency` line of the last Ivy resolution in `log`, if any."""
    if not log or not Path(log).exists():
        return None
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()[-400:] if "unresolved dependency" in line]
    return lines[-1] if lines else None


if __name__ == "__main__":
    serve(int(sys.argv[1]))
