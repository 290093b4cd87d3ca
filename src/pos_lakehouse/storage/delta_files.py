"""Append-only Delta writes whose data files Polars writes itself, committed together.

Bronze appends whole files as they are read. Streaming each one through Polars' own Parquet
writer (parallel, in bounded memory) straight into the table's folder, then committing many such
files at once with add actions built from each file's footer, costs about what a bare "read the
files and write Delta" costs: one pass over each file, one commit per batch instead of one per
file, and the row count read from the footer rather than counted by another read.

Exactly once is kept per file: each staged file carries its once-id, and the commit carries one
Delta application transaction (`txn`) per id, checked against the same snapshot it commits on.
A concurrent writer that committed one of the ids first makes delta-rs refuse this commit; the
retry drops the files whose ids are now in the table and commits the rest.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl
from deltalake import CommitProperties, Field, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction

from pos_lakehouse.storage.interface import commit_metadata
from pos_lakehouse.storage.lake import _MAX_COMMIT_ATTEMPTS, ONCE_PREFIX, ROW_GROUP_ROWS, Lake
from pos_lakehouse.storage.object_store import delete_uri, written_at


@dataclass
class StagedFile:
    """A data file written into a table's folder, not yet part of the table."""

    uri: str  # where it is
    name: str  # its path relative to the table root (the add action's path)
    size: int
    rows: int
    stats: str  # the add action's statistics (JSON)
    schema: pl.Schema
    modified_ms: int


def _timestamp(value: datetime, up: bool) -> str:
    """Delta statistics hold timestamps to the millisecond: a lower bound rounds down, an upper one up."""
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
        if isinstance(lo, datetime):
            mins[name], maxs[name] = _timestamp(lo, up=False), _timestamp(hi, up=True)
        elif isinstance(lo, date):
            mins[name], maxs[name] = lo.isoformat(), hi.isoformat()
        else:
            mins[name], maxs[name] = lo, hi
    counts = dict(nulls) if nulls is not None else dict.fromkeys(mins, 0)
    return json.dumps({"numRecords": rows, "minValues": mins, "maxValues": maxs, "nullCount": counts})


def write_data_file(
    table_uri: str, frame: pl.LazyFrame, exact_stats: Mapping[str, tuple[object, object]] | None = None, row_number: str | None = None
) -> StagedFile:
    """Stream `frame` into one new Parquet file in the table's folder (not yet committed).

    `exact_stats` are (min, max) of non-null columns the caller knows (lineage stamped as one
    value per file); `row_number` names a column numbering the rows from 1. The row count is
    read from the written file's footer. Polars' reader errors propagate, leaving nothing behind.
    """
    name = f"part-00000-{uuid.uuid4()}-c000.parquet"
    target = f"{table_uri.rstrip('/')}/{name}"
    with written_at(target) as path:
        schema = frame.collect_schema()
        # No column statistics: min/max over every raw string costs a tenth of the write, and the
        # log gets the bounds that matter (the lineage the caller stamped) as `exact_stats`.
        frame.sink_parquet(path, compression="zstd", compression_level=1, row_group_size=ROW_GROUP_ROWS, statistics=False)
        import pyarrow.parquet as pq  # imported by the step that writes, not when the code location loads

        rows = pq.read_metadata(path).num_rows
        bounds = dict(exact_stats or {})
        if row_number and rows:
            bounds[row_number] = (1, rows)
        stats = add_stats(rows, bounds)
        size = path.stat().st_size
    return StagedFile(target, name, size, rows, stats, schema, int(time.time() * 1000))


def discard(staged: StagedFile) -> None:
    """Remove a staged file that will not be committed."""
    try:
        delete_uri(staged.uri)
    except FileNotFoundError:
        pass


def _schema_of(staged: list[StagedFile]) -> pl.Schema:
    merged: dict[str, pl.DataType] = {}
    for f in staged:
        for name, dtype in f.schema.items():
            merged.setdefault(name, dtype)
    return pl.Schema(merged)


def commit_once(table_uri: str, staged: Mapping[str, StagedFile], *, description: str | None = None) -> set[str]:
    """Commit staged files (keyed by once-id) in one Delta commit; the ids this call committed.

    Files whose id is already in the table (a re-delivery, or another run that got there first)
    are removed and left out; the table is created, and new columns added, as needed.
    """
    pending = dict(staged)
    try:
        return _commit(table_uri, pending, description)
    except BaseException:
        for f in pending.values():  # not committed: nothing may stay behind in the table's folder
            discard(f)
        raise


def _commit(table_uri: str, pending: dict[str, StagedFile], description: str | None) -> set[str]:
    last: BaseException | None = None
    for attempt in range(1, _MAX_COMMIT_ATTEMPTS + 1):
        dt = Lake.table(table_uri)
        if dt is None:
            try:
                Lake.create_empty(table_uri, pl.DataFrame(schema=_schema_of(list(pending.values()))).to_arrow(), description=description)
            except Exception as exc:  # another writer created it first: use theirs
                last = exc
                if Lake.table(table_uri) is None:
                    time.sleep(min(0.05 * 2**attempt, 2.0))
            continue
        for once_id in [i for i in pending if dt.transaction_version(ONCE_PREFIX + i) is not None]:
            discard(pending.pop(once_id))
        if not pending:
            return set()
        have = {f.name for f in dt.schema().fields}
        wanted = _schema_of(list(pending.values()))
        new = [n for n in wanted if n not in have]
        if new:
            # A delivery with columns the table has not seen: the table's schema grows first
            # (a metadata-only commit), as `schema_mode="merge"` would do in a write.
            arrow = pl.DataFrame(schema={n: wanted[n] for n in new}).to_arrow().schema
            try:
                dt.alter.add_columns([Field.from_arrow(arrow.field(n)) for n in new])
            except Exception as exc:  # another writer added them first: look again
                last = exc
            continue
        adds = [AddAction(f.name, f.size, {}, f.modified_ms, True, f.stats) for f in pending.values()]
        now_ms = int(time.time() * 1000)
        properties = CommitProperties(
            custom_metadata=commit_metadata(None, "append"),
            app_transactions=[Transaction(app_id=ONCE_PREFIX + i, version=1, last_updated=now_ms) for i in pending],
        )
        try:
            dt.create_write_transaction(adds, "append", schema=dt.schema(), commit_properties=properties)
            return set(pending)
        except (CommitFailedError, DeltaError) as exc:
            last = exc
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise RuntimeError(f"Delta commit to {table_uri} failed after {_MAX_COMMIT_ATTEMPTS} attempts: {last}") from last
