"""Read-only Delta table handles, opened once per table version and shared by this process's readers.

Opening a table lists its log, reads the last checkpoint and replays the commits after it: a few
milliseconds, more as the table's history grows. One delivery's run reads the same dozen tables
over a hundred times (bookmarks, checks, scans, row counts), almost always at a version that has
not changed since the last read, so each read would pay the open again for nothing.

A handle handed out here is pinned at the version it was opened at. It is never updated in place,
so a lazy scan built on it reads that version whenever it is collected, and a writer never sees
its snapshot move. The handle is handed out again for as long as that version is the table's
newest; the first read after a commit opens the new version.

Two file-system checks decide whether a cached handle is still current:
- a newer version exists when the next commit file does (Delta commits are numbered without gaps);
- the table is still the same one, not deleted and created again under the same path, when the
  cached version's commit file has the modification time it had when the handle was opened.

Tables in an object store are opened afresh each time: those checks would be requests, not stats.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import NamedTuple

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pos_lakehouse.storage.object_store import is_remote, local_path

# A handle holds its version's file list with each file's statistics: about 4.6 KB a file for a
# silver fact table (500 files: 2.3 MiB). The cache keeps what one delivery's run reads (a
# retailer's dozen tables), bounded by files so a long-lived sensor process that reads every
# retailer's tables holds at most ~90 MiB of handles, however many tables it reads; a table with
# more files than that alone is opened afresh each time, as without the cache.
MAX_CACHED_TABLES = 256
MAX_CACHED_FILES = 20_000


class _Cached(NamedTuple):
    table: DeltaTable
    commit_mtime_ns: int
    files: int


_lock = threading.Lock()
_cached: OrderedDict[str, _Cached] = OrderedDict()


def open_table(uri: str) -> DeltaTable | None:
    """A fresh handle on the table's newest version (None if there is no table): the caller may write with it."""
    try:
        return DeltaTable(uri)
    except TableNotFoundError:
        return None


def latest(uri: str) -> DeltaTable | None:
    """A read-only handle on the table's newest version (None if there is no table).

    Never write through it or update it (`update_incremental`, `load_as_version`, a write with the
    handle as target): other readers hold the same object.
    """
    if is_remote(uri):
        return open_table(uri)
    log = os.path.join(local_path(uri), "_delta_log")
    with _lock:
        hit = _cached.get(uri)
        if hit is not None:
            _cached.move_to_end(uri)
    if hit is not None and _is_newest(log, hit):
        return hit.table
    table = open_table(uri)
    mtime = files = None
    if table is not None:
        files = len(table.file_uris())
        try:
            mtime = os.stat(_commit_file(log, table.version())).st_mtime_ns
        except OSError:  # the commit file is already gone (log clean-up): nothing to check against later
            pass
    with _lock:
        _cached.pop(uri, None)
        if table is None or files is None or mtime is None or files > MAX_CACHED_FILES:
            return table
        _cached[uri] = _Cached(table, mtime, files)
        held = sum(c.files for c in _cached.values())
        while len(_cached) > MAX_CACHED_TABLES or held > MAX_CACHED_FILES:
            _, evicted = _cached.popitem(last=False)
            held -= evicted.files
    return table


def _commit_file(log: str, version: int) -> str:
    return os.path.join(log, f"{version:020d}.json")


def _is_newest(log: str, hit: _Cached) -> bool:
    version = hit.table.version()
    try:
        if os.stat(_commit_file(log, version)).st_mtime_ns != hit.commit_mtime_ns:
            return False  # the table was deleted and created again
    except OSError:
        return False  # deleted, or its log cleaned up: open it again
    return not os.path.exists(_commit_file(log, version + 1))
