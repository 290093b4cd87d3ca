"""The one storage interface the layers use; `storage.lake.Lake` (delta-rs, Polars) and
`spark.lake.SparkLake` (delta-spark) implement it. Frames cross it as narwhals LazyFrames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import narwhals as nw

BOOKMARK_PREFIX = "pos_lakehouse.bookmark."


class LakeIO(Protocol):
    root: str
    engine: str

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
    def commit_bookmarks(self, uri: str, bookmarks: Mapping[str, str]) -> None: ...


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
