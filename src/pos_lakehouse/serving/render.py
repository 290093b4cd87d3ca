"""What a secure gold view selects, derived once from the access policy for every SQL dialect.

DuckDB (local) and Databricks (Unity Catalog) views share this structure -- the same columns,
the same masking CASE per measure, the same row filter by secure group key -- and differ only in
quoting, the record-age expression and how the reader's groups are found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pos_lakehouse.serving.policy import AccessPolicy
from pos_lakehouse.transform import canonical

Dialect = Literal["duckdb", "databricks"]


@dataclass(frozen=True)
class MaskRule:
    """Replace `column` by `masked_column` for these retailers while a record is younger than their threshold."""

    column: str
    masked_column: str
    thresholds: tuple[tuple[str, int], ...]  # (data_provider_code, days), sorted by code


def quote(name: str, dialect: Dialect) -> str:
    if dialect == "databricks":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def literal(value: str | int, dialect: Dialect = "duckdb") -> str:
    if isinstance(value, int):
        return str(value)
    if dialect == "databricks":  # Spark SQL escapes with backslashes ('a' 'b' would concatenate)
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + str(value).replace("'", "''") + "'"


def date_column(table_name: str) -> str | None:
    """The business date that sets a fact record's age; dimensions have none (and no measures)."""
    if table_name in canonical.FACTS:
        return canonical.TABLES[table_name].natural_keys[0]
    return None


def mask_rules(policy: AccessPolicy, table_name: str, columns: list[str]) -> list[MaskRule]:
    """One rule per measure that some competition-sensitive retailer masks and whose twin the table has."""
    if date_column(table_name) is None:
        return []
    present = set(columns)
    rules = []
    for col in columns:
        twin = f"at_masked_{col}"
        if twin not in present:
            continue
        thresholds = tuple(
            (code, r.mask_younger_than_days) for code, r in sorted(policy.masked_retailers().items()) if col in r.masked_columns()
        )
        if thresholds:
            rules.append(MaskRule(col, twin, thresholds))
    return rules


def block_end(date_col: str, dialect: Dialect) -> str:
    """Last day of the two-month masking block (Jan-Feb, Mar-Apr, ...) holding the record's date.

    The same blocks as `transform/masking.py`: a record's masked twin is computed per block, so the
    whole block must switch from masked to real at once (never half of it).
    """
    d = quote(date_col, dialect)
    return f"last_day(make_date(year({d}), CAST(floor((month({d}) - 1) / 2) * 2 + 2 AS INT), 1))"


def age_in_days(date_sql: str, dialect: Dialect) -> str:
    """Whole days between a date expression and today (0 for today, negative in the future)."""
    if dialect == "databricks":
        return f"datediff(current_date(), {date_sql})"
    return f"date_diff('day', {date_sql}, current_date)"


def masked_expression(rule: MaskRule, date_col: str, dialect: Dialect) -> str:
    """A record shows its masked twin while its masking block is not wholly older than the threshold."""
    q = lambda n: quote(n, dialect)  # noqa: E731
    age = age_in_days(block_end(date_col, dialect), dialect)
    conditions = " OR ".join(f"({q('data_provider_code')} = {literal(code, dialect)} AND {age} < {days})" for code, days in rule.thresholds)
    return f"CASE WHEN {conditions} THEN {q(rule.masked_column)} ELSE {q(rule.column)} END AS {q(rule.column)}"


def select_list(policy: AccessPolicy, table_name: str, columns: list[str], dialect: Dialect) -> list[str]:
    """The view's columns in table order; masked measures become a CASE on record age."""
    rules = {r.column: r for r in mask_rules(policy, table_name, columns)}
    date_col = date_column(table_name)
    out = []
    for col in columns:
        if col in rules and date_col:
            out.append(masked_expression(rules[col], date_col, dialect))
        else:
            out.append(quote(col, dialect))
    return out
