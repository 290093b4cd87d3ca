"""Bronze lineage shared by every delivery channel: the stamp on delivered rows, and whether a delivery is in.

Files (`layers/bronze.py`) and pulled pages (`ingest/pulled.py`) both use it; it lives here, below
`layers/`, so imports run one way: `layers` uses `ingest`, never the reverse.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake


def with_lineage(frame, spec: RetailerSpec, source: str, delivery_id: str, now: datetime):
    """Bronze's stamp on delivered rows: row number, ingestion time, source, delivery id and the retailer's keys."""
    return frame.with_row_index("_row_number", offset=1).with_columns(
        pl.col("_row_number").cast(pl.Int64),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(source).alias("_source_file"),
        pl.lit(delivery_id).alias("_delivery_id"),
        pl.lit(spec.data_provider_code).alias("data_provider_code"),
        pl.lit(spec.secure_group_key).cast(pl.Int64).alias("secure_group_key"),
    )


def delivery_in_bronze(lake: Lake, uri: str, delivery_id: str) -> bool:
    """Whether rows of this exact file content are already in the bronze table.

    Appends since exactly-once is table-enforced carry the delivery id as a Delta application
    transaction (a log look-up); older tables and pulled pages are found by their rows.
    """
    dt = lake.table(uri)
    if dt is None:
        return False
    if lake.applied(uri, delivery_id, dt):
        return True
    hits = pl.scan_delta(dt).filter(pl.col("_delivery_id") == delivery_id).select(pl.len()).collect()
    return hits.item() > 0
