"""Append-only Delta writes whose data files Polars writes itself, committed together (bronze).

Bronze appends whole files as they are read: each one is streamed through Polars' own Parquet
writer (parallel, in bounded memory) straight into the table's folder, and many such files are
committed at once with add actions built from each file's footer: one pass over each file, one
commit per batch instead of one per file, and the row count read from the footer rather than
counted by another read.

Exactly once is kept per file: each staged file carries its once-id, and the commit carries one
Delta application transaction per id, checked against the same snapshot it commits on
(`delta_commit`). A concurrent writer that committed one of the ids first makes delta-rs refuse
this commit; the retry drops the files whose ids are now in the table and commits the rest.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
from deltalake import Field

from pos_lakehouse.storage import snapshots
from pos_lakehouse.storage.delta_commit import ROW_GROUP_ROWS, Conflict, add_action, add_stats, applied, commit_files, ensure_table, retry
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

    def _drop_committed(dt) -> None:
        for once_id in [i for i in pending if applied(dt, i)]:
            discard(pending.pop(once_id))

    def attempt() -> set[str]:
        dt = snapshots.open_table(table_uri)
        if dt is None:
            ensure_table(table_uri, lambda: pl.DataFrame(schema=_schema_of(list(pending.values()))).to_arrow(), description=description)
            dt = snapshots.open_table(table_uri)
            if dt is None:
                raise Conflict(f"{table_uri} is not there after its creation")
        _drop_committed(dt)
        if not pending:
            return set()
        wanted = _schema_of(list(pending.values()))
        new = [n for n in wanted if n not in {f.name for f in dt.schema().fields}]
        if new:
            # A delivery with columns the table has not seen: the table's schema grows first
            # (a metadata-only commit), as `schema_mode="merge"` would do in a write.
            arrow = pl.DataFrame(schema={n: wanted[n] for n in new}).to_arrow().schema
            try:
                dt.alter.add_columns([Field.from_arrow(arrow.field(n)) for n in new])
            except Exception as exc:  # another writer may have added them first: look again
                raise Conflict(f"adding columns {new} to {table_uri}: {exc}") from exc
            dt = snapshots.open_table(table_uri)
            assert dt is not None
            _drop_committed(dt)  # the ids are checked on the snapshot the commit is made on
            if not pending:
                return set()
        adds = [add_action(f.name, f.size, f.stats, modified_ms=f.modified_ms) for f in pending.values()]
        commit_files(dt, adds, once_ids=list(pending))
        return set(pending)

    try:
        return retry(attempt, table_uri)
    except BaseException:
        for f in pending.values():  # not committed: nothing may stay behind in the table's folder
            discard(f)
        raise
