"""Delta Lake storage: table locations, append, MERGE and the bookmarks that make work incremental.

`Lake` is the `lake` resource. All writes go through it, and every commit it makes goes through
`storage.delta_commit` (retries, the created-first race, once-ids, add-action statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypedDict, Unpack, cast

import dagster as dg
import narwhals as nw
import polars as pl
from deltalake import DeltaTable, write_deltalake
from pydantic import Field

from pos_lakehouse.storage import delta_files, duplicate_keys, partition_append, snapshots
from pos_lakehouse.storage.delta_commit import (
    ROW_GROUP_ROWS,
    Conflict,
    Pin,
    applied,
    commit_files,
    commit_properties,
    consumed,
    create_table,
    ensure_table,
    retry,
    writer_properties,
)
from pos_lakehouse.storage.delta_files import StagedFile
from pos_lakehouse.storage.interface import DeltaLakeBase, MergeSpec, Stale, Writer

if TYPE_CHECKING:  # pyarrow (and numpy with it) loads where a table is written, not with the definitions
    import pyarrow as pa


class PartitionAppend(TypedDict, total=False):
    """How an append of whole partitions is committed: the bookmarks it advances, the description and
    column descriptions of a table it creates, the writer it records, the snapshot it must land on."""

    bookmarks: Mapping[str, str] | None
    description: str | None
    column_descriptions: Mapping[str, str] | None
    writer: Writer | None
    pin: Pin | None


class Lake(dg.ConfigurableResource, DeltaLakeBase):
    """The medallion's storage root: `<root>/{bronze,silver,gold,quarantine}/...` as Delta tables."""

    root: str = Field(description="Data root: a local path or an object-store URI.")

    engine: ClassVar[str] = "polars"

    # ---- the engine-neutral interface the layers use (narwhals frames in and out) ---------------
    def read_ordered(self, uri: str, schema: pl.Schema) -> nw.LazyFrame:
        """`read`, plus each row's data file and position in it (`_file_path`, `_file_row`)."""
        dt = self.snapshot(uri)
        files = sorted(dt.file_uris()) if dt is not None else []
        if not files:
            return nw.from_native(pl.LazyFrame(schema={**schema, "_file_path": pl.String, "_file_row": pl.UInt32}))
        return nw.from_native(
            pl.scan_parquet(
                files,
                schema=schema,
                missing_columns="insert",
                extra_columns="ignore",
                include_file_paths="_file_path",
                row_index_name="_file_row",
            )
        )

    def read_added(self, uri: str, consumed: int | None) -> tuple[nw.LazyFrame | None, int | None]:
        """Rows of an append-only table's files added after version `consumed` (with `_file_path`,
        `_file_row`: the order rows were delivered in), and the version they reach."""
        files, version = self.files_added_since(uri, consumed)
        if not files:
            return None, version
        schema = self.scan(uri).collect_schema()
        lf = pl.scan_parquet(files, schema=schema, missing_columns="insert", include_file_paths="_file_path", row_index_name="_file_row")
        return nw.from_native(lf), version

    # ---- reading ------------------------------------------------------------------------
    @staticmethod
    def table(uri: str) -> DeltaTable | None:
        """A handle of the table's newest version to write through (None if there is no table)."""
        return snapshots.open_table(uri)

    @staticmethod
    def snapshot(uri: str) -> DeltaTable | None:
        """A shared, read-only handle of the table's newest version (None if there is no table):
        reads, never writes (`storage.snapshots`)."""
        return snapshots.latest(uri)

    def exists(self, uri: str) -> bool:
        return self.snapshot(uri) is not None

    def scan(self, uri: str, schema: pl.Schema | None = None) -> pl.LazyFrame:
        """Lazy scan of a table; an absent table reads as empty with `schema`."""
        dt = self.snapshot(uri)
        if dt is None:
            if schema is None:
                raise FileNotFoundError(f"no Delta table at {uri}")
            return pl.LazyFrame(schema=schema)
        return pl.scan_delta(dt)

    def row_count(self, uri: str) -> int:
        dt = self.snapshot(uri)
        return 0 if dt is None else pl.scan_delta(dt).select(pl.len()).collect().item()

    def version(self, uri: str) -> int | None:
        dt = self.snapshot(uri)
        return None if dt is None else dt.version()

    def files_at(self, uri: str, version: int) -> list[str]:
        dt = self.snapshot(uri)
        if dt is not None and dt.version() == version:
            return dt.file_uris()
        return DeltaTable(uri, version=version).file_uris()

    def commits(self, uri: str, limit: int) -> list[dict]:
        dt = self.snapshot(uri)
        return [] if dt is None else dt.history(limit=limit)

    # ---- writing ------------------------------------------------------------------------
    def writer_of(self, uri: str, writer: Writer | None = None) -> Writer | None:
        """The writer recorded with a commit to `uri`: the one given, else a silver table's own
        (`silver/<retailer>/<table>`, one stream per retailer and table), else none."""
        if writer is not None:
            return writer
        silver = self.uri("silver").rstrip("/") + "/"
        return Writer(uri[len(silver) :].strip("/")) if uri.startswith(silver) else None

    def pin(self, uri: str) -> Pin:
        """The table's newest snapshot, to decide a write on and commit it on (`Pin`)."""
        return Pin(uri, self.version(uri))

    @staticmethod
    def create_empty(uri: str, empty, *, partition_by: Sequence[str] | None = None, description: str | None = None) -> None:
        """Create the table with no rows (`empty`: an Arrow table carrying the schema); raises if it exists
        (`delta_commit.create_table`)."""
        create_table(uri, empty, partition_by=partition_by, description=description)

    def append(
        self,
        uri: str,
        data: pl.LazyFrame | pl.DataFrame,
        *,
        partition_by: Sequence[str] | None = None,
        bookmarks: Mapping[str, str] | None = None,
        description: str | None = None,
        writer: Writer | None = None,
        pin: Pin | None = None,
    ) -> None:
        """Append rows; streams a LazyFrame without collecting it.

        `partition_by` lays out a table this append creates; an existing table keeps its own
        partitioning (a table created before a layout change goes on as it was). With `pin` the
        append lands on that snapshot or raises `Stale` (`Pin`).
        """
        data = nw.to_native(data, pass_through=True)
        if isinstance(data, pl.DataFrame):
            data = data.lazy()
        exists = self.exists(uri)
        options = {
            "partition_by": list(partition_by) if partition_by and not exists else None,
            "commit_properties": commit_properties(bookmarks, "append", writer=self.writer_of(uri, writer)),
            "schema_mode": "merge",
            "writer_properties": writer_properties(),
        }
        if description and not exists:
            options["description"] = description
            options["name"] = Path(uri).name
        if pin is not None and exists:
            pin.commit(lambda table: data.sink_delta(table, mode="append", delta_write_options=options))
            return
        retry(lambda: data.sink_delta(uri, mode="append", delta_write_options=options), uri)

    @staticmethod
    def applied(uri: str, once_id: str, table: DeltaTable | None = None) -> bool:
        """Whether an `append_once` with this id has been committed to the table."""
        dt = table if table is not None else Lake.snapshot(uri)
        return dt is not None and applied(dt, once_id)

    def append_once(
        self,
        uri: str,
        data: pl.LazyFrame | pl.DataFrame,
        *,
        once_id: str,
        partition_by: Sequence[str] | None = None,
        bookmarks: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> bool:
        """Append rows unless a commit with `once_id` is already in the table; True if this call appended.

        Exactly once is enforced by the table, not by the look-up: the commit carries a Delta
        application transaction (`txn` action) with the id, and the check and the write use the
        same snapshot. If another writer commits the same id after that snapshot, delta-rs'
        conflict checker refuses this commit (`ConcurrentTransaction`: the winning commit holds a
        `txn` with an app id this one writes); the retry then sees the id and appends nothing.
        Concurrent appends of *different* ids do not conflict (blind appends).
        """
        if isinstance(data, pl.DataFrame):
            data = data.lazy()
        frame = data

        def attempt() -> bool:
            dt = self.table(uri)
            if dt is None:
                schema = frame.collect_schema()
                ensure_table(uri, lambda: pl.DataFrame(schema=schema).to_arrow(), partition_by=partition_by, description=description)
                dt = self.table(uri)
                if dt is None:
                    raise Conflict(f"{uri} is not there after its creation")
            if applied(dt, once_id):
                return False
            options: dict = {
                "partition_by": list(partition_by) if partition_by else None,
                "commit_properties": commit_properties(bookmarks, "append", [once_id]),
                "schema_mode": "merge",
                "writer_properties": writer_properties(),
            }
            # The DeltaTable object (not the URI) pins the write to the snapshot just checked.
            frame.sink_delta(dt, mode="append", delta_write_options=options)
            return True

        return retry(attempt, uri)

    def stage(
        self, uri: str, frame: pl.LazyFrame, exact_stats: Mapping[str, tuple[object, object]] | None = None, row_number: str | None = None
    ) -> StagedFile:
        """Stream `frame` into one new data file in the table's folder, not yet part of the table
        (`delta_files.write_data_file`); `commit_staged` adds it, `discard` removes it."""
        return delta_files.write_data_file(uri, frame, exact_stats, row_number)

    @staticmethod
    def discard(staged: StagedFile) -> None:
        """Remove a staged file that will not be committed."""
        delta_files.discard(staged)

    def commit_staged(self, uri: str, staged: Mapping[str, StagedFile], *, description: str | None = None) -> set[str]:
        """Commit staged files (keyed by once-id) in one commit, those whose id is not in the table
        yet; the ids this call committed (`delta_files.commit_once`)."""
        return delta_files.commit_once(uri, staged, description=description)

    def merge(self, uri: str, data: pl.DataFrame | pl.LazyFrame | nw.LazyFrame, **options) -> dict:
        """Upsert rows as `MergeSpec(**options)` says; creates the table on first write.

        Retries when another writer committed first.
        """
        spec = MergeSpec(**options)
        action_column, partition_by, bookmarks = spec.action_column, spec.partition_by, spec.bookmarks
        native = nw.to_native(data, pass_through=True)
        data = cast(pl.LazyFrame, native.lazy() if isinstance(native, pl.DataFrame) else native)  # Polars, wrapped or not
        if not self.exists(uri):
            first = data.filter(pl.col(action_column) == "upsert").drop(action_column) if action_column else data
            # The table is created empty (schema, column comments), then the rows stream in by
            # append, so a first load of millions of rows is never held in memory at once. When
            # another writer (another retailer's first gold run) created it first, this is a
            # MERGE into theirs like any later write.
            table = _with_column_comments(pl.DataFrame(schema=first.collect_schema()).to_arrow(), spec.column_descriptions or {})
            if retry(lambda: ensure_table(uri, lambda: table, partition_by=partition_by, description=spec.description), uri):
                retry(
                    lambda: first.sink_delta(
                        uri,
                        mode="append",
                        delta_write_options={
                            "partition_by": list(partition_by) if partition_by else None,
                            "commit_properties": commit_properties(bookmarks, "create", writer=self.writer_of(uri, spec.writer)),
                            "writer_properties": writer_properties(),
                        },
                    ),
                    uri,
                )
                return {"num_target_rows_inserted": self.row_count(uri), "num_target_rows_updated": 0}

        writer = self.writer_of(uri, spec.writer)

        def _do() -> dict:
            latest = self.table(uri) if writer is not None and writer.once else None
            if latest is not None and consumed(latest, writer):
                return {}  # another process published what this MERGE consumed: nothing to do
            merger = data.sink_delta(
                uri,
                mode="merge",
                delta_merge_options={
                    "predicate": spec.predicate,
                    "source_alias": "s",
                    "target_alias": "t",
                    "merge_schema": True,
                    "commit_properties": commit_properties(bookmarks, "merge", writer=writer),
                    "writer_properties": writer_properties(),
                },
            )
            assert merger is not None
            for kind, condition, values in spec.clauses(data.collect_schema().names()):
                if kind == "update_all":
                    merger = merger.when_matched_update_all()
                elif kind == "insert_all":
                    merger = merger.when_not_matched_insert_all()
                elif kind == "delete":
                    merger = merger.when_matched_delete(condition)
                elif kind == "update":
                    merger = merger.when_matched_update(values or {}, condition)
                elif kind == "insert":
                    merger = merger.when_not_matched_insert(values or {}, condition)
                else:
                    merger = merger.when_not_matched_by_source_delete(condition)
            return merger.execute()

        return retry(_do, uri)

    def append_partitions(
        self,
        uri: str,
        column: str,
        parts: Sequence[tuple[object, pl.LazyFrame | nw.LazyFrame]],
        **options: Unpack[PartitionAppend],
    ) -> bool:
        """Append (value of `column`, rows holding it) parts, each its own files, in one commit
        (creating the table, partitioned by `column`, if absent); streams like an unpartitioned
        write (`storage.partition_append`). False when the table's layout or schema does not allow
        it, or when `pin` went stale (`Pin`): the caller then writes the rows itself (a MERGE)."""
        frames = [(value, nw.to_native(rows, pass_through=True)) for value, rows in parts]
        frames = [(value, rows.lazy() if isinstance(rows, pl.DataFrame) else rows) for value, rows in frames]
        if not frames:
            return False
        return self._append_written(
            uri,
            column,
            (frames[0][1], [value for value, _ in frames]),
            lambda commit: partition_append.append_partitions(uri, column, frames, ROW_GROUP_ROWS, commit),
            options,
        )

    def _append_written(
        self,
        uri: str,
        column: str,
        sample: tuple[pl.LazyFrame, Sequence[object]],
        write: Callable[[Callable[[list], None]], object],
        options: PartitionAppend,
    ) -> bool:
        """Create the partitioned table if absent, check that `sample` (rows, partition values) fits its
        layout, then `write` the files and commit their add actions; False when it does not fit or the
        pin went stale (the written files were removed)."""
        rows, values = sample
        self._create_partitioned(uri, rows.collect_schema(), column, options.get("description"), options.get("column_descriptions"))
        table = self.snapshot(uri)
        if table is None or not partition_append.applicable(table, rows, column, values):
            return False
        bookmarks, writer, pin = options.get("bookmarks"), options.get("writer"), options.get("pin")
        try:
            write(lambda actions: self._add_files(uri, actions, column, bookmarks, writer, pin))
        except Stale:
            return False
        return True

    def _add_files(
        self, uri: str, actions: list, column: str, bookmarks: Mapping[str, str] | None, writer: Writer | None, pin: Pin | None
    ) -> None:
        """Commit data files already written into the table's partition directories (add actions), in one append
        (on `pin`'s snapshot when given)."""
        writer = self.writer_of(uri, writer)
        if pin is not None:
            pin.commit(lambda table: commit_files(table, actions, partition_by=[column], bookmarks=bookmarks, writer=writer), writer)
            return

        def commit() -> None:
            table = self.table(uri)
            assert table is not None
            commit_files(table, actions, partition_by=[column], bookmarks=bookmarks, writer=writer)

        retry(commit, uri)

    def _create_partitioned(
        self, uri: str, schema: pl.Schema, column: str, description: str | None, column_descriptions: Mapping[str, str] | None
    ) -> None:
        """Create the table empty, partitioned by `column`, unless it exists (or another writer creates it first)."""
        if self.exists(uri):
            return
        empty = _with_column_comments(pl.DataFrame(schema=schema).to_arrow(), column_descriptions or {})
        retry(lambda: ensure_table(uri, lambda: empty, partition_by=[column], description=description), uri)

    def append_by_partition(
        self,
        uri: str,
        column: str,
        data: pl.DataFrame | pl.LazyFrame | nw.LazyFrame,
        **options: Unpack[PartitionAppend],
    ) -> bool:
        """Append rows in memory to a table partitioned by `column` alone (creating it so if absent):
        one Parquet file per partition value, written by Polars, added in one commit
        (`partition_append.write_partition_files`). False when the table's layout or schema does not
        allow it, a row has no partition value, or `pin` went stale (`Pin`): the caller then writes the
        rows itself (a MERGE where it pinned)."""
        frame = nw.to_native(data, pass_through=True)
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        if frame.is_empty() or frame[column].null_count():
            return False
        return self._append_written(
            uri,
            column,
            (frame.lazy(), [str(v) for v in frame[column].unique().to_list()]),
            lambda commit: partition_append.write_partition_files(uri, column, frame, ROW_GROUP_ROWS, commit),
            options,
        )

    def commit_bookmarks(self, uri: str, bookmarks: Mapping[str, str], writer: Writer | None = None) -> None:
        """Record bookmarks with an empty commit-less write when there was nothing to merge."""
        dt = self.snapshot(uri)
        if dt is None:
            return
        empty = pl.DataFrame(schema=pl.Schema(dt.schema().to_arrow()))
        properties = commit_properties(bookmarks, "bookmark", writer=self.writer_of(uri, writer))
        retry(lambda: write_deltalake(uri, empty.to_arrow(), mode="append", commit_properties=properties), uri)

    def remove_duplicate_keys(
        self, uri: str, keys: Sequence[str], *, rewrite_by: str, scope: tuple[str, str] | None = None, writer: Writer | None = None
    ) -> int:
        """Leave one row per key (the newest `_updated_at`) where the table holds a key twice; the number
        of rows removed (`storage.duplicate_keys`)."""
        properties = commit_properties(None, "remove duplicate keys", writer=self.writer_of(uri, writer))
        return duplicate_keys.remove(uri, keys, rewrite_by=rewrite_by, scope=scope, commit_properties=properties)


def _with_column_comments(table: pa.Table, comments: Mapping[str, str]) -> pa.Table:
    """Column descriptions travel as Delta column metadata (`comment`), as Spark and Unity Catalog read them."""
    import pyarrow as pa

    fields = [f.with_metadata({"comment": comments[f.name]}) if f.name in comments else f for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
