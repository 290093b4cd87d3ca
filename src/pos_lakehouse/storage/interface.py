"""The one storage interface the layers use; `storage.lake.Lake` (delta-rs, Polars) and
`spark.lake.SparkLake` (delta-spark) implement it. Frames cross it as narwhals LazyFrames.

What does not depend on the Delta library (layout, incremental reads, bookmarks, MERGE planning)
is written here once; each Lake supplies only its library's calls."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import narwhals as nw

from pos_lakehouse.storage.layout import MedallionLayout

BOOKMARK_PREFIX = "pos_lakehouse.bookmark."


class LakeIO(Protocol):
    root: str
    engine: ClassVar[str]

    def uri(self, layer: str, *parts: str) -> str: ...
    def bronze(self, retailer: str, table: str) -> str: ...
    def silver(self, retailer: str, table: str) -> str: ...
    def gold(self, table: str) -> str: ...
    def quarantine(self, retailer: str, *parts: str) -> str: ...
    def exists(self, uri: str) -> bool: ...
    def row_count(self, uri: str) -> int: ...
    def bookmarks(self, uri: str) -> dict[str, str]: ...
    def read(self, uri: str, schema: Any = None) -> nw.LazyFrame: ...
    def read_ordered(self, uri: str, schema: Any) -> nw.LazyFrame: ...
    def read_added(self, uri: str, consumed: int | None) -> tuple[nw.LazyFrame | None, int | None]: ...
    def append(
        self,
        uri: str,
        data: Any,
        *,
        partition_by: Sequence[str] | None = None,
        bookmarks: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> None: ...
    def merge(self, uri: str, data: Any, *, keys: Sequence[str], **options: Any) -> dict: ...
    def version(self, uri: str) -> int | None: ...
    def pin(self, uri: str) -> Any: ...
    def remove_duplicate_keys(
        self, uri: str, keys: Sequence[str], *, rewrite_by: str, scope: tuple[str, str] | None = None, writer: Any = None
    ) -> int | None: ...
    def append_partitions(
        self,
        uri: str,
        column: str,
        parts: Sequence[tuple[Any, Any]],
        *,
        bookmarks: Mapping[str, str] | None = None,
        description: str | None = None,
        column_descriptions: Mapping[str, str] | None = None,
    ) -> bool: ...
    def append_by_partition(
        self,
        uri: str,
        column: str,
        data: Any,
        *,
        bookmarks: Mapping[str, str] | None = None,
        description: str | None = None,
        column_descriptions: Mapping[str, str] | None = None,
    ) -> bool: ...
    def commit_bookmarks(self, uri: str, bookmarks: Mapping[str, str]) -> None: ...


class Stale(Exception):
    """A write pinned to a snapshot (`Lake.pin`) lost to another commit of the same writer after it:
    what it was decided on no longer holds, so it is not retried as it is (the caller MERGEs)."""


@dataclass(frozen=True)
class Writer:
    """Who commits to a table, recorded in each of its commits as a Delta application transaction.

    `app` names the writer's stream (one per retailer and table: `silver/<retailer>/<table>`,
    `gold/<table>/<data_provider_code>`), `version` what the commit consumed (for gold the silver
    table version read; None: a sequence, the commit's time in ms). Two commits of the same `app`
    made on the same snapshot cannot both land: delta-rs' conflict check refuses the second
    (`ConcurrentTransaction`), so a second process doing the same work never publishes it twice.
    With `once`, a commit whose `version` the table already records is skipped: that work is in.
    """

    app: str
    version: int | None = None
    once: bool = False


@dataclass(frozen=True)
class MergeSpec:
    """What a MERGE does, for both Lakes (each turns `clauses` into its Delta library's calls).

    - `keys`: source and target rows match on these; `restrict`: an extra SQL condition on the
      target (`t.`) that prunes files;
    - `update_columns`: matched rows update only these columns (a file that carries some
      measures must not null the others);
    - `action_column`: a source column saying per row `upsert`, `clear` (set `clear_columns`
      from the source, i.e. to null) or `delete` (remove the target row); never stored;
    - `delete_unmatched`: a target (`t.`) condition; target rows meeting it that no source row
      matches are deleted (a republished range replaces what was there).
    """

    keys: Sequence[str]
    restrict: str | None = None
    partition_by: Sequence[str] | None = None
    bookmarks: Mapping[str, str] | None = None
    description: str | None = None
    column_descriptions: Mapping[str, str] | None = None
    update_columns: Sequence[str] | None = None
    action_column: str | None = None
    clear_columns: Sequence[str] | None = None
    delete_unmatched: str | None = None
    writer: Writer | None = None  # recorded with the commit (`Writer`); a Lake without transactions ignores it

    @property
    def predicate(self) -> str:
        on = " AND ".join(f"t.{k} = s.{k}" for k in self.keys)
        return f"({self.restrict}) AND {on}" if self.restrict else on

    def clauses(self, source_columns: Sequence[str]) -> list[tuple[str, str | None, dict[str, str] | None]]:
        """(`update_all` | `insert_all` | `delete` | `update` | `insert` | `delete_unmatched`, condition, column -> value)."""
        out: list[tuple[str, str | None, dict[str, str] | None]] = []
        action = self.action_column
        if action is None and self.update_columns is None:
            out += [("update_all", None, None), ("insert_all", None, None)]
        else:
            cols = [c for c in source_columns if c != action]
            upsert = f"s.{action} = 'upsert'" if action else None
            if action:
                out.append(("delete", f"s.{action} = 'delete'", None))
                if self.clear_columns:
                    out.append(("update", f"s.{action} = 'clear'", {c: f"s.{c}" for c in self.clear_columns}))
            updated = [c for c in (self.update_columns or cols) if c in cols]
            out.append(("update", upsert, {c: f"s.{c}" for c in updated}))
            out.append(("insert", upsert, {c: f"s.{c}" for c in cols}))
        if self.delete_unmatched:
            out.append(("delete_unmatched", self.delete_unmatched, None))
        return out

    def sql(self, target: str, source: str, source_columns: Sequence[str]) -> str:
        """The same MERGE as SQL text, for a Lake whose Delta library merges through SQL."""
        text = f"MERGE INTO {target} t USING {source} s ON {self.predicate}"
        for kind, condition, values in self.clauses(source_columns):
            values = values or {}
            when = {"delete_unmatched": "NOT MATCHED BY SOURCE", "insert": "NOT MATCHED", "insert_all": "NOT MATCHED"}.get(kind, "MATCHED")
            then = {
                "update_all": "UPDATE SET *",
                "insert_all": "INSERT *",
                "update": "UPDATE SET " + ", ".join(f"t.{sql_name(c)} = {v}" for c, v in values.items()),
                "insert": f"INSERT ({', '.join(map(sql_name, values))}) VALUES ({', '.join(values.values())})",
            }.get(kind, "DELETE")
            text += f" WHEN {when}{f' AND {condition}' if condition else ''} THEN {then}"
        return text


def sql_name(name: str) -> str:
    """A name quoted for SQL (column names may hold spaces, dots or back-ticks)."""
    return "`" + name.replace("`", "``") + "`"


def commit_metadata(bookmarks: Mapping[str, str] | None, operation: str) -> dict[str, str]:
    """What a commit records: the operation and the bookmarks it advances (`pos_lakehouse.bookmark.*`)."""
    return {"pos_lakehouse.operation": operation, **{BOOKMARK_PREFIX + k: str(v) for k, v in (bookmarks or {}).items()}}


def bookmarks_of_commit(commit: Mapping) -> dict[str, str]:
    """Bookmarks of one commitInfo. delta-rs writes them as top-level fields; Spark can only write
    `userMetadata`, so it writes a JSON object of the same keys there; where a session may not set
    that for a MERGE (Databricks serverless), Spark sets them as table properties in a commit of
    their own, whose parameters list them. Each form is read."""
    fields = dict(commit)
    for found in (commit.get("userMetadata"), _set_properties(commit)):
        if isinstance(found, str) and found.startswith("{"):
            try:
                fields.update(json.loads(found))
            except ValueError:
                pass
    return {k[len(BOOKMARK_PREFIX) :]: str(v) for k, v in fields.items() if k.startswith(BOOKMARK_PREFIX)}


def _set_properties(commit: Mapping) -> str | None:
    """The properties a `SET TBLPROPERTIES` commit set, as the JSON text its parameters hold."""
    if commit.get("operation") != "SET TBLPROPERTIES":
        return None
    parameters = commit.get("operationParameters")
    return parameters.get("properties") if isinstance(parameters, Mapping) else None


class DeltaLakeBase(MedallionLayout):
    """Both Lakes' engine-neutral half; a Lake provides `scan`, `version(uri)` (None if absent),
    `files_at(uri, version)` (data file URIs) and `commits(uri, limit)` (commitInfo dicts, newest first)."""

    def read(self, uri: str, schema: Any = None) -> nw.LazyFrame:
        """A table's rows (conformed to `schema` when given); an absent table reads as empty."""
        return nw.from_native(self.scan(uri, schema))  # type: ignore[attr-defined]

    def files_added_since(self, uri: str, version: int | None) -> tuple[list[str], int | None]:
        """Data files of an append-only table added after `version`, and the table's current version."""
        current = self.version(uri)  # type: ignore[attr-defined]
        if current is None or version == current:
            return [], current
        files = set(self.files_at(uri, current))  # type: ignore[attr-defined]
        if version is not None and version >= 0:
            files -= set(self.files_at(uri, version))  # type: ignore[attr-defined]
        return sorted(files), current

    def pin(self, uri: str) -> Any:
        """The table's snapshot a decision is made on (e.g. "nothing stored here yet, append"), for a
        write that must land on that snapshot or not at all (`Lake`); None where the Lake cannot pin
        (its writes then land on whatever is newest)."""
        return None

    def remove_duplicate_keys(
        self, uri: str, keys: Sequence[str], *, rewrite_by: str, scope: tuple[str, str] | None = None, writer: Any = None
    ) -> int | None:
        """One row per key where a table holds a key twice (`Lake`); None where the Lake cannot tell."""
        return None

    def append_partitions(self, uri: str, column: str, parts: Sequence[tuple[Any, Any]], **options: Any) -> bool:
        """Append (partition value, rows) parts in one commit, where the Lake has a faster way than
        `append` (`Lake`: see `storage.partition_append`); False: the caller writes them itself."""
        return False

    def append_by_partition(self, uri: str, column: str, data: Any, **options: Any) -> bool:
        """Append rows to a table partitioned by `column`, one file per partition value in one commit,
        where the Lake has a faster way than `append` (`Lake`); False: the caller writes them itself."""
        return False

    def bookmarks(self, uri: str, max_commits: int = 1000) -> dict[str, str]:
        """Bookmarks (consumed upstream versions, watermarks) stored in the table's commits.

        The newest commit that mentions a key wins. Writers record only the keys they advanced,
        so two retailers committing to one gold table never overwrite each other's watermark.
        """
        marks: dict[str, str] = {}
        for commit in self.commits(uri, max_commits):  # type: ignore[attr-defined]
            for k, v in bookmarks_of_commit(commit).items():
                marks.setdefault(k, v)
        return marks
