"""Repair of a table that holds a key twice: one row per key is kept, the newest.

Two processes that ran the same work at once before writes were pinned to a snapshot could leave
such duplicates; silver and gold check for them once per table and call this where they find any.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from deltalake import CommitProperties, write_deltalake

from pos_lakehouse.storage import snapshots
from pos_lakehouse.storage.delta_commit import retry


def remove(uri: str, keys: Sequence[str], *, rewrite_by: str, scope: tuple[str, str] | None, commit_properties: CommitProperties) -> int:
    """Leave one row per key (the newest `_updated_at`); the number of rows removed.

    Only the `rewrite_by` values (dates) holding a duplicate are rewritten, in one overwrite commit
    restricted to them (and to `scope`, a retailer's gold partition)."""
    dt = snapshots.open_table(uri)
    if dt is None:
        return 0
    rows = pl.scan_delta(dt)
    if scope is not None:
        rows = rows.filter(pl.col(scope[0]) == scope[1])
    doubled = rows.group_by(keys).agg(pl.len().alias("_n")).filter(pl.col("_n") > 1).select(keys)
    values = rows.join(doubled, on=list(keys), how="semi").select(rewrite_by).unique().collect()[rewrite_by].to_list()
    if not values:
        return 0
    affected = rows.filter(pl.col(rewrite_by).is_in(values)).collect()
    order = ["_updated_at"] if "_updated_at" in affected.columns else []
    kept = (affected.sort(order, nulls_last=False) if order else affected).unique(list(keys), keep="last", maintain_order=True)
    listed = ", ".join(f"'{v}'" for v in values)
    predicate = f"{rewrite_by} IN ({listed})" + (f" AND {scope[0]} = '{scope[1]}'" if scope is not None else "")
    retry(lambda: write_deltalake(uri, kept.to_arrow(), mode="overwrite", predicate=predicate, commit_properties=commit_properties), uri)
    return affected.height - kept.height
