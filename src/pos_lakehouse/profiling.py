"""Named stages timed inside a layer's code, for the benchmarks' profiles; nothing when not profiling.

    with stage("facts: keys"):
        ...

`stage` costs one global look-up while no profile is recording. `recording()` records every
stage run inside it (any thread): the wall time summed over its runs, the process's CPU time
meanwhile (all threads: steadier than wall time on a shared machine) and the process's peak
resident memory while it ran (Linux: the high-water mark is reset when a stage starts and read
when it ends; a stage's peak includes its inner stages'). Stages nest: an inner stage's time is
also in its outer one. A stage run in a background thread overlaps the stages of the thread
that started it, so its time is its own thread's wall time, not an added cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StageFigures:
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the process's CPU time (every thread's) while it ran
    runs: int = 0
    peak_gb: float = 0.0
    depth: int = 0  # how deeply nested its first run was (for printing)


@dataclass
class Profile:
    """Stages in the order they first ran, each with its figures."""

    stages: dict[str, StageFigures] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def as_dict(self) -> dict[str, dict]:
        return {
            name: {"seconds": f.seconds, "cpu_seconds": f.cpu_seconds, "runs": f.runs, "peak_gb": f.peak_gb, "depth": f.depth}
            for name, f in self.stages.items()
        }


_active: Profile | None = None
_NOTHING = nullcontext()


def _high_water_gb(reset: bool) -> float:
    """The process's resident-set high-water mark in GB (nan off Linux); reset it after reading."""
    peak = float("nan")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024**2
                break
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return peak


@contextmanager
def _timed(profile: Profile, name: str) -> Iterator[None]:
    stack: list[list[float]] = profile._local.__dict__.setdefault("stack", [])
    before = _high_water_gb(reset=True)
    for outer in stack:  # what the outer stages reached before this reset stays theirs
        outer[0] = max(outer[0], before)
    with profile._lock:  # listed in the order stages start, outer before inner
        figures = profile.stages.setdefault(name, StageFigures(depth=len(stack)))
    mine = [0.0]
    stack.append(mine)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        stack.pop()
        peak = max(mine[0], _high_water_gb(reset=False))
        for outer in stack:
            outer[0] = max(outer[0], peak)
        with profile._lock:
            figures.seconds += seconds
            figures.cpu_seconds += cpu_seconds
            figures.runs += 1
            figures.peak_gb = max(figures.peak_gb, peak)


def stage(name: str):
    """A context manager timing `name` into the recording profile (a no-op when none records)."""
    profile = _active
    return _NOTHING if profile is None else _timed(profile, name)


@contextmanager
def recording() -> Iterator[Profile]:
    """Record every `stage` run inside this block into the `Profile` it yields."""
    global _active
    profile, previous = Profile(), _active
    _active = profile
    try:
        yield profile
    finally:
        _active = previous
