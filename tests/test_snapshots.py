"""Shared read-only table handles (`storage.snapshots`): reused while the version stands, never stale.

The attacks: a commit by another writer between two reads, a table deleted and created again
under the same path (with more commits than the cached handle had seen), a lazy scan built before
a commit and collected after it, and readers racing a writer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from deltalake import write_deltalake

from pos_lakehouse.storage import snapshots
from pos_lakehouse.storage.lake import Lake


def _append(uri: str, values: list[int]) -> None:
    write_deltalake(uri, pa.table({"n": pa.array(values, pa.int64())}), mode="append")


def _values(lake: Lake, uri: str) -> list[int]:
    return sorted(lake.scan(uri).collect()["n"].to_list())


def test_a_handle_is_reused_until_the_table_changes(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = str(tmp_path / "t")
    assert lake.snapshot(uri) is None and not lake.exists(uri)
    _append(uri, [1, 2])
    first = lake.snapshot(uri)
    assert first is not None and lake.snapshot(uri) is first
    assert lake.row_count(uri) == 2 and lake.version(uri) == first.version()

    _append(uri, [3])  # another writer (delta-rs directly, not through the Lake)
    second = lake.snapshot(uri)
    assert second is not first and second.version() == first.version() + 1
    assert _values(lake, uri) == [1, 2, 3]
    assert first.version() == second.version() - 1, "a handed-out handle never moves"


def test_a_scan_built_before_a_commit_reads_the_version_it_was_built_on(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = str(tmp_path / "t")
    _append(uri, [1])
    before = lake.scan(uri)
    _append(uri, [2])
    assert lake.scan(uri).collect()["n"].sum() == 3
    assert before.collect()["n"].to_list() == [1]


def test_a_table_deleted_and_created_again_is_read_anew(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = str(tmp_path / "t")
    for n in range(3):
        _append(uri, [n])
    stale = lake.snapshot(uri)
    assert stale.version() == 2 and _values(lake, uri) == [0, 1, 2]

    shutil.rmtree(uri)
    assert lake.snapshot(uri) is None and lake.row_count(uri) == 0

    # Created again and written past the version the old handle had seen: an incremental update
    # of the old handle would apply the new table's commits on top of the old table's files.
    for n in range(5):
        _append(uri, [100 + n])
    fresh = lake.snapshot(uri)
    assert fresh is not stale and fresh.version() == 4
    assert _values(lake, uri) == [100, 101, 102, 103, 104]


def test_deleted_and_created_again_between_two_reads(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = str(tmp_path / "t")
    _append(uri, [1])
    _append(uri, [2])
    assert _values(lake, uri) == [1, 2]
    shutil.rmtree(uri)
    # Same number of commits as before, so the version alone looks unchanged.
    _append(uri, [7])
    _append(uri, [8])
    assert lake.version(uri) == 1
    assert _values(lake, uri) == [7, 8]


def test_a_commit_from_another_process_is_seen(tmp_path):
    lake = Lake(root=str(tmp_path))
    uri = str(tmp_path / "t")
    _append(uri, [1])
    assert lake.row_count(uri) == 1
    code = (
        f"import pyarrow as pa; from deltalake import write_deltalake; write_deltalake({uri!r}, pa.table({{'n': [5, 6]}}), mode='append')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert lake.row_count(uri) == 3 and _values(lake, uri) == [1, 5, 6]


def test_readers_racing_a_writer_see_whole_versions(tmp_path):
    """Every read is some committed version in full: n rows summing to 0 + 1 + ... + n-1."""
    lake = Lake(root=str(tmp_path))
    uri = str(tmp_path / "t")
    _append(uri, [0])
    commits = 30

    def write() -> None:
        for n in range(1, commits + 1):
            _append(uri, [n])

    def read(_: int) -> tuple[int, int]:
        frame = lake.scan(uri).collect()
        return frame.height, int(frame["n"].sum())

    with ThreadPoolExecutor(4) as pool:
        writer = pool.submit(write)
        seen = list(pool.map(read, range(200)))
        writer.result()
    for height, total in seen:
        assert total == height * (height - 1) // 2, (height, total)
    assert lake.row_count(uri) == commits + 1


def test_the_cache_holds_a_bounded_number_of_files(tmp_path, monkeypatch):
    """A long-lived process reading many tables keeps at most the budget's files in handles; a
    table over the budget alone is opened afresh on every read (and still read right)."""
    monkeypatch.setattr(snapshots, "MAX_CACHED_FILES", 5)
    lake = Lake(root=str(tmp_path))
    small, other, big = (str(tmp_path / name) for name in ("small", "other", "big"))
    for n in range(3):
        _append(small, [n])
        _append(other, [n])
    for n in range(6):
        _append(big, [n])

    first = lake.snapshot(small)
    assert lake.snapshot(small) is first
    assert lake.snapshot(big) is not lake.snapshot(big)
    assert _values(lake, big) == list(range(6))
    lake.snapshot(other)  # 3 + 3 files: over the budget, so the least recently read goes
    assert lake.snapshot(small) is not first
    held = sum(entry.files for entry in snapshots._cached.values())
    assert held <= 5, held
