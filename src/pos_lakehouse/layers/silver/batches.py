"""How new bronze rows are cut into batches, and in which order their rows are read.

Memory follows the batch size, not the delivery's: new rows are taken in batches of whole
deliveries (oldest first), a delivery bigger than a batch split by its dates; each batch is
processed exactly as if the batches had arrived one after another.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import narwhals as nw

from pos_lakehouse.layers.silver.plan import FilePlan
from pos_lakehouse.transform.mapping import ORDER_COLUMNS


@dataclass(frozen=True)
class FactBatch:
    """One batch of a fact refresh: which deliveries, which of their dates, how many bronze rows."""

    deliveries: list[str] | None  # None: every new row
    dates: list | None  # a part of one large delivery: these dates only
    with_undated: bool  # whether rows with no parseable date go with this batch
    bronze_rows: int | None  # None for a part of a delivery (one canonical row per bronze row)


def fact_batches(plan: FilePlan, raw: nw.LazyFrame, budget: int):
    """The `FactBatch`es of at most `budget` rows the new bronze rows `raw` are loaded in.

    Whole deliveries, oldest first (a later batch overrides an earlier one as a later run would);
    a delivery bigger than `budget` alone is split by its (parsed) dates, each date whole, so
    duplicates and restated store-days stay inside one batch.
    """
    unit = ["_delivery_id", "_ingested_at", "_source_file"]
    sizes = raw.group_by(*unit).agg(nw.len().alias("_n")).sort("_ingested_at", "_source_file").collect(backend="polars")
    total = int(sizes["_n"].sum())
    if total <= budget:
        yield FactBatch(None, None, True, total)
        return
    batch: list[str] = []
    size = 0
    for delivery, _, _, n in sizes.iter_rows():
        if batch and size + n > budget:
            yield FactBatch(batch, None, True, size)
            batch, size = [], 0
        if n <= budget:
            batch.append(delivery)
            size += n
            continue
        one = raw.filter(nw.col("_delivery_id") == delivery)
        days = (
            plan.canonical_rows(one)
            .group_by(plan.date_col)
            .agg(nw.len().alias("_n"))
            .sort(plan.date_col, nulls_last=True)
            .collect(backend="polars")
        )
        part: list = []
        part_size, undated_done = 0, False
        for day, m in days.iter_rows():
            if day is None:  # unparseable dates (quarantined) ride with the delivery's first part
                continue
            if part and part_size + m > budget:
                yield FactBatch([delivery], part, not undated_done, None)
                undated_done, part, part_size = True, [], 0
            part.append(day)
            part_size += m
        yield FactBatch([delivery], part, not undated_done, None)
    if batch:
        yield FactBatch(batch, None, True, size)


def delivery_files(raw: nw.LazyFrame):
    """Rows per delivery and bronze data file (a Polars frame)."""
    unit = ["_delivery_id", "_ingested_at", "_source_file", ORDER_COLUMNS[0]]
    return raw.group_by(*unit).agg(nw.len().alias("_n")).collect(backend="polars")


def delivery_batches(files, budget: int):
    """Lists of delivery ids of at most `budget` rows together, oldest first (a bigger delivery
    alone); one `None` (all rows at once) when everything fits. `files` as `delivery_files`."""
    sizes = files.group_by("_delivery_id", "_ingested_at", "_source_file").agg(nw.col("_n").sum()).sort("_ingested_at", "_source_file")
    if int(sizes["_n"].sum()) <= budget:
        yield None
        return
    batch: list[str] = []
    size = 0
    for delivery, _, _, n in sizes.iter_rows():
        if batch and size + n > budget:
            yield batch
            batch, size = [], 0
        batch.append(delivery)
        size += n
    if batch:
        yield batch


def batch_order(files, batches: list[list[str] | None]):
    """The order rows of `batches` (of `delivery_batches`; `files` as `delivery_files`) are read
    in: batch, data file, row.

    Returns the order's columns, the function adding those bronze rows lack, and the data files
    in the order they are read. When a data file holds deliveries of several batches, there is no
    such file order (None): the order starts with `_batch`, the batch of each row's delivery.
    """
    batch_of = {d: i for i, deliveries in enumerate(batches) for d in deliveries or []}
    spans: dict[str, set[int]] = {}
    # Inside a batch, files are read in their deliveries' order (ingested, then file name), as
    # facts rank deliveries: data file names are random, so ordering by name would let either of
    # two deliveries observing the same entity on the same day win.
    delivered: dict[str, tuple] = {}
    for delivery, ingested, source, path in files.select("_delivery_id", "_ingested_at", "_source_file", ORDER_COLUMNS[0]).iter_rows():
        spans.setdefault(path, set()).add(batch_of.get(delivery, 0))
        delivered[path] = max(delivered.get(path, (ingested, source)), (ingested, source))
    if all(len(b) == 1 for b in spans.values()) and None not in spans:
        return ORDER_COLUMNS, lambda frame: frame, sorted(spans, key=lambda path: (min(spans[path]), *delivered[path], path))
    batch = nw.lit(len(batches) - 1, nw.Int64)
    for i in reversed(range(len(batches) - 1)):
        batch = nw.when(nw.col("_delivery_id").is_in(batches[i])).then(nw.lit(i, nw.Int64)).otherwise(batch)
    return ("_batch", *ORDER_COLUMNS), lambda frame: frame.with_columns(batch.alias("_batch")), None


class BatchWrites:
    """Writes of finished fact batches, run behind the next batch's parsing (Polars only).

    A batch's write (its days' Parquet files and one Delta commit; mostly outside the GIL)
    overlaps the next batch's parse, keys and duplicate checks. Anything that reads the stored
    table waits for the pending write first (`wait`), so a batch always sees the ones before it,
    as if they had run one after another. At most one write is pending, which bounds the extra
    memory to one batch. The Spark engine parallelizes inside each job: it writes inline.
    """

    def __init__(self, background: bool):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pos_lakehouse_silver_write") if background else None
        self._pending: Future | None = None

    def submit(self, write) -> None:
        self.wait()
        if self._pool is None:
            write()
        else:
            self._pending = self._pool.submit(write)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the pending write (its error, if any, is raised here) and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
