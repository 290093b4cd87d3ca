"""The one path by which this process commits to a Delta table (delta-rs).

Every write of `storage.lake.Lake` ends here: appends, MERGEs, per-partition appends of files
Polars wrote, bronze's staged delivery files and bookmark-only commits. So this module alone holds

- the retry loop (`retry`): optimistic concurrency, another writer may commit first; the attempt
  is run again after a back-off;
- the created-first race (`ensure_table`): tables are created empty before rows are added, and a
  writer that finds another one created the table first uses theirs;
- once-ids (`commit_properties`, `applied`): Delta application transactions (`txn` actions) that
  make an append happen once per id;
- the pieces of the Delta protocol built by hand for data files written outside delta-rs (add
  actions and their statistics, `add_stats` and below), each with the delta-rs limitation it
  works around and when it can go.

It imports nothing of the project's storage but the snapshot cache and the commit metadata, so
every other storage module can use it without an import circle.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction

from pos_lakehouse.storage import snapshots
from pos_lakehouse.storage.interface import Stale, Writer, commit_metadata

if TYPE_CHECKING:  # pyarrow (and numpy with it) loads where a table is written, not with the definitions
    import pyarrow as pa

T = TypeVar("T")

# Application-transaction ids (Delta `txn` actions) that make an append happen once per id.
ONCE_PREFIX = "pos_lakehouse.once."
# ... and those naming the writer of a silver or gold table (`interface.Writer`).
WRITER_PREFIX = "pos_lakehouse.writer."
MAX_COMMIT_ATTEMPTS = 8
# Row groups of at most this many rows: a reader (the next layer, a MERGE) streams a data file a
# row group at a time, so the writer's default (about a million rows) would set the memory floor
# of every read of a large table. Small enough to bound it, large enough to compress well.
ROW_GROUP_ROWS = 128 * 1024
# Every table gets a checkpoint each 10 commits (delta-rs' default is 100, Spark's 10): opening a
# table replays the log since its last checkpoint, so a table written once per delivery would
# otherwise open slower with each day of history.
TABLE_CONFIGURATION = {"delta.checkpointInterval": "10"}


def writer_properties() -> WriterProperties:
    # delta-rs writes uncompressed unless told; Snappy (Spark's default) costs no measurable time
    # here and makes silver's files a fifth smaller, so every later read moves less.
    return WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="SNAPPY")


# ---- the retry loop ---------------------------------------------------------------------------
class Conflict(Exception):
    """Another writer got there first: the same attempt may succeed once it is run again."""


def is_conflict(exc: BaseException) -> bool:
    """Whether a failed commit may succeed on a later attempt.

    delta-rs raises `CommitFailedError` for most lost races, but surfaces some (a concurrent
    transaction, a version another writer took first) as generic errors naming them. A Polars
    error is the data's, never the table's."""
    if isinstance(exc, Conflict | CommitFailedError):
        return True
    if isinstance(exc, pl.exceptions.PolarsError):
        return False
    text = str(exc).lower()
    return any(word in text for word in ("conflict", "concurrent", "already exists", "version"))


def backoff(attempt: int) -> None:
    time.sleep(min(0.05 * 2**attempt, 2.0))


def retry(attempt: Callable[[], T], uri: str) -> T:
    """Run `attempt` (one try at a commit, reading the table afresh) until it commits or fails for a
    reason other than a lost race; after `MAX_COMMIT_ATTEMPTS` lost races, give up."""
    last: BaseException | None = None
    for n in range(1, MAX_COMMIT_ATTEMPTS + 1):
        try:
            return attempt()
        except Exception as exc:
            if not is_conflict(exc):
                raise RuntimeError(f"Delta write to {uri} failed: {exc}") from exc
            last = exc
        if n < MAX_COMMIT_ATTEMPTS:
            backoff(n)
    raise RuntimeError(f"Delta write to {uri} failed after {MAX_COMMIT_ATTEMPTS} attempts: {last}") from last


# ---- the created-first race -------------------------------------------------------------------
def create_table(uri: str, empty: pa.Table, *, partition_by: Sequence[str] | None = None, description: str | None = None) -> None:
    """Create the table with no rows (`empty`: an Arrow table carrying the schema); raises if it exists.

    Writers create a table empty before adding rows: a commit that creates a table has no
    snapshot to be checked against, and delta-rs lets two racing creators both land their rows
    (`benchmarks/faults.py` races them). Appends to an existing snapshot are checked.
    """
    write_deltalake(
        uri,
        empty,
        mode="error",
        partition_by=list(partition_by) if partition_by else None,
        name=Path(uri).name,
        description=description,
        commit_properties=commit_properties(None, "create"),
        configuration=TABLE_CONFIGURATION,
    )


def ensure_table(
    uri: str, empty: Callable[[], pa.Table], *, partition_by: Sequence[str] | None = None, description: str | None = None
) -> bool:
    """Create the table empty, where the caller found none; True if this call created it.

    Another writer creating it first is not an error: their table is used (False). A creation that
    failed while no table appeared raises `Conflict`, so a `retry` around it tries again."""
    try:
        create_table(uri, empty(), partition_by=partition_by, description=description)
        return True
    except Exception as exc:
        if snapshots.open_table(uri) is not None:
            return False  # another writer created it first
        raise Conflict(f"creating {uri}: {exc}") from exc


# ---- once-ids and commit metadata -------------------------------------------------------------
def commit_properties(
    bookmarks: Mapping[str, str] | None, operation: str, once_ids: Iterable[str] = (), writer: Writer | None = None
) -> CommitProperties:
    """What a commit carries: the operation, the bookmarks it advances, one application
    transaction per once-id and one naming its writer (all checked by delta-rs against the
    snapshot the commit is made on)."""
    now_ms = int(time.time() * 1000)
    transactions = [Transaction(app_id=ONCE_PREFIX + i, version=1, last_updated=now_ms) for i in once_ids]
    if writer is not None:
        version = writer.version if writer.version is not None else now_ms
        transactions.append(Transaction(app_id=WRITER_PREFIX + writer.app, version=version, last_updated=now_ms))
    return CommitProperties(custom_metadata=commit_metadata(bookmarks, operation), app_transactions=transactions or None)


def applied(table: DeltaTable, once_id: str) -> bool:
    """Whether a commit with this once-id is in the table's snapshot."""
    return table.transaction_version(ONCE_PREFIX + once_id) is not None


def consumed(table: DeltaTable, writer: Writer | None) -> bool:
    """Whether a `once` writer's version is already recorded in the table's snapshot (its work is in)."""
    if writer is None or not writer.once or writer.version is None:
        return False
    recorded = table.transaction_version(WRITER_PREFIX + writer.app)
    return recorded is not None and recorded >= writer.version


def commit_files(
    table: DeltaTable,
    actions: list[AddAction],
    *,
    partition_by: Sequence[str] | None = None,
    bookmarks: Mapping[str, str] | None = None,
    once_ids: Iterable[str] = (),
    writer: Writer | None = None,
) -> None:
    """Add data files already written into the table's folder, in one append commit on `table`'s snapshot."""
    table.create_write_transaction(
        [*actions],
        "append",
        table.schema(),
        list(partition_by) if partition_by else None,
        commit_properties=commit_properties(bookmarks, "append", once_ids, writer),
    )


# ---- add-action statistics of files written outside delta-rs ----------------------------------
# Bronze deliveries and per-partition appends are written by Polars straight into the table's
# folder, because delta-rs 1.6 holds the whole input of a partitioned write in memory and writes
# slower than Polars' own Parquet writer; they are then committed with `create_write_transaction`,
# which takes each add action's statistics as an opaque JSON string: deltalake's Python API has no
# way to compute them for a file it did not write. The statistics are therefore built here, to the
# Delta protocol's rules. All of this can go when delta-rs can add existing Parquet files with the
# statistics it computes itself, or when its partitioned writer streams (then Polars' `sink_delta`
# would do these writes).


def add_action(
    path: str, size: int, stats: str, partition_values: Mapping[str, str] | None = None, modified_ms: int | None = None
) -> AddAction:
    """The add action of a data file written into the table's folder (`path` relative to the table
    root; a partition value as Delta writes it, e.g. a date as 2026-08-19; `stats` of `add_stats`)."""
    modified = modified_ms if modified_ms is not None else int(time.time() * 1000)
    return AddAction(path, size, dict(partition_values or {}), modified, True, stats)


def _timestamp(value: datetime, up: bool) -> str:
    """Delta statistics hold timestamps to the millisecond: a lower bound rounds down, an upper one up,
    so a bound never excludes a row the file holds (delta-rs reads them as given). Needed for as long
    as these statistics are built by hand (above)."""
    value = value.astimezone(UTC)
    floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if up and floor != value:
        floor += timedelta(milliseconds=1)
    return floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{floor.microsecond // 1000:03d}Z"


def add_stats(rows: int, bounds: Mapping[str, tuple[object, object]], nulls: Mapping[str, int] | None = None) -> str:
    """An add action's statistics (JSON): the row count, the (min, max) the writer knows exactly
    (a pair with a missing side, or a NaN or infinite side that JSON cannot hold, is left out) and
    null counts (`nulls`; else none in the bounded columns)."""
    mins, maxs = {}, {}
    for name, (lo, hi) in bounds.items():
        if lo is None or hi is None or any(isinstance(v, float) and not math.isfinite(v) for v in (lo, hi)):
            continue
        if isinstance(lo, datetime) and isinstance(hi, datetime):
            mins[name], maxs[name] = _timestamp(lo, up=False), _timestamp(hi, up=True)
        elif isinstance(lo, date) and isinstance(hi, date):
            mins[name], maxs[name] = lo.isoformat(), hi.isoformat()
        else:
            mins[name], maxs[name] = lo, hi
    counts = dict(nulls) if nulls is not None else dict.fromkeys(mins, 0)
    return json.dumps({"numRecords": rows, "minValues": mins, "maxValues": maxs, "nullCount": counts})


def has_stats(dtype: pl.DataType) -> bool:
    """Columns whose bounds go into the log. Decimals are left out: their JSON numbers pass through
    floats when delta-rs reads the statistics back, and a bound rounded inwards would make a reader
    skip a file holding the value. Can go when delta-rs keeps decimal statistics exact (or when it
    computes the statistics itself, above)."""
    return dtype.is_integer() or dtype.is_float() or dtype in (pl.Date, pl.String) or isinstance(dtype, pl.Datetime)


# Polars' Parquet writer cuts string statistics to this many bytes (and a cut maximum is below the
# true one, which would make a reader skip a file holding the value), so only shorter string
# bounds go into the log. Can go with the hand-built statistics (above), or when the footer marks
# which bounds are exact and that is read here.
STRING_STATS_BYTES = 64


def footer_stats(path, schema: pl.Schema) -> tuple[str, int]:
    """A written file's add-action statistics (JSON) and row count, from its Parquet footer: the
    same bounds and null counts as `frame_stats`, without a second pass over the rows. A column
    gets bounds only when every row group that holds a value has exact ones."""
    import pyarrow.parquet as pq  # imported by the step that writes, not when the code location loads

    meta = pq.read_metadata(path)
    bounds, nulls = {}, {}
    for i in range(meta.num_columns):
        name = meta.schema.column(i).name
        dtype = schema.get(name)
        lo = hi = None
        exact, counted, null_count = dtype is not None and has_stats(dtype), True, 0
        for g in range(meta.num_row_groups):
            chunk = meta.row_group(g).column(i)
            st = chunk.statistics
            if st is None or not st.has_null_count:
                counted = exact = False
                break
            null_count += st.null_count
            if not st.has_min_max:
                exact = exact and st.null_count == meta.row_group(g).num_rows
                continue
            if exact:
                g_lo, g_hi = _utc(st.min), _utc(st.max)
                if isinstance(g_lo, str) and isinstance(g_hi, str) and max(len(g_lo.encode()), len(g_hi.encode())) >= STRING_STATS_BYTES:
                    exact = False
                    continue
                lo = g_lo if lo is None else min(lo, g_lo)
                hi = g_hi if hi is None else max(hi, g_hi)
        if counted:
            nulls[name] = null_count
        if exact:
            bounds[name] = (lo, hi)
    return add_stats(meta.num_rows, bounds, nulls), meta.num_rows


def _utc(value):
    """Naive timestamps in a footer are UTC (Delta statistics are written in UTC)."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def frame_stats(part: pl.DataFrame) -> str:
    """The add-action statistics (row count, bounds, null counts) of a file holding `part`, read off its columns.

    Per column rather than one grouped aggregation over the whole batch: a column knows its null
    count, and a min and max of one column of one day cost a scan each, where the grouped form
    hashes every row of the batch again."""
    bounds, nulls = {}, {}
    for column in part.get_columns():
        nulls[column.name] = column.null_count()
        if has_stats(column.dtype):
            bounds[column.name] = (column.min(), column.max())
    return add_stats(part.height, bounds, nulls)


class Pin:
    """A table's snapshot a write was decided on, and the one it commits on.

    "Nothing is stored here yet, so append" holds only for the snapshot it was read from: a blind
    append made on a newer one would add the rows a second time if another process appended them
    meanwhile. The pinned write carries its writer's transaction (`Writer`), so delta-rs refuses
    it when a commit of the same writer landed after the pinned snapshot; that raises `Stale`
    (not retried: the caller MERGEs by key instead). A table absent when pinned is pinned at its
    creation (version 0, empty: tables are created empty).
    """

    def __init__(self, uri: str, version: int | None):
        self.uri, self.version = uri, version

    def commit(self, write, writer: Writer | None = None) -> None:
        table = DeltaTable(self.uri, version=self.version if self.version is not None else 0)
        if consumed(table, writer):
            raise Stale(f"{self.uri}: this work is already in the table")
        try:
            write(table)
        except Exception as exc:
            if is_conflict(exc):
                raise Stale(f"{self.uri}: another writer committed after the snapshot this write was decided on") from exc
            raise RuntimeError(f"Delta write to {self.uri} failed: {exc}") from exc
