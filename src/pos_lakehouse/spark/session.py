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
from urllib.parse import urlparse

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


def local_conf(*, master: str = "local", cores: int | None = None, memory: str | None = None) -> dict[str, str]:
    """The driver's settings for a small machine (2 cores, memory shared with Dagster) on `master`:
    `local` (`local[cores]`) or a standalone master `spark://host:port`. What a session can set
    itself (time zone, shuffle partitions, ...) the job sets: `spark/session_conf.py`."""
    cores = cores or int(os.environ.get("POS_LAKEHOUSE_SPARK_CORES", "0")) or (os.cpu_count() or 2)
    partitions = str(max(2, cores))
    conf = {
        "spark.master": f"local[{cores}]" if master == "local" else master,
        "spark.driver.memory": memory or os.environ.get("POS_LAKEHOUSE_SPARK_MEMORY", "4g"),
        "spark.ui.enabled": os.environ.get("POS_LAKEHOUSE_SPARK_UI", "false"),
        "spark.ui.showConsoleProgress": "false",
        "spark.default.parallelism": partitions,
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }
    # A cluster elsewhere must reach this driver by its name; a local one stays on loopback.
    if master == "local" or urlparse(master).hostname in ("127.0.0.1", "localhost"):
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    return conf


def local_spark(app_name: str = "pos_lakehouse", *, extra: dict[str, str] | None = None, job_settings: bool = True, **kwargs):
    """A SparkSession with Delta driven from here (`master=` as `local_conf`), with the job's session
    settings unless `job_settings=False`; the first run resolves the jars through Ivy and lists them in the cache."""
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
    if job_settings:
        from pos_lakehouse.spark.session_conf import apply_job_settings

        # `local_conf` sets it on every session built here.
        apply_job_settings(spark, shuffle_partitions=int(spark.conf.get("spark.default.parallelism")))  # pyright: ignore[reportArgumentType]
    if manifest is not None:  # list the jars Ivy resolved for the next sessions
        resolved = [re.sub("^file:/*", "/", j) for j in spark.sparkContext.getConf().get("spark.jars", "").split(",") if j]
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text("\n".join(resolved) + "\n")
    return spark


def serve(port: int, master: str = "local") -> None:
    """A Spark Connect server on 127.0.0.1:`port` (token from `SPARK_CONNECT_AUTHENTICATE_TOKEN`),
    its driver on `master`, until stdin closes: the parent stopped it, or died. Its clients' sessions
    start from Spark's defaults; the job sets its own settings on its session."""
    extra = {
        "spark.plugins": CONNECT_PLUGIN,
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
    }
    spark = local_spark("pos_lakehouse_connect", extra=extra, master=master, job_settings=False)
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
    serve(int(sys.argv[1]), *sys.argv[2:3])
