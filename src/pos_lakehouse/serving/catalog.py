"""The gold catalog: every gold table with its description, columns, partitioning, rows per retailer and last update.

Read from the Delta tables themselves (table description and column `comment` metadata, the
log's latest commit), so it shows what analysts will actually find; a table no retailer has fed
yet is listed from the canonical model and marked as not created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from pos_lakehouse.layers.gold import GOLD_TABLES, PARTITION_COLUMN
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical


@dataclass
class ColumnInfo:
    name: str
    type: str
    description: str


@dataclass
class RetailerRows:
    data_provider_code: str
    rows: int
    last_updated: datetime | None


@dataclass
class TableInfo:
    name: str
    uri: str
    description: str
    exists: bool
    partition_columns: list[str]
    columns: list[ColumnInfo]
    delta_version: int | None = None
    last_update: datetime | None = None
    retailers: list[RetailerRows] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.retailers)


def describe_table(lake: Lake, name: str) -> TableInfo:
    table = canonical.TABLES[name]
    uri = lake.gold(name)
    dt = lake.snapshot(uri)
    if dt is None:
        return TableInfo(
            name=name,
            uri=uri,
            description=table.description,
            exists=False,
            partition_columns=[PARTITION_COLUMN],
            columns=[ColumnInfo(c.name, str(c.dtype), c.description) for c in table.columns],
        )
    meta = dt.metadata()
    schema = pl.scan_delta(dt).collect_schema()
    comments = {f.name: (f.metadata or {}).get("comment") for f in dt.schema().fields}
    canonical_desc = {c.name: c.description for c in table.columns}
    columns = [ColumnInfo(col, str(dtype), comments.get(col) or canonical_desc.get(col, "")) for col, dtype in schema.items()]
    last_commit = dt.history(1)[0]
    per_retailer = (
        pl.scan_delta(dt)
        .group_by(PARTITION_COLUMN)
        .agg(pl.len().alias("rows"), pl.col("_updated_at").max().alias("last_updated"))
        .sort(PARTITION_COLUMN)
        .collect()
    )
    return TableInfo(
        name=name,
        uri=uri,
        description=meta.description or table.description,
        exists=True,
        partition_columns=list(meta.partition_columns),
        columns=columns,
        delta_version=dt.version(),
        last_update=datetime.fromtimestamp(last_commit["timestamp"] / 1000, tz=UTC),
        retailers=[RetailerRows(code, rows, last) for code, rows, last in per_retailer.iter_rows()],
    )


def gold_catalog(lake: Lake, tables: list[str] | tuple[str, ...] = GOLD_TABLES) -> list[TableInfo]:
    return [describe_table(lake, name) for name in tables]


def _ts(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(catalog: list[TableInfo], names: dict[str, str] | None = None) -> str:
    """The catalog as Markdown; `names` maps data provider codes to retailer names for readability."""
    names = names or {}
    out = ["# Gold catalog", ""]
    out += ["| table | rows | retailers | partition column | last update |", "| --- | ---: | ---: | --- | --- |"]
    for t in catalog:
        out.append(
            f"| [{t.name}](#{t.name}) | {t.rows:,} | {len(t.retailers)} | {', '.join(t.partition_columns)} | "
            f"{_ts(t.last_update) if t.exists else 'not created yet'} |"
        )
    for t in catalog:
        out += ["", f"## {t.name}", "", t.description, ""]
        out.append(f"- location: `{t.uri}`")
        out.append(f"- partition column: `{', '.join(t.partition_columns)}`")
        if t.exists:
            out.append(f"- Delta version {t.delta_version}, last update {_ts(t.last_update)}")
            out.append(f"- secure view: `{t.name}` (`pos-lakehouse query --as USER`)")
        else:
            out.append("- not created yet: no retailer has published this table")
        out += ["", "| retailer | data_provider_code | rows | last updated |", "| --- | --- | ---: | --- |"]
        for r in t.retailers:
            out.append(f"| {names.get(r.data_provider_code, '-')} | {r.data_provider_code} | {r.rows:,} | {_ts(r.last_updated)} |")
        if not t.retailers:
            out.append("| - | - | 0 | - |")
        out += ["", "| column | type | description |", "| --- | --- | --- |"]
        out += [f"| `{c.name}` | {_cell(c.type)} | {_cell(c.description)} |" for c in t.columns]
    return "\n".join(out) + "\n"
