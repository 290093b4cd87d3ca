"""Corporate reference data (product master, site master, FX rates) and the enrichment that uses it.

Enrichment is a left join: a retailer row without a corporate match keeps null `corp_*`
columns and is counted, never dropped.
"""

from __future__ import annotations

from pathlib import Path

import narwhals as nw
import polars as pl

from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform.mapping import ORDER_COLUMNS

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


def reference_uri(lake: LakeIO, name: str) -> str:
    return lake.uri("reference", name)


def load_reference_file(lake, name: str, path: Path) -> int:
    """Replace a reference table with the content of a delivered CSV file; returns its row count."""
    schema = REFERENCE_TABLES[name]["schema"]
    frame = pl.read_csv(path, schema=schema)
    from deltalake import write_deltalake

    write_deltalake(reference_uri(lake, name), frame.to_arrow(), mode="overwrite", schema_mode="overwrite")
    return frame.height


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
