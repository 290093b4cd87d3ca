"""Appending rows of known partitions to a table partitioned by one column, at the speed of an
unpartitioned write.

delta-rs holds the whole input of a *partitioned* write in memory before writing it (whatever
`target_file_size`), and writes it slower than the same rows unpartitioned. A
retailer's first load of a gold table is one partition (`data_provider_code`), so each part's rows
are streamed by Polars into one Parquet file in the partition's own directory
(`<table>/<column>=<value>/`, exactly where a partitioned write puts them), bounded in memory; the
add actions (path, size, statistics read off the file's footer) are then committed to the real
table in one transaction with their partition values. Readers see the rows only once that commit
lands; a load that fails removes the files it wrote, and one killed mid-way leaves data files no
commit refers to (a later VACUUM removes them). The statistics of the add actions and the commit
itself are `delta_commit`'s.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import polars as pl
from deltalake import DeltaTable

from pos_lakehouse.storage.delta_commit import AddAction, add_action, footer_stats, frame_stats
from pos_lakehouse.storage.object_store import delete_uri, written_at

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # no escaping needed in a Hive-style path


def applicable(table: DeltaTable, data: pl.LazyFrame, column: str, values: Sequence[object]) -> bool:
    """Whether the table is partitioned by `column` alone, the values need no escaping in a path and
    `data` has the table's schema (anything else, e.g. a schema that evolves, goes through an
    ordinary write)."""
    if table.metadata().partition_columns != [column]:
        return False
    if not all(_SAFE_VALUE.match(str(v)) for v in values):
        return False
    return dict(pl.Schema(table.schema().to_arrow())) == dict(data.collect_schema())


def append_partitions(uri: str, column: str, parts: Sequence[tuple[object, pl.LazyFrame]], row_group_size: int, commit) -> int:
    """Write each (partition value, rows) part as its own data file in that partition's directory
    and commit them all with `commit(actions)`; returns the number of files added."""
    by_value: dict[str, list[pl.LazyFrame]] = {}
    for value, rows in parts:
        by_value.setdefault(str(value), []).append(rows)
    actions: list[AddAction] = []
    written: list[str] = []
    try:
        for value, chunks in by_value.items():
            for chunk in chunks:
                name = f"{column}={value}/part-00000-{uuid.uuid4()}-c000.snappy.parquet"
                target = f"{uri.rstrip('/')}/{name}"
                data = chunk.drop(column)
                with written_at(target) as path:
                    data.sink_parquet(path, compression="snappy", row_group_size=row_group_size)
                    stats, rows = footer_stats(path, data.collect_schema())
                    size = path.stat().st_size
                if not rows:  # an empty part: no file to add
                    delete_uri(target)
                    continue
                written.append(target)
                actions.append(add_action(name, size, stats, {column: value}))
        commit(actions)  # even without files: the commit carries the caller's bookmarks
    except BaseException:
        for target in written:
            delete_uri(target)
        raise
    return len(actions)


# ---- many partitions of an in-memory frame: one Parquet file each, written by Polars ----------
# A silver fact batch spans every day it holds (a hundred partitions for a store file of a quarter);
# delta-rs' partitioned writer would buffer the whole batch again. Polars writes each day's rows as one file straight into its partition directory, the
# add actions carry statistics read off that day's columns, and one commit adds them.
_WRITERS = 2  # partition files written at once


def write_partition_files(uri: str, column: str, frame: pl.DataFrame, row_group_size: int, commit) -> int:
    """One Snappy Parquet file per value of `column` in its partition directory, all committed with
    `commit(actions)` (in partition order); returns the number of files added. When a write or the
    commit fails, the files written are removed: nothing uncommitted stays in the table's folder."""
    # The rows of one partition at a time, gathered by their row numbers: splitting the whole frame
    # first (`partition_by`) would hold a second copy of the batch while its files are written.
    rows = frame.select(column).with_row_index("__row").group_by(column).agg("__row").sort(column)
    written: list[str] = []

    def write_one(value, numbers: pl.Series) -> AddAction:
        text = str(value)  # a date as Delta writes it: 2026-08-19
        name = f"{column}={text}/part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        target = f"{uri.rstrip('/')}/{name}"
        # Partition values live in the log, not in the data files (as Delta writers do).
        data = frame[numbers].drop(column)
        with written_at(target) as path:
            data.write_parquet(path, compression="snappy", row_group_size=row_group_size)
            size = path.stat().st_size
        written.append(target)
        return add_action(name, size, frame_stats(data), {column: text})

    # Two files at a time: one small file's write leaves a core idle (its gather, encoding and
    # statistics are mostly outside the GIL).
    try:
        with ThreadPoolExecutor(_WRITERS, thread_name_prefix="pos_lakehouse_partition_write") as pool:
            actions = list(pool.map(write_one, rows.get_column(column).to_list(), rows.get_column("__row")))
        commit(actions)
    except BaseException:
        for target in written:
            delete_uri(target)
        raise
    return len(actions)
