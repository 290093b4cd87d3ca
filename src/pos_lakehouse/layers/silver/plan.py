"""What silver reads: one plan per (retailer, kind of file, table), and the new bronze rows it covers.

A `FilePlan` is built once, where the new bronze rows of a kind of file are found, and carries
everything the steps after it need to know about where those rows go: the retailer, the kind of
file (its column mapping, formats, restatement rule), the canonical table and its URI.
"""

from __future__ import annotations

from dataclasses import dataclass

import narwhals as nw

from pos_lakehouse.layers.silver.result import SilverResult
from pos_lakehouse.retailer import FileSpec, RetailerSpec
from pos_lakehouse.storage.interface import LakeIO
from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.mapping import ERROR_COLUMN, prefix_ids, to_canonical


@dataclass(frozen=True)
class FilePlan:
    """Where the rows of one kind of file of one retailer go in one silver table."""

    spec: RetailerSpec
    file_spec: FileSpec
    table: canonical.CanonicalTable
    uri: str

    @property
    def table_name(self) -> str:
        return self.table.name

    @property
    def date_col(self) -> str:
        return self.table.natural_keys[0]

    @property
    def keys(self) -> list[str]:
        return list(self.table.natural_keys)

    @property
    def grain(self) -> str:
        return canonical.GRAIN[self.table.name]

    @property
    def bookmark(self) -> str:
        """The bookmark of the silver table naming the bronze version of this kind of file it consumed."""
        return bronze_bookmark(self.file_spec)

    def canonical_rows(self, raw: nw.LazyFrame) -> nw.LazyFrame:
        """Bronze rows of this kind of file as canonical rows of the table, ids prefixed by the retailer's."""
        fmt = self.file_spec.format
        lf = to_canonical(
            raw,
            self.spec.columns.get(self.file_spec.name, {}),
            self.file_spec.holds,
            decimal_comma=fmt.decimal_comma,
            date_formats=fmt.date_formats,
            checked=[self.table.name],
        )
        return prefix_ids(lf, self.spec.retailer_id)


def bronze_bookmark(file_spec: FileSpec) -> str:
    return f"bronze.{file_spec.name}"


def count(frame: nw.LazyFrame) -> int:
    return int(frame.select(nw.len()).collect(backend="polars").item())


def ok() -> nw.Expr:
    """Rows that broke no rule so far."""
    return nw.col(ERROR_COLUMN).is_null()


def new_bronze_rows(lake: LakeIO, spec: RetailerSpec, file_spec: FileSpec, consumed: str | None) -> tuple[nw.LazyFrame | None, int | None]:
    """Rows of bronze files appended after version `consumed`, and the bronze version they reach."""
    return lake.read_added(lake.bronze(spec.name, file_spec.name), int(consumed) if consumed is not None else None)


def new_bronze_batches(lake: LakeIO, spec: RetailerSpec, table_name: str, marks: dict[str, str], result: SilverResult):
    """(plan, new bronze rows) per kind of file holding `table_name`; records the bronze versions reached."""
    table = canonical.TABLES[table_name]
    uri = lake.silver(spec.name, table_name)
    for file_spec in spec.files_holding(table_name):
        plan = FilePlan(spec, file_spec, table, uri)
        raw, version = new_bronze_rows(lake, spec, file_spec, marks.get(plan.bookmark))
        if version is not None:
            result.bronze_versions[plan.bookmark] = str(version)
        if raw is not None:
            yield plan, raw
