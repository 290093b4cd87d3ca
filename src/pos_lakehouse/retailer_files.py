"""The file-kind part of a retailer specification: how one kind of delivered file is encoded, read
and dated, and which canonical tables its rows feed (`files:` in a retailer's YAML)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pos_lakehouse.retailer_model import CanonicalName, Model


class FileFormat(Model):
    """How a delivered file is encoded."""

    type: Literal["parquet", "csv", "excel", "jsonl", "json"] = Field(
        default="csv",
        description="File format: parquet, csv, excel (.xlsx), jsonl (JSON lines) or json (one document holding an array of records).",
    )
    record_path: str | None = Field(
        default=None,
        description="For `json`: dotted path to the array of records inside the document's object, e.g. `data.items`; "
        "null when the document itself is the array.",
    )
    separator: str = Field(default=",", description="CSV field separator.")
    quote_char: str | None = Field(default='"', description="CSV quote character; null disables quoting.")
    encoding: str = Field(default="utf-8", description="Text encoding of CSV/JSON files (utf-8, latin-1, cp1252, ...).")
    has_header: bool = Field(default=True, description="Whether the first CSV row holds column names.")
    skip_rows: int = Field(default=0, description="Rows to skip before the header (banners, titles).")
    decimal_comma: bool = Field(default=False, description="Numbers use a decimal comma (`1.234,56`).")
    date_formats: list[str] = Field(
        default_factory=lambda: ["%Y-%m-%d"],
        description="strftime formats tried in order to parse dates, e.g. `%d.%m.%Y`.",
    )
    sheet_name: str | None = Field(default=None, description="Excel sheet to read; the first sheet when null.")
    compression: Literal["none", "gzip", "zip", "infer"] = Field(
        default="infer", description="Compression of the file; `infer` decides from the suffix (.gz, .zip)."
    )


class ReadLimits(Model):
    """Bounds on what one delivered file may cost to read; a file beyond them is rejected, not read.

    Enforced while streaming (a decompression bomb is stopped after a few MB, not after 1 GB),
    so reading a hostile file needs bounded memory. The defaults suit daily POS files; raise
    them per retailer for genuinely large deliveries.
    """

    max_compressed_bytes: int = Field(default=2 << 30, description="Largest file accepted as delivered (on disk), in bytes.")
    max_decompressed_bytes: int = Field(default=4 << 30, description="Largest size a compressed (.gz, .zip) file may expand to, in bytes.")
    max_ratio: float = Field(
        default=100.0,
        description="Largest expansion ratio (decompressed / compressed) of a compressed file; text POS data packs 5-20x, "
        "a decompression bomb packs 1000x.",
    )
    max_line_bytes: int = Field(default=1 << 20, description="Longest line of a CSV/JSON-lines file, in bytes.")
    max_columns: int = Field(default=1000, description="Most columns a file may have.")


class ObservedOn(Model):
    """Where a snapshot file without a date column says which day it describes: its file name."""

    pattern: str = Field(
        description="Regular expression searched in the file name; its first group (or whole match) is the date, "
        r"e.g. `dim_products_(\d{8})`."
    )
    format: str = Field(default="%Y-%m-%d", description="strftime format of the captured date, e.g. `%Y%m%d`.")

    @model_validator(mode="after")
    def _compiles(self) -> ObservedOn:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"observed_on.pattern {self.pattern!r} is not a regular expression: {exc}") from exc
        return self

    def date_of(self, file_name: str):
        """The observation date a file name carries, or None when it carries none."""
        from datetime import datetime

        m = re.search(self.pattern, Path(file_name).name)
        if not m:
            return None
        try:
            return datetime.strptime(m.group(1) if m.groups() else m.group(0), self.format).date()
        except ValueError:
            return None


class FileSpec(Model):
    """One kind of file the retailer delivers, and which canonical tables its rows feed."""

    name: str = Field(description="Bronze table name for these files, e.g. `sales` or `pos_daily`.")
    match: str | None = Field(
        default=None,
        description="Glob matched against file names in the landing folder, e.g. `sales_*.csv` (file channels only; "
        "api/database retailers name their sources under `delivery.api` / `delivery.database`).",
    )
    holds: list[CanonicalName] = Field(
        description="Canonical tables this file feeds: a one-big-table file lists several (prod_dim, site_dim, store_day_fact)."
    )
    format: FileFormat = Field(default_factory=FileFormat, description="How the file is encoded.")
    replaces: Literal["site_days", "rows"] = Field(
        default="site_days",
        description="What a fact delivery restates: `site_days` (default) -- for every store and date it contains it "
        "replaces all earlier rows of that store and date (a product missing from the correction is removed); "
        "`rows` -- only the delivered rows are upserted (for retailers that split one store-day over several files).",
    )
    incremental: bool = Field(
        default=False,
        description='Files of this kind carry only what changed: an empty or header-only file means "nothing new" '
        "and is accepted. When false (default) such a file is rejected, because it must hold rows.",
    )
    observed_on: ObservedOn | None = Field(
        default=None,
        description="For dimension snapshots without a date column: read each file's observation date from its name "
        "(pattern and date format). Snapshots of one batch then apply in date order: the newest wins and every change "
        "becomes a version from its own date. Without it, undated snapshots are observed on their ingestion date.",
    )
    week_date: Literal["end", "start"] = Field(
        default="end",
        description="For files holding store_week_fact: whether a row's week date is the week's last day (`end`) or its "
        "first day (`start`); weeks are stored by their end date (the retailer's `week_ends_on`).",
    )
    misaligned_weeks: Literal["quarantine", "align"] = Field(
        default="quarantine",
        description="For files holding store_week_fact: a week date that is not on the retailer's week boundary is "
        "`quarantine`d (kept with its reason in rejected_rows) or `align`ed to the end of the week holding it.",
    )

    max_quarantined_share: float = Field(
        default=0.5,
        description="A run that quarantines more than this share of one file's rows fails (the good rows still load): "
        "most rows breaking a rule usually means a setting is wrong, not the data.",
    )

    @model_validator(mode="after")
    def _share(self) -> FileSpec:
        if not 0.0 <= self.max_quarantined_share <= 1.0:
            raise ValueError(f"max_quarantined_share {self.max_quarantined_share} is not a share between 0 and 1")
        return self

    def matches(self, file_name: str) -> bool:
        return self.match is not None and fnmatch.fnmatch(file_name.lower(), self.match.lower())
