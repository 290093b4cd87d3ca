"""Spark jobs per stage of the project's Spark path, and the code that started them.

`spark_throughput.py --profile` uses it: each stage (a silver table's step, a gold table) runs
under a job group of its own, and each PySpark call that can start jobs (collect, count, a
Delta load or write, a SQL statement) names the project's line that made it as the job's
description. After the run, the application's status store (kept without the UI) lists every
job: per stage, how many and how long; per call site, the same. A classic session only (a
Spark Connect client has no status tracker).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator

# Enough for a 5M-row run: the status store drops older jobs beyond this.
SESSION_CONF = {"spark.ui.retainedJobs": "100000", "spark.ui.retainedStages": "100000", "spark.sql.ui.retainedExecutions": "100000"}
_PROJECT = "/pos_lakehouse/"
_local = threading.local()
_SEP = "\t"


class JobProfile:
    """Job groups per stage and call sites per action on one classic SparkSession."""

    def __init__(self, spark):
        self.spark, self.sc = spark, spark.sparkContext
        self.wall: dict[str, float] = {}
        # Schema lookups per stage: cheap in a classic session, an analysis round trip each over Spark Connect.
        self.schemas: dict[str, int] = defaultdict(int)
        self._stage: str | None = None
        self._patch()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Jobs started in the block belong to `name` (nested stages: the innermost)."""
        import time

        previous, self._stage = self.sc.getLocalProperty("spark.jobGroup.id"), name
        self.sc.setLocalProperty("spark.jobGroup.id", name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - started
            self.sc.setLocalProperty("spark.jobGroup.id", previous)
            self._stage = previous

    def wrap_stages(self, module, names: list[str], label) -> None:
        """Run `module.<name>` for each of `names` as a stage labelled `label(name, args)`."""
        for name in names:
            original = getattr(module, name)

            def staged(*args, _original=original, _name=name, **kwargs):
                with self.stage(label(_name, args)):
                    return _original(*args, **kwargs)

            setattr(module, name, staged)

    def _patch(self) -> None:
        """Name each job after the project line whose PySpark call started it."""
        from pyspark.sql import DataFrameReader, DataFrameWriter, SparkSession
        from pyspark.sql.classic.dataframe import DataFrame  # the classic session's frames

        sc = self.sc
        targets = [
            (DataFrame, ("collect", "count", "toArrow", "toPandas", "isEmpty", "first", "head", "take", "inputFiles")),
            (DataFrameReader, ("load",)),
            (DataFrameWriter, ("save",)),
            (SparkSession, ("sql", "createDataFrame")),
        ]
        for cls, methods in targets:
            for method in methods:
                original = getattr(cls, method)

                @functools.wraps(original)
                def called(*args, _original=original, _method=method, **kwargs):
                    if getattr(_local, "depth", 0):
                        return _original(*args, **kwargs)
                    # In the job group (which, unlike the description, reaches the jobs that
                    # adaptive execution starts from its own threads): "<stage>\t<call site>".
                    _local.depth, group = 1, sc.getLocalProperty("spark.jobGroup.id")
                    try:
                        sc.setLocalProperty("spark.jobGroup.id", f"{(group or '').split(_SEP)[0]}{_SEP}{_method} at {_caller()}")
                        return _original(*args, **kwargs)
                    finally:
                        _local.depth = 0
                        sc.setLocalProperty("spark.jobGroup.id", group)

                setattr(cls, method, called)
        schema = DataFrame.schema.func  # a cached property: a frame asks the JVM once

        def counted(frame):
            self.schemas[self._stage or "-"] += 1
            return schema(frame)

        cached = functools.cached_property(counted)
        cached.__set_name__(DataFrame, "schema")
        DataFrame.schema = cached

    def report(self) -> str:
        """Per stage: jobs, job seconds (the jobs' own spans), wall seconds and schema lookups; the busiest call sites."""
        store = self.sc._jsc.sc().statusStore()
        per_stage: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        per_site: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        listed = store.jobsList(None)  # a Scala Seq
        for job in (listed.apply(i) for i in range(listed.size())):
            if not job.jobGroup().isDefined():
                continue
            group, _, site = job.jobGroup().get().partition(_SEP)
            if not group:
                continue
            span = 0.0
            if job.submissionTime().isDefined() and job.completionTime().isDefined():
                span = (job.completionTime().get().getTime() - job.submissionTime().get().getTime()) / 1000
            site = site or job.name()
            for table in (per_stage[group], per_site[group, site]):
                table[0] += 1
                table[1] += span
        lines = [f"{'stage':40} {'jobs':>5} {'job s':>7} {'wall s':>7} {'schemas':>8}"]
        for name, wall in self.wall.items():
            jobs, span = per_stage.get(name, [0, 0.0])
            lines.append(f"{name:40} {int(jobs):5d} {span:7.1f} {wall:7.1f} {self.schemas.get(name, 0):8d}")
        total_jobs = sum(int(v[0]) for v in per_stage.values())
        total_span = sum(v[1] for v in per_stage.values())
        lines.append(f"{'total':40} {total_jobs:5d} {total_span:7.1f} {sum(self.wall.values()):7.1f} {sum(self.schemas.values()):8d}")
        lines.append("busiest call sites (stage: jobs, job seconds, site):")
        busiest = sorted(per_site.items(), key=lambda kv: -kv[1][1])[:40]
        lines += [f"  {stage}: {int(n)} {s:.1f}s {site}" for (stage, site), (n, s) in busiest]
        return "\n".join(lines)


def _caller() -> str:
    """The innermost project frame (file:line function) on the stack and, when that is not in
    `layers/`, the innermost one there (the step that asked)."""
    frame, found = sys._getframe(2), []
    while frame is not None and len(found) < 2:
        path = frame.f_code.co_filename
        if _PROJECT in path and (not found or "/layers/" in path):
            found.append(f"{path.split(_PROJECT, 1)[1]}:{frame.f_lineno} {frame.f_code.co_name}")
            if "/layers/" in path:
                break
        frame = frame.f_back
    return " <- ".join(found) or "?"
