"""Pulled deliveries (API pages, database chunks) land in bronze exactly as delivered files do.

Each page or chunk is one delivery: its rows become strings with the same metadata columns a
file gets (`_delivery_id`, `_source_file`, `_ingested_at`, `_row_number`, `data_provider_code`,
`secure_group_key`), so silver and gold treat them like any other bronze rows. The puller's
position (API cursor, database watermark) is committed *in the same Delta commit* as the rows
(commit metadata, read back with `Lake.bookmarks`): a crash between two pages either kept a
page and its position, or neither — never a page without its position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl

from pos_lakehouse.ingest.lineage import delivery_in_bronze, with_lineage
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake

STATE_BOOKMARK = "pull.state"


@dataclass
class PullOutcome:
    """What one pull did to one bronze table; becomes asset metadata."""

    table: str
    source: str
    deliveries: int = 0  # pages or chunks appended
    rows: int = 0
    duplicates_skipped: int = 0  # pages/chunks (or re-read rows) already in bronze
    requests: int = 0
    state_before: dict[str, Any] = field(default_factory=dict)
    state_after: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.table} <- {self.source}: {self.rows} rows in {self.deliveries} deliveries"
            f" ({self.duplicates_skipped} already in bronze), position {self.state_after or 'start'}"
        )


def as_text(value: Any) -> str | None:
    """Raw values become strings as a file would hold them (ISO dates, plain decimals)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ") if value.tzinfo is None else value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def records_frame(records: list[dict[str, Any]], columns: list[str] | None = None) -> pl.DataFrame:
    """Rows of raw values -> a frame of strings, columns in first-seen order."""
    if columns is None:
        columns = []
        for r in records:
            for k in r:
                if k not in columns:
                    columns.append(k)
    data = {c: [as_text(r.get(c)) for r in records] for c in columns}
    return pl.DataFrame(data, schema={c: pl.String for c in columns})


def delivery_id(*parts: str | bytes) -> str:
    """Deterministic id of a pulled page/chunk: the same request with the same content -> the same id."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\x00")
    return h.hexdigest()


def read_state(lake: Lake, uri: str) -> dict[str, Any]:
    """The puller's durable position, from the bronze table's newest bookmarked commit."""
    raw = lake.bookmarks(uri).get(STATE_BOOKMARK)
    return json.loads(raw) if raw else {}


def append_pulled(
    lake: Lake,
    spec: RetailerSpec,
    table: str,
    frame: pl.DataFrame,
    *,
    source: str,
    delivery: str,
    state: dict[str, Any],
) -> None:
    """Append one page/chunk with bronze metadata and commit the new position with it."""
    uri = lake.bronze(spec.name, table)
    now = datetime.now(UTC)  # per delivery, so later pages sort after earlier ones in silver
    rows = with_lineage(frame, spec, source, delivery, now)
    lake.append(
        uri,
        rows,
        bookmarks={STATE_BOOKMARK: json.dumps(state, sort_keys=True)},
        description=f"Raw `{table}` records pulled from {spec.name} ({spec.delivery.channel}), as delivered (strings).",
    )


def commit_state(lake: Lake, spec: RetailerSpec, table: str, state: dict[str, Any]) -> None:
    """Record a new position without rows (a page that was already in bronze, an empty last page)."""
    uri = lake.bronze(spec.name, table)
    if lake.exists(uri):
        lake.commit_bookmarks(uri, {STATE_BOOKMARK: json.dumps(state, sort_keys=True)})


def already_in_bronze(lake: Lake, spec: RetailerSpec, table: str, delivery: str) -> bool:
    return delivery_in_bronze(lake, lake.bronze(spec.name, table), delivery)
