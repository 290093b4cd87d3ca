"""Process-wide settings that must be in place before Polars is imported.

Polars allocates through jemalloc and reads its settings from `_RJEM_MALLOC_CONF` once, when
`polars` is first imported (Polars appends what is set there to its own defaults, so the values
here win over them). The package's `__init__` applies them, which is early enough for every way
the code is run: `dg dev`, the CLI, the tests and the benchmarks all import `pos_lakehouse` before
anything imports Polars.
"""

from __future__ import annotations

import os
import sys

ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"


def allocator_settings() -> str:
    """jemalloc settings for batch-at-a-time work on a few cores.

    Silver and gold free and re-allocate buffers of a whole batch (hundreds of MB) every second
    or so. With Polars' defaults (freed pages back to the OS after half a second, four arenas per
    core) a third of a large load's CPU time went to the kernel: page faults on fresh pages,
    zeroing them and purging them again. Keeping freed pages for ten seconds lets the next batches
    reuse them, and one arena per core lets any thread reuse what another freed (which also keeps
    the peak down); an idle process still hands its memory back within those ten seconds.
    Measured on 5.1M rows on 2 cores (`benchmarks/throughput.py`, its pipeline phase alone):
    landing to gold 20.7-20.8 s -> 18.0-18.4 s with five seconds, and 19.0-19.7 s -> 18.4-18.7 s
    from five to ten (run after run on a shared machine); the peak rose by 0.1-0.3 GB each time.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return f"narenas:{cores},dirty_decay_ms:10000"


def configure_allocator() -> None:
    """Set the allocator's settings unless the user set their own or Polars is already loaded."""
    if ALLOCATOR_ENV not in os.environ and "polars" not in sys.modules:
        os.environ[ALLOCATOR_ENV] = allocator_settings()
