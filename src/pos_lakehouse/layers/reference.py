"""Corporate reference data (product master, site master, FX rates): loading files, and the enrichment that uses them.

The files are read like a retailer's (`ingest/readers.py`: csv, parquet, excel, json lines,
json; the same `format` block with separators, decimal comma and date formats) and mapped to
the canonical reference columns below by a YAML column mapping (`defs/reference/defs.yaml`).
A file that breaks a rule (unreadable, a mapped column missing, a value that does not parse,
an ambiguous duplicate key) is rejected as a whole and quarantined with its reason: loading the
rest of a master would silently strip enrichment from the rows left out, so the table keeps
its previous content instead.

Enrichment is a left join: a retailer row without a corporate match keeps null `corp_*`
columns and is counted, never dropped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import narwhals as nw
import polars as pl
from pydantic import Field

from pos_lakehouse.ingest.readers import DeliveryError, read_raw
from pos_lakehouse.retailer import FileFormat, Model, ReadLimits
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform.mapping import ORDER_COLUMNS, normalize_name

REFERENCE_TABLES = {
    "product_master": {
        "key": "gtin",
        "schema": {
            "gtin": pl.String,
            "corp_product_code": pl.String,
            "corp_product_name": pl.String,
            "corp_brand": pl.String,
            "corp_category": pl.String,
        },
    },
    "site_master": {
        "key": "global_location_number",
        "schema": {
            "global_location_number": pl.String,
            "corp_site_code": pl.String,
            "corp_customer": pl.String,
            "corp_sales_region": pl.String,
        },
    },
    "fx_rates": {
        "key": None,
        "schema": {"date": pl.Date, "currency": pl.String, "usd_per_unit": pl.Float64},
    },
}
# What identifies a row of each table: a file listing one key twice must say which row wins.
ROW_KEYS = {"product_master": ["gtin"], "site_master": ["global_location_number"], "fx_rates": ["date", "currency"]}
# Columns a file must have (after mapping); the other corporate attributes may be absent (null).
REQUIRED = {"product_master": ["gtin"], "site_master": ["global_location_number"], "fx_rates": ["date", "currency", "usd_per_unit"]}
# A master may carry the date each row last changed: of rows sharing a key, the latest wins.
# It only decides between rows while loading and is not stored (silver joins every stored column).
UPDATED_AT = "updated_at"
REJECTED_OWNER = "_corporate"  # quarantine/<owner>/: where rejected reference files are kept
_MAX_ROWS_QUOTED = 5


class ReferenceSource(Model):
    """Where one corporate reference table comes from: which files, how they are encoded, how their columns map."""

    match: str = Field(
        description="Glob matched against file names in the corporate landing folder, e.g. `product_master*.parquet`. "
        "Several matching files load in name order."
    )
    format: FileFormat = Field(
        default_factory=FileFormat,
        description="How the files are encoded, as for a retailer's files: type (csv, parquet, excel, jsonl, json), "
        "separator, decimal comma, encoding, date formats, ...",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Source column -> canonical column, e.g. `EAN: gtin`, matched case- and space-insensitively. "
        "Source columns already named canonically need no entry; unmapped other columns are ignored. Masters may map a "
        "change date to `updated_at`: of rows sharing a key, the latest wins.",
    )
    mode: Literal["replace", "upsert"] = Field(
        default="replace",
        description="`replace`: each file is the whole table (a master export). `upsert`: each file adds or corrects "
        "rows by key and keeps the others (e.g. a daily FX file holding only the new rates).",
    )
    limits: ReadLimits = Field(default_factory=ReadLimits, description="Size, expansion, line-length and column bounds on each file.")

    def matches(self, file_name: str) -> bool:
        return fnmatch.fnmatch(Path(file_name).name.lower(), self.match.lower())

    def check_targets(self, table: str) -> None:
        """Every mapping target is a column of the table; raises ValueError naming the wrong ones."""
        allowed = list(REFERENCE_TABLES[table]["schema"]) + ([UPDATED_AT] if REFERENCE_TABLES[table]["key"] else [])
        wrong = [t for t in self.columns.values() if t not in allowed]
        if wrong:
            raise ValueError(f"{table}.columns maps to {wrong}, which are not {table} columns; allowed: {', '.join(allowed)}")
        targets = list(self.columns.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"{table}.columns maps several source columns to {twice}")


def default_source(table: str) -> ReferenceSource:
    """The layout the demo generator writes: `<table>.csv` with the canonical column names."""
    return ReferenceSource(match=f"{table}.csv")


def reference_uri(lake: LakeIO, name: str) -> str:
    return lake.uri("reference", name)


# ---- loading one file ---------------------------------------------------------------------------


def _map_columns(columns: list[str], source: ReferenceSource, table: str, name: str) -> dict[str, str]:
    """File column -> canonical column; a mapped column the file lacks, or a missing required one, is an error."""
    by_norm = {normalize_name(c): c for c in columns}
    renames: dict[str, str] = {}
    absent = []
    for src, target in source.columns.items():
        col = by_norm.get(normalize_name(src))
        if col is None:
            absent.append(f"{src} -> {target}")
        else:
            renames[col] = target
    if absent:
        raise DeliveryError(
            name,
            "missing_column",
            f"mapped column(s) {absent} not found; the file has {columns} (check `format` and `{table}.columns` in "
            "defs/reference/defs.yaml)",
        )
    wanted = list(REFERENCE_TABLES[table]["schema"]) + ([UPDATED_AT] if REFERENCE_TABLES[table]["key"] else [])
    for target in wanted:
        col = by_norm.get(normalize_name(target))
        if target not in renames.values() and col is not None and col not in renames:
            renames[col] = target
    missing = [c for c in REQUIRED[table] if c not in renames.values()]
    if missing:
        raise DeliveryError(
            name,
            "missing_column",
            f"required column(s) {missing} not found; the file has {columns} (map them under `{table}.columns` in "
            "defs/reference/defs.yaml)",
        )
    return renames


def _row_rules(table: str, schema: dict) -> list[pl.Expr]:
    """Rule messages per typed row (null where the row keeps the rule), beyond parsing and presence."""
    if table == "fx_rates":
        return [pl.when(pl.col("usd_per_unit") <= 0).then(pl.format("usd_per_unit: {} is not a positive rate", pl.col("usd_per_unit")))]
    return []


def _missing(columns: list[str]) -> list[pl.Expr]:
    """Required values judged on the delivered text, before typing (an unparseable value is not also missing)."""
    return [
        pl.when(pl.col(c).is_null() | (pl.col(c).str.strip_chars() == ""))
        .then(pl.lit(f"{c}: required value is missing"))
        .alias(f"_missing_{c}")
        for c in columns
    ]


def read_reference_file(path: Path, table: str, source: ReferenceSource, display_name: str | None = None) -> pl.DataFrame:
    """A delivered reference file as the table's canonical columns, one row per key; raises `DeliveryError`
    naming the file, the row and the rule when the file cannot be taken as a whole."""
    from pos_lakehouse.engines.polars import parse_columns

    name = display_name or path.name
    fmt = source.format
    with tempfile.TemporaryDirectory(prefix="pos_lakehouse_reference_") as work:
        raw = read_raw(path, fmt, display_name=name, limits=source.limits, workdir=Path(work))
        columns = raw.collect_schema().names()
        renames = _map_columns(columns, source, table, name)
        raw = raw.select(list(renames)).rename(renames).collect()
    if raw.height == 0:
        raise DeliveryError(name, "header_only", "the file has a header but no data rows")
    schema = REFERENCE_TABLES[table]["schema"]
    # Data type instances: the shared parser tells numbers from dates by instance.
    types = {c: dtype() for c, dtype in {**schema, UPDATED_AT: pl.Date}.items() if c in raw.columns}
    required = [c for c in REQUIRED[table] if c in types]
    raw = raw.with_columns(_missing(required))
    parsed = (
        parse_columns(nw.from_native(raw.lazy()), types, fmt.decimal_comma, fmt.date_formats, "_parse_")
        .to_native()
        .with_row_index("_row", offset=1)
    )
    errors = [pl.col(f"_missing_{c}") for c in required] + [pl.col(f"_parse_{c}") for c in types] + _row_rules(table, types)
    checked = parsed.with_columns(pl.concat_str(errors, separator="; ", ignore_nulls=True).alias("_errors")).collect()
    bad = checked.filter(pl.col("_errors") != "")
    if bad.height:
        quoted = "; ".join(f"data row {r}: {e}" for r, e in bad.select("_row", "_errors").head(_MAX_ROWS_QUOTED).iter_rows())
        more = f"; and {bad.height - _MAX_ROWS_QUOTED} more" if bad.height > _MAX_ROWS_QUOTED else ""
        raise DeliveryError(name, "invalid_rows", f"{bad.height} of {checked.height} row(s) break a rule: {quoted}{more}")
    frame = checked.select(
        "_row",
        *[pl.col(c) if c in types else pl.lit(None, d).alias(c) for c, d in schema.items()],
        *([UPDATED_AT] if UPDATED_AT in types else []),
    )
    return _one_row_per_key(frame, table, name)


def _one_row_per_key(frame: pl.DataFrame, table: str, name: str) -> pl.DataFrame:
    """Identical repeats collapse; of differing rows for one key the latest `updated_at` wins; a tie is an error."""
    keys = ROW_KEYS[table]
    values = list(REFERENCE_TABLES[table]["schema"])
    if UPDATED_AT in frame.columns:
        frame = frame.filter(pl.col(UPDATED_AT) == pl.col(UPDATED_AT).max().over(keys))
    distinct = frame.unique(values, keep="first", maintain_order=True)
    clash = distinct.filter(pl.len().over(keys) > 1)
    if clash.height:
        first = clash.group_by(keys, maintain_order=True).agg(pl.col("_row")).row(0)
        key_text = ", ".join(f"{k} {v}" for k, v in zip(keys, first[:-1], strict=True))
        rows = " and ".join(map(str, first[-1][:2]))
        hint = (
            f" with the same {UPDATED_AT}" if UPDATED_AT in frame.columns else f" (map a change date to `{UPDATED_AT}` to pick the latest)"
        )
        raise DeliveryError(
            name,
            "duplicate_key",
            f"{key_text} is listed with different values in data rows {rows}{hint}; {clash.select(keys).unique().height} key(s) affected",
        )
    return distinct.sort("_row").select(values)


def write_reference(lake: LakeIO, table: str, frame: pl.DataFrame, mode: str = "replace") -> int:
    """Replace the table with `frame`, or (`upsert`) add/correct its rows by key; returns the table's row count."""
    from deltalake import write_deltalake

    uri = reference_uri(lake, table)
    if mode == "upsert" and lake.exists(uri):
        kept = lake.read(uri, _schema(table)).to_native().collect().join(frame.select(ROW_KEYS[table]), on=ROW_KEYS[table], how="anti")
        frame = pl.concat([kept, frame], how="vertical_relaxed").sort(ROW_KEYS[table])
    write_deltalake(uri, frame.to_arrow(), mode="overwrite", schema_mode="overwrite")
    return frame.height


def load_reference_file(lake: LakeIO, name: str, path: Path, source: ReferenceSource | None = None) -> int:
    """Read, check and write one reference file (the default layout unless `source` says otherwise); returns the row count."""
    source = source or default_source(name)
    return write_reference(lake, name, read_reference_file(path, name, source), source.mode)


# ---- loading what landed, with quarantine -------------------------------------------------------


@dataclass
class ReferenceOutcome:
    """What happened to one delivered reference file."""

    file: str
    status: str  # loaded | rejected | known_rejected (same bytes rejected before) | unmatched
    table: str | None = None
    delivery_id: str | None = None
    rows: int = 0
    reason: str | None = None
    detail: str | None = None

    def describe(self) -> str:
        if self.status == "rejected":
            return f"{self.file}: rejected ({self.reason}): {self.detail}; reference.{self.table} keeps its previous content"
        if self.status == "known_rejected":
            return f"{self.file}: rejected before ({self.reason}), in quarantine; not read again"
        if self.status == "unmatched":
            return f"{self.file}: matches no reference source; ignored"
        return f"{self.file}: {self.rows} rows -> reference.{self.table}"


def source_for(sources: dict[str, ReferenceSource], file_name: str) -> str | None:
    """The reference table whose `match` takes this file (the first in table order)."""
    return next((table for table, source in sources.items() if source.matches(file_name)), None)


def load_reference_files(
    lake, landing, folder: str, sources: dict[str, ReferenceSource], names: list[str], now: datetime | None = None
) -> list[ReferenceOutcome]:
    """Load the named files of the corporate landing folder in name order; reject bad ones to quarantine.

    A rejected file changes nothing: its table keeps what the last good file loaded, and the
    other files (and every retailer) go on.
    """
    from pos_lakehouse.ingest.landing import content_hash
    from pos_lakehouse.layers.bronze import FileOutcome, previous_rejection, record_rejection

    now = now or datetime.now(UTC)
    outcomes = []
    for file_name in sorted(names):
        table = source_for(sources, file_name)
        if table is None:
            outcomes.append(ReferenceOutcome(file_name, "unmatched"))
            continue
        try:
            with landing.local_copy(folder, file_name) as path:
                # These bytes read under this source spec: a corrected mapping in the YAML reads them afresh.
                spec_hash = hashlib.sha256(sources[table].model_dump_json().encode()).hexdigest()[:16]
                delivery_id = f"{content_hash(path)}.{spec_hash}"
                before = previous_rejection(lake, REJECTED_OWNER, delivery_id)
                if before is not None:
                    detail = f"same bytes as {before['file']!r}, rejected at {before['rejected_at']}"
                    outcomes.append(
                        ReferenceOutcome(file_name, "known_rejected", table, delivery_id, reason=before["reason"], detail=detail)
                    )
                    continue
                try:
                    rows = write_reference(lake, table, read_reference_file(path, table, sources[table], file_name), sources[table].mode)
                except DeliveryError as exc:
                    outcome = ReferenceOutcome(file_name, "rejected", table, delivery_id, reason=exc.reason, detail=exc.detail)
                except pl.exceptions.PolarsError as exc:
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    outcome = ReferenceOutcome(file_name, "rejected", table, delivery_id, reason="corrupt", detail=detail)
                else:
                    outcomes.append(ReferenceOutcome(file_name, "loaded", table, delivery_id, rows=rows))
                    continue
                record = FileOutcome(file_name, "rejected", table=f"reference.{table}", delivery_id=delivery_id, reason=outcome.reason)
                record.detail = outcome.detail
                record_rejection(lake, REJECTED_OWNER, record, path, now)
                outcome.detail = record.detail
                outcomes.append(outcome)
        except FileNotFoundError as exc:  # moved or deleted between the sensor's listing and this run
            outcomes.append(ReferenceOutcome(file_name, "rejected", table, reason="not_found", detail=str(exc)))
    return outcomes


# ---- enrichment ---------------------------------------------------------------------------------


def _schema(name: str) -> pl.Schema:
    return pl.Schema(REFERENCE_TABLES[name]["schema"])


def reference_frame(lake: LakeIO, name: str) -> nw.LazyFrame:
    return lake.read(reference_uri(lake, name), _schema(name))


def enrich_dimension(frame: nw.LazyFrame, lake: LakeIO, table_name: str) -> nw.LazyFrame:
    """Add `corp_*` columns from the corporate master on GTIN (products) or GLN (stores).

    A GTIN/GLN listed twice in the master takes its first row.
    """
    name = "product_master" if table_name == "prod_dim" else "site_master"
    key = REFERENCE_TABLES[name]["key"]
    master = (
        lake.read_ordered(reference_uri(lake, name), _schema(name))
        .unique([key], keep="first", order_by=list(ORDER_COLUMNS))
        .drop(*ORDER_COLUMNS)
    )
    corp_cols = [c for c in master.collect_schema().names() if c != key]
    have = frame.collect_schema().names()
    frame = frame.drop(*[c for c in corp_cols if c in have])
    return frame.join(master, on=key, how="left")
