"""The retailer specification: everything one `defs/retailers/<name>/defs.yaml` says.

These models are the contract between the YAML a data engineer writes and the pipeline;
every attribute carries a description that `dg` shows when scaffolding or checking YAML.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal

import dagster as dg
import yaml
from pydantic import Field, model_validator

CanonicalName = Literal["prod_dim", "site_dim", "store_day_fact", "store_week_fact"]


class FileFormat(dg.Model):
    """How a delivered file is encoded."""

    type: Literal["parquet", "csv", "excel", "jsonl"] = Field(
        default="csv", description="File format: parquet, csv, excel (.xlsx) or jsonl (JSON lines)."
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


class FileSpec(dg.Model):
    """One kind of file the retailer delivers, and which canonical tables its rows feed."""

    name: str = Field(description="Bronze table name for these files, e.g. `sales` or `pos_daily`.")
    match: str = Field(description="Glob matched against file names in the landing folder, e.g. `sales_*.csv`.")
    holds: list[CanonicalName] = Field(
        description="Canonical tables this file feeds: a one-big-table file lists several (prod_dim, site_dim, store_day_fact)."
    )
    format: FileFormat = Field(default_factory=FileFormat, description="How the file is encoded.")

    def matches(self, file_name: str) -> bool:
        return fnmatch.fnmatch(file_name.lower(), self.match.lower())


class DeliverySpec(dg.Model):
    """Where and how the retailer delivers."""

    channel: Literal["landing", "sftp", "api", "database"] = Field(
        default="landing", description="landing (local/object-store folder), sftp, api or database."
    )
    files: list[FileSpec] = Field(default_factory=list, description="The kinds of file the retailer sends.")
    max_files_per_run: int = Field(
        default=100, description="Upper bound of files one sensor run ingests; more become further runs."
    )


class RetailerSpec(dg.Model):
    """A retailer's delivery, mapping and policies: one YAML file per retailer."""

    retailer_id: int = Field(description="Numeric retailer id; the data provider code is `cds_<id>`.")
    name: str = Field(description="Short snake_case retailer name; names its folders, tables and asset group.")
    description: str | None = Field(default=None, description="Free text about the retailer, shown on its assets.")
    country: str = Field(description="ISO country code of the retailer's business.")
    currency: str = Field(description="ISO currency of the retailer's values, used when the files do not say.")
    secure_group_key: int = Field(description="Row-level security key every row of this retailer carries.")
    engine: Literal["polars", "spark"] = Field(default="polars", description="Compute engine for silver and gold.")
    antitrust: Literal["none", "value", "volume"] = Field(
        default="none", description="Competition sensitivity: which measures get antitrust-masked twins."
    )
    cadence: Literal["daily", "weekly"] = Field(default="daily", description="How often data arrives; sets freshness.")
    delivery: DeliverySpec = Field(default_factory=DeliverySpec, description="Where and how files arrive.")
    columns: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per delivered file kind (`files[].name`): source column -> canonical column.",
    )
    scd2: dict[Literal["prod_dim", "site_dim"], list[str]] = Field(
        default_factory=lambda: {"prod_dim": ["prod_name", "brand", "category"], "site_dim": ["site_name", "channel"]},
        description="Attributes whose change opens a new dimension version (SCD2).",
    )

    @model_validator(mode="after")
    def _check(self) -> "RetailerSpec":
        names = [f.name for f in self.delivery.files]
        if len(names) != len(set(names)):
            raise ValueError(f"retailer {self.name}: duplicate file names in delivery.files: {names}")
        unknown = set(self.columns) - set(names)
        if unknown:
            raise ValueError(f"retailer {self.name}: columns given for unknown files {sorted(unknown)}")
        return self

    @property
    def data_provider_code(self) -> str:
        return f"cds_{self.retailer_id}"

    @property
    def canonical_tables(self) -> list[str]:
        """Canonical tables this retailer feeds, dimensions first."""
        order = ["prod_dim", "site_dim", "store_day_fact", "store_week_fact"]
        held = {t for f in self.delivery.files for t in f.holds}
        return [t for t in order if t in held]

    def file_spec_for(self, file_name: str) -> FileSpec | None:
        for spec in self.delivery.files:
            if spec.matches(Path(file_name).name):
                return spec
        return None

    def files_holding(self, table: str) -> list[FileSpec]:
        return [f for f in self.delivery.files if table in f.holds]


def load_retailer_specs(retailers_dir: Path) -> list[RetailerSpec]:
    """Every retailer YAML under `retailers_dir`, in id order (used where all retailers are needed, e.g. gold)."""
    specs = []
    for path in sorted(retailers_dir.glob("*/defs.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc and str(doc.get("type", "")).endswith("RetailerPipeline"):
            specs.append(RetailerSpec.model_validate(doc["attributes"]))
    return sorted(specs, key=lambda s: s.retailer_id)
