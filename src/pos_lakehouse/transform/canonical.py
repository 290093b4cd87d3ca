"""The canonical model every retailer is mapped into (silver) and unioned in (gold).

One `CanonicalTable` per object type: its columns, their Polars types and a description
that is written into Delta table metadata and shown as the Dagster column schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import narwhals as nw
import polars as pl

MONEY = pl.Decimal(18, 4)
QUANTITY = pl.Decimal(18, 4)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    description: str
    required: bool = False

    @property
    def nw_dtype(self) -> nw.dtypes.DType:
        """The column's type for engine-neutral (narwhals) transforms."""
        return nw_dtype(self.dtype)


def nw_dtype(dtype: pl.DataType) -> nw.dtypes.DType:
    if isinstance(dtype, pl.Decimal):
        return nw.Decimal(dtype.precision, dtype.scale)
    if isinstance(dtype, pl.Datetime):
        return nw.Datetime("us", "UTC")
    simple = {pl.String: nw.String(), pl.Int64: nw.Int64(), pl.Float64: nw.Float64(), pl.Boolean: nw.Boolean(), pl.Date: nw.Date()}
    for pl_type, nw_type in simple.items():
        if dtype == pl_type:
            return nw_type
    raise TypeError(f"no narwhals type for {dtype}")


@dataclass(frozen=True)
class CanonicalTable:
    name: str
    description: str
    natural_keys: tuple[str, ...]
    source_columns: tuple[Column, ...]
    derived_columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.source_columns + self.derived_columns + METADATA_COLUMNS

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def source_names(self) -> set[str]:
        return {c.name for c in self.source_columns}

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})


METADATA_COLUMNS: tuple[Column, ...] = (
    Column("data_provider_code", pl.String(), "Retailer code, `cds_<retailer id>`; gold partition column."),
    Column("secure_group_key", pl.Int64(), "Row-level security key from the retailer's YAML."),
    Column("_source_file", pl.String(), "Landing file the row was read from."),
    Column("_delivery_id", pl.String(), "Content hash (SHA-256) of the delivered file."),
    Column("_ingested_at", pl.Datetime("us", "UTC"), "When the row entered bronze (UTC)."),
    Column("_updated_at", pl.Datetime("us", "UTC"), "When this layer last wrote the row (UTC)."),
)

_SCD2_COLUMNS: tuple[Column, ...] = (
    Column("extra_attributes", pl.String(), "JSON object of source columns beyond the canonical model."),
    Column("valid_from", pl.Date(), "First day this version is valid (SCD2)."),
    Column("valid_to", pl.Date(), "Last day this version is valid; null while current (SCD2)."),
    Column("is_current", pl.Boolean(), "True for the version in force today (SCD2)."),
)

PROD_DIM = CanonicalTable(
    name="prod_dim",
    description="Products as each retailer describes them, with SCD2 history and corporate master attributes.",
    natural_keys=("prod_id",),
    source_columns=(
        Column("prod_id", pl.String(), "Retailer product id, prefixed by the retailer id.", required=True),
        Column("gtin", pl.String(), "Global Trade Item Number (EAN/UPC)."),
        Column("prod_name", pl.String(), "Product name as the retailer sends it."),
        Column("brand", pl.String(), "Brand as the retailer sends it."),
        Column("category", pl.String(), "Retailer category."),
        Column("subcategory", pl.String(), "Retailer sub-category."),
        Column("pack_size", pl.String(), "Pack size or unit of measure."),
    ),
    derived_columns=(
        Column("prod_key", pl.Int64(), "Surrogate key of this product version."),
        Column("corp_product_code", pl.String(), "Corporate product code (product master, joined on GTIN)."),
        Column("corp_product_name", pl.String(), "Corporate product name (product master)."),
        Column("corp_brand", pl.String(), "Corporate brand (product master)."),
        Column("corp_category", pl.String(), "Corporate category (product master)."),
        *_SCD2_COLUMNS,
    ),
)

SITE_DIM = CanonicalTable(
    name="site_dim",
    description="Stores as each retailer describes them, with SCD2 history and corporate master attributes.",
    natural_keys=("site_id",),
    source_columns=(
        Column("site_id", pl.String(), "Retailer store id, prefixed by the retailer id.", required=True),
        Column("global_location_number", pl.String(), "GS1 Global Location Number (GLN)."),
        Column("site_name", pl.String(), "Store name."),
        Column("address", pl.String(), "Street address."),
        Column("city", pl.String(), "City."),
        Column("region", pl.String(), "Region or state."),
        Column("country", pl.String(), "ISO country code."),
        Column("channel", pl.String(), "Store format or channel (hyper, super, online, ...)."),
        Column("latitude", pl.Float64(), "Latitude (WGS84)."),
        Column("longitude", pl.Float64(), "Longitude (WGS84)."),
    ),
    derived_columns=(
        Column("site_key", pl.Int64(), "Surrogate key of this store version."),
        Column("corp_site_code", pl.String(), "Corporate site code (site master, joined on GLN)."),
        Column("corp_customer", pl.String(), "Corporate customer (account) the store belongs to (site master)."),
        Column("corp_sales_region", pl.String(), "Corporate sales region (site master)."),
        *_SCD2_COLUMNS,
    ),
)

_FACT_MEASURES: tuple[Column, ...] = (
    Column("pos_sales_units", QUANTITY, "Units sold."),
    Column("pos_sales_value_lc", MONEY, "Sales value in local currency."),
    Column("pos_returns_units", QUANTITY, "Units returned."),
    Column("pos_returns_value_lc", MONEY, "Returns value in local currency."),
    Column("inventory_qty_on_hand", QUANTITY, "Units on hand at end of period."),
    Column("inventory_qty_on_order", QUANTITY, "Units on order at end of period."),
    Column("inventory_value_lc", MONEY, "Inventory value in local currency."),
)

MEASURES: tuple[str, ...] = tuple(c.name for c in _FACT_MEASURES)
VALUE_MEASURES: tuple[str, ...] = ("pos_sales_value_lc", "pos_returns_value_lc", "inventory_value_lc")
VOLUME_MEASURES: tuple[str, ...] = ("pos_sales_units", "pos_returns_units", "inventory_qty_on_hand", "inventory_qty_on_order")

_USD_COLUMNS: tuple[Column, ...] = tuple(
    Column(m.replace("_lc", "_usd"), MONEY, f"{m.replace('_lc', '').replace('_', ' ')} converted to USD at the day's FX rate.")
    for m in VALUE_MEASURES
)
# Antitrust twins: a rolling mean over the grain's window (7 days / 4 weeks / 3 months) per product and store.
# Silver fills them for competition-sensitive retailers; gold views decide which one a reader sees.
_MASKED_COLUMNS: tuple[Column, ...] = tuple(
    Column(f"at_masked_{m}", MONEY if m.endswith(("_lc", "_usd")) else QUANTITY, f"Antitrust-masked `{m}` (rolling mean).")
    for m in (*MEASURES, *(c.name for c in _USD_COLUMNS))
)


# Week and month rows say what they hold: the days their store delivered, the days the period
# has, and whether all of them arrived (a period in progress, or one with a gap, is not complete).
PERIOD_COLUMNS: tuple[Column, ...] = (
    Column(
        "is_complete",
        pl.Boolean(),
        "True only when the store delivered every day of the period (`days_covered` = `days_expected`); false while the "
        "period is in progress, or when a day is missing (e.g. a first week that starts mid-week).",
    ),
    Column(
        "days_covered",
        pl.Int64(),
        "Days of the period with delivered rows for this store (a restated day counts once); the values sum these days.",
    ),
    Column("days_expected", pl.Int64(), "Days the period has, all of which a daily sender owes (7, or the month's length)."),
)


def _fact_table(name: str, date_col: str, description: str, period: bool = False) -> CanonicalTable:
    return CanonicalTable(
        name=name,
        description=description,
        natural_keys=(date_col, "site_id", "prod_id"),
        source_columns=(
            Column(date_col, pl.Date(), "Business date of the measures.", required=True),
            Column("site_id", pl.String(), "Retailer store id, prefixed by the retailer id.", required=True),
            Column("prod_id", pl.String(), "Retailer product id, prefixed by the retailer id.", required=True),
            *_FACT_MEASURES,
            Column("currency", pl.String(), "ISO currency of the `_lc` measures."),
        ),
        derived_columns=(
            Column("prod_key", pl.Int64(), "Product version in force on the date (point-in-time lookup)."),
            Column("site_key", pl.Int64(), "Store version in force on the date (point-in-time lookup)."),
            Column("fx_rate_to_usd", pl.Float64(), "USD per unit of `currency` on the date (corporate FX rates)."),
            *_USD_COLUMNS,
            *_MASKED_COLUMNS,
            *(PERIOD_COLUMNS if period else ()),
        ),
    )


STORE_DAY_FACT = _fact_table("store_day_fact", "date", "Daily sales, returns and inventory per store and product.")
STORE_WEEK_FACT = _fact_table(
    "store_week_fact", "week_end_date", "Weekly sales, returns and inventory per store and product (week ending date).", period=True
)
STORE_MONTH_FACT = _fact_table(
    "store_month_fact", "month_end_date", "Monthly sales, returns and inventory per store and product (month ending date).", period=True
)

DELIVERY_CALENDAR = CanonicalTable(
    name="delivery_calendar",
    description="Deliveries owed and received per date and store: expected vs delivered, rows, files, arrival and lateness.",
    natural_keys=("date", "site_id"),
    source_columns=(
        Column("date", pl.Date(), "The day owed (for a retailer that sends week totals: the week's end date).", required=True),
        Column("site_id", pl.String(), "Retailer store id; `*` when the retailer is owed per day, not per store.", required=True),
        Column("grain", pl.String(), "`day` or `week`: what one date of this retailer's calendar stands for."),
        Column("expected", pl.Boolean(), "The retailer owes this cell (cadence, start and known stores of its YAML and site dimension)."),
        Column("delivered", pl.Boolean(), "Rows for this date and store are stored in silver."),
        Column("status", pl.String(), "delivered, late, missing (past due, nothing), pending (not due yet) or unexpected."),
        Column("rows", pl.Int64(), "Fact rows stored for the cell (after restatements: each row once)."),
        Column("files", pl.Int64(), "Distinct delivered files the stored rows came from."),
        Column("first_arrival", pl.Datetime("us", "UTC"), "When the cell's rows first arrived (kept across restatements)."),
        Column("last_arrival", pl.Datetime("us", "UTC"), "When the cell's latest stored rows arrived."),
        Column("due_at", pl.Datetime("us", "UTC"), "When the cell was due (never before the retailer's first delivery)."),
        Column("late_by_hours", pl.Float64(), "Hours the first arrival came after `due_at`; for a missing cell, hours overdue so far."),
    ),
)

TABLES: dict[str, CanonicalTable] = {
    t.name: t for t in (PROD_DIM, SITE_DIM, STORE_DAY_FACT, STORE_WEEK_FACT, STORE_MONTH_FACT, DELIVERY_CALENDAR)
}
DIMENSIONS = ("prod_dim", "site_dim")
FACTS = ("store_day_fact", "store_week_fact", "store_month_fact")


def empty_frame(table: CanonicalTable) -> pl.DataFrame:
    return pl.DataFrame(schema=table.schema)


# The surrogate key column of each dimension, and the dimension a fact's natural id looks up.
KEY_COLUMN = {"prod_dim": "prod_key", "site_dim": "site_key"}
DIM_FOR_ID = {"prod_id": "prod_dim", "site_id": "site_dim"}
# The period each fact table's rows cover.
GRAIN: dict[str, Literal["day", "week", "month"]] = {"store_day_fact": "day", "store_week_fact": "week", "store_month_fact": "month"}
# The columns computed from a fact row's measures (FX rate, USD twins, antitrust-masked twins).
DERIVED_MEASURE_COLUMNS = [
    c.name
    for c in STORE_DAY_FACT.derived_columns
    if c.name.endswith("_usd") or c.name.startswith("at_masked_") or c.name == "fx_rate_to_usd"
]


def fact_partitions(table_name: str) -> list[str]:
    """Silver fact tables are partitioned by their date (day, week end or month end).

    A delivery restates a few dates; its MERGE (restricted to those dates) then reads and rewrites
    only those dates' files, whatever history the table holds. Applies to tables created from
    now on; a table created unpartitioned stays so (its MERGEs still prune files by date stats).
    """
    return [TABLES[table_name].natural_keys[0]]


def measure_columns(measures: Sequence[str]) -> list[str]:
    """Measures and the columns derived from them (USD twins, antitrust-masked twins)."""
    cols = []
    for m in measures:
        cols.append(m)
        twins = [m.replace("_lc", "_usd")] if m in VALUE_MEASURES else []
        cols += twins + [f"at_masked_{c}" for c in (m, *twins)]
    return cols
