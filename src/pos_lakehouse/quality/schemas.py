"""Data-quality rules as pandera (Polars) schemas, one per canonical table.

Each rule has a name the UI shows, and a severity: `ERROR` rules are blocking (bad data must not
flow on to gold), `WARN` rules are reported but let data through (a product with a bad GTIN still
sold what it sold).

The rules' names, severities and descriptions (`rule_names`: what the asset check specs need) are
plain data; pandera (which imports pandas) is imported only when a check runs and builds the
schemas, so loading the definitions does not pay for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import polars as pl

from pos_lakehouse.transform import canonical
from pos_lakehouse.transform.row_rules import MAX_ABS_MEASURE  # one bound for silver's quarantine and this check

if TYPE_CHECKING:
    import pandera.polars as pa


def gs1_check_digit_valid(code: pl.Expr) -> pl.Expr:
    """GS1 mod-10 check digit (GTIN-8/12/13/14, GLN-13): weights 3,1,3,... from the right, excluding the check digit."""
    digits_only = code.str.contains(r"^\d{8}$|^\d{12,14}$")
    padded = code.str.pad_start(14, "0")
    total = pl.sum_horizontal([padded.str.slice(i, 1).cast(pl.Int64, strict=False) * (3 if i % 2 == 0 else 1) for i in range(13)])
    check = padded.str.slice(13, 1).cast(pl.Int64, strict=False)
    return digits_only & (((10 - total % 10) % 10) == check)


def _gs1_check(column: str) -> pa.Check:
    import pandera.polars as pa

    return pa.Check(
        lambda data: data.lazyframe.select(gs1_check_digit_valid(pl.col(data.key)).fill_null(False)),
        name="valid_gs1_check_digit",
        error=f"{column} is not a valid GS1 code (length or check digit)",
        ignore_na=True,
    )


def _not_in_future(date_col: str, today: date) -> pa.Check:
    """A row's own date is not after today: a day's date, or the last day a period row covers
    (the period in progress is published period-to-date, its end lies ahead)."""
    if date_col == "date":
        covered = pl.col("date")
    elif date_col == "week_end_date":
        covered = pl.col(date_col) - pl.duration(days=7 - pl.col("days_covered").fill_null(7))
    else:
        covered = pl.col(date_col).dt.month_start() + pl.duration(days=pl.col("days_covered").fill_null(31) - 1)
        covered = pl.min_horizontal(covered, pl.col(date_col))
    import pandera.polars as pa

    return pa.Check(
        lambda data: data.lazyframe.select(covered <= today),
        name="not_in_future",
        error=f"date after today ({today})",
    )


@dataclass(frozen=True)
class Rule:
    """One pandera schema and whether its failures block downstream."""

    name: str
    schema: pa.DataFrameSchema
    blocking: bool
    description: str


def _measures_in_range(days: int) -> dict[str, pa.Column]:
    import pandera.polars as pa

    bound = MAX_ABS_MEASURE * days
    return {
        m: pa.Column(
            canonical.STORE_DAY_FACT.column(m).dtype,
            pa.Check.in_range(-bound, bound),
            nullable=True,
            required=False,
        )
        for m in canonical.MEASURES
    }


def _dimension_codes(table_name: str) -> tuple[str, str, str]:
    """(natural key, surrogate key, GS1 code column) of a dimension."""
    natural = canonical.TABLES[table_name].natural_keys[0]
    if table_name == "prod_dim":
        return natural, "prod_key", "gtin"
    return natural, "site_key", "global_location_number"


@functools.cache
def rule_names(table_name: str) -> tuple[tuple[str, bool, str], ...]:
    """(name, blocking, description) of each rule of a table, in `rules_for`'s order: what check
    specs need, without building a pandera schema (nor importing pandera)."""
    table = canonical.TABLES[table_name]
    if table_name == canonical.DELIVERY_CALENDAR.name:
        return (("structure_and_keys", True, "Types, non-null dates and stores, unique (date, site_id), a known status."),)
    if table_name in canonical.DIMENSIONS:
        _, key, code = _dimension_codes(table_name)
        return (
            ("structure_and_keys", True, f"Types, non-null ids and unique `{key}`; versions well ordered."),
            (f"valid_{code}", False, f"`{code}` has a valid GS1 check digit (warning: the row still flows)."),
        )
    return (
        (
            "structure_and_keys",
            True,
            f"Types, non-null keys and product/store versions, unique ({', '.join(table.natural_keys)}).",
        ),
        (
            "row_rules",
            False,
            "Dates not after today (a period row: its last covered day), ISO currencies, measures in range; "
            "silver quarantines rows that break them (warning: a row never blocks the retailer).",
        ),
        ("plausible_quantities", False, "Sales and stock quantities are not negative (warning)."),
    )


def rules_for(table_name: str, today: date | None = None) -> list[Rule]:
    """The rules of a canonical table: structure and keys (blocking) and plausibility (warnings)."""
    schemas = _schemas(table_name, today or datetime.now(UTC).date())
    return [
        Rule(name, schema, blocking, description)
        for (name, blocking, description), schema in zip(rule_names(table_name), schemas, strict=True)
    ]


def _schemas(table_name: str, today: date) -> list[pa.DataFrameSchema]:
    """The pandera schema of each rule of `rule_names(table_name)`, in the same order."""
    import pandera.polars as pa

    table = canonical.TABLES[table_name]
    if table_name == canonical.DELIVERY_CALENDAR.name:
        from pos_lakehouse.transform.calendar import STATUSES

        structure = pa.DataFrameSchema(
            {
                "date": pa.Column(pl.Date, nullable=False),
                "site_id": pa.Column(pl.String, nullable=False),
                "status": pa.Column(pl.String, pa.Check.isin(list(STATUSES)), nullable=False),
                "expected": pa.Column(pl.Boolean, nullable=False),
                "delivered": pa.Column(pl.Boolean, nullable=False),
                "rows": pa.Column(pl.Int64, pa.Check.ge(0), nullable=False),
                "data_provider_code": pa.Column(pl.String, nullable=False),
                "secure_group_key": pa.Column(pl.Int64, nullable=False),
            },
            unique=list(table.natural_keys),
            name=f"{table_name}_structure",
        )
        return [structure]
    if table_name in canonical.DIMENSIONS:
        natural, key, code = _dimension_codes(table_name)
        structure = pa.DataFrameSchema(
            {
                natural: pa.Column(pl.String, nullable=False),
                key: pa.Column(pl.Int64, nullable=False, unique=True),
                "valid_from": pa.Column(pl.Date, nullable=False),
                "valid_to": pa.Column(pl.Date, nullable=True),
                "is_current": pa.Column(pl.Boolean, nullable=False),
                "data_provider_code": pa.Column(pl.String, nullable=False),
                "secure_group_key": pa.Column(pl.Int64, nullable=False),
            },
            checks=[
                pa.Check(
                    lambda data: data.lazyframe.select(pl.col("valid_to").is_null() | (pl.col("valid_to") >= pl.col("valid_from"))),
                    name="valid_to_after_valid_from",
                    error="version ends before it starts",
                )
            ],
            name=f"{table_name}_structure",
        )
        codes = pa.DataFrameSchema({code: pa.Column(pl.String, _gs1_check(code), nullable=True)}, name=f"{table_name}_codes")
        return [structure, codes]
    date_col = table.natural_keys[0]
    # Blocking: what makes the whole table wrong (types, keys, product/store versions, uniqueness).
    structure = pa.DataFrameSchema(
        {
            date_col: pa.Column(pl.Date, nullable=False),
            "site_id": pa.Column(pl.String, nullable=False),
            "prod_id": pa.Column(pl.String, nullable=False),
            "prod_key": pa.Column(pl.Int64, nullable=False),
            "site_key": pa.Column(pl.Int64, nullable=False),
            "currency": pa.Column(pl.String, nullable=False),
            "data_provider_code": pa.Column(pl.String, nullable=False),
            "secure_group_key": pa.Column(pl.Int64, nullable=False),
        },
        unique=list(table.natural_keys),
        name=f"{table_name}_structure",
    )
    # Row rules: silver quarantines rows that break them before they are stored, so this check
    # only confirms it; a failure is reported, never blocks the retailer.
    days = {"store_day_fact": 1, "store_week_fact": 7}.get(table_name, 31)
    row_rules = pa.DataFrameSchema(
        {
            date_col: pa.Column(pl.Date, _not_in_future(date_col, today), nullable=True),
            "currency": pa.Column(pl.String, pa.Check.str_matches(r"^[A-Z]{3}$"), nullable=True),
            **_measures_in_range(days),
        },
        name=f"{table_name}_row_rules",
    )
    plausible = pa.DataFrameSchema(
        {
            "pos_sales_units": pa.Column(canonical.QUANTITY, pa.Check.ge(0), nullable=True, required=False),
            "inventory_qty_on_hand": pa.Column(canonical.QUANTITY, pa.Check.ge(0), nullable=True, required=False),
        },
        name=f"{table_name}_plausibility",
    )
    return [structure, row_rules, plausible]


@dataclass
class RuleOutcome:
    rule: Rule
    rows_checked: int
    failing_rows: int
    failures_by_check: dict[str, int]
    sample: pl.DataFrame

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0


def evaluate(rule: Rule, frame: pl.DataFrame, sample_size: int = 5) -> RuleOutcome:
    """Validate lazily (all failures at once) and return counts plus a sample of failing rows."""
    import pandera.polars as pa

    try:
        rule.schema.validate(frame, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as exc:
        cases = (
            exc.failure_cases
            if isinstance(exc, pa.errors.SchemaErrors)
            else pl.DataFrame(
                {"check": [str(exc)], "column": [None], "index": [None]},
                schema={"check": pl.String, "column": pl.String, "index": pl.Int32},
            )
        )
        label = pl.concat_str([pl.col("column").fill_null("table"), pl.col("check").cast(pl.String)], separator=": ")
        by_check = cases.group_by(label.alias("rule")).agg(pl.col("index").n_unique().alias("n"))
        rows = cases["index"].drop_nulls().unique()
        sample = (
            frame.with_row_index("_row").filter(pl.col("_row").is_in(rows.head(sample_size).implode()))
            if rows.len()
            else cases.head(sample_size)
        )
        failing = rows.len() if rows.len() else cases.height
        return RuleOutcome(rule, frame.height, failing, {r: int(n) for r, n in by_check.iter_rows()}, sample)
    return RuleOutcome(rule, frame.height, 0, {}, frame.clear())
