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
    transaction (a log look-up); older tables and pulled pages are found by file statistics, then rows.
    """
    return BronzeDeliveries(lake, uri).holds(delivery_id)


class BronzeDeliveries:
    """Which deliveries a bronze table holds, for many look-ups: the table is opened once.

    A delivery id not among the table's application transactions is looked up in the log's
    file statistics (a file's `_delivery_id` min and max are its one delivery); rows are read
    only when some file's statistics cannot tell (older files, pulled pages mixing deliveries).
    """

    def __init__(self, lake: Lake, uri: str):
        self.lake, self.uri = lake, uri
        self.table = lake.snapshot(uri)
        self._by_stats: tuple[set[str], bool] | None = None

    def _stats(self) -> tuple[set[str], bool]:
        if self._by_stats is None:
            assert self.table is not None  # asked only of a bronze table that exists
            actions = pl.DataFrame(self.table.get_add_actions(flatten=True))
            lo, hi = "min._delivery_id", "max._delivery_id"
            if actions.height == 0:
                self._by_stats = (set(), False)
            elif lo not in actions.columns or hi not in actions.columns:
                self._by_stats = (set(), True)
            else:
                single = actions.filter(pl.col(lo).is_not_null() & (pl.col(lo) == pl.col(hi)))
                self._by_stats = (set(single[lo].to_list()), single.height < actions.height)
        return self._by_stats

    def holds(self, delivery_id: str) -> bool:
        if self.table is None:
            return False
        if self.lake.applied(self.uri, delivery_id, self.table):
            return True
        ids, uncertain = self._stats()
        if delivery_id in ids:
            return True
        if not uncertain:
            return False
        hits = pl.scan_delta(self.table).filter(pl.col("_delivery_id") == delivery_id).select(pl.len()).collect()
        return hits.item() > 0


def lineage_bounds(spec: RetailerSpec, source: str, delivery_id: str, now: datetime) -> dict[str, tuple[object, object]]:
    """(min, max) of the columns `with_lineage` stamps as one value per delivery."""
    return {
        "_ingested_at": (now, now),
        "_source_file": (source, source),
        "_delivery_id": (delivery_id, delivery_id),
        "data_provider_code": (spec.data_provider_code, spec.data_provider_code),
        "secure_group_key": (spec.secure_group_key, spec.secure_group_key),
    }
