"""Corporate reference data (product master, site master, FX rates) and the enrichment that uses it.

Enrichment is a left join: a retailer row without a corporate match keeps null `corp_*`
columns and is counted, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pos_lakehouse.storage.lake import Lake

REFERENCE_TABLES = {
    "product_master": {
        "key": "gtin",
        "schema": {"gtin": pl.String, "corp_product_code": pl.String, "corp_product_name": pl.String, "corp_brand": pl.String, "corp_category": pl.String},
    },
    "site_master": {
        "key": "global_location_number",
        "schema": {"global_location_number": pl.String, "corp_site_code": pl.String, "corp_customer": pl.String, "corp_sales_region": pl.String},
    },
    "fx_rates": {
        "key": None,
        "schema": {"date": pl.Date, "currency": pl.String, "usd_per_unit": pl.Float64},
    },
}


def reference_uri(lake: Lake, name: str) -> str:
    return lake.uri("reference", name)


def load_reference_file(lake: Lake, name: str, path: Path) -> int:
    """Replace a reference table with the content of a delivered CSV file; returns its row count."""
    schema = REFERENCE_TABLES[name]["schema"]
    frame = pl.read_csv(path, schema=schema)
    from deltalake import write_deltalake

    write_deltalake(reference_uri(lake, name), frame.to_arrow(), mode="overwrite", schema_mode="overwrite")
    return frame.height


def reference_frame(lake: Lake, name: str) -> pl.LazyFrame:
    return lake.scan(reference_uri(lake, name), pl.Schema(REFERENCE_TABLES[name]["schema"]))


@dataclass
class EnrichmentStats:
    matched: int = 0
    missing: int = 0


def enrich_dimension(frame: pl.DataFrame, lake: Lake, table_name: str) -> tuple[pl.DataFrame, EnrichmentStats]:
    """Add `corp_*` columns from the corporate master on GTIN (products) or GLN (stores)."""
    name = "product_master" if table_name == "prod_dim" else "site_master"
    key = REFERENCE_TABLES[name]["key"]
    master = reference_frame(lake, name).collect().unique(key, keep="first")
    corp_cols = [c for c in master.columns if c != key]
    frame = frame.drop([c for c in corp_cols if c in frame.columns])
    enriched = frame.join(master, on=key, how="left", nulls_equal=False)
    matched = enriched.filter(pl.col(corp_cols[0]).is_not_null()).height
    return enriched, EnrichmentStats(matched=matched, missing=enriched.height - matched)
