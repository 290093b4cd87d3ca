"""What a column's values look like: numbers (integer, decimal, decimal comma), dates and their format, GS1 codes.

Pure functions of a column's sample values (strings as the bronze layer keeps them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

# Tried in this order; ISO first (the pipeline's default), day-first before month-first.
DATE_FORMATS = (
    "%Y-%m-%d",
    "%d.%m.%Y",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%Y%m%d",
    "%d.%m.%y",
    "%d/%m/%y",
    "%m/%d/%y",
)
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_POINT = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)\.\d+$")
_COMMA = re.compile(r"^[+-]?(\d+|\d{1,3}(\.\d{3})+),\d+$")
_THOUSANDS_POINT = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+$")  # `1.234`: a thousand with a decimal comma, else 1.234


@dataclass(frozen=True)
class ValueProfile:
    """A column's values in a few facts; `kind` is date, integer, decimal, code or text (or empty)."""

    kind: str
    count: int
    distinct: int
    date_format: str | None = None
    ambiguous_formats: tuple[str, ...] = ()
    decimal_comma: bool = False
    max_decimals: int = 0
    digits: int | None = None  # every value is this many digits (a code: leading zeros kept)
    gs1_valid: float = 0.0  # share of values with a valid GS1 check digit (8, 12, 13 or 14 digits)
    dates: tuple[date, ...] = ()


def gs1_check_digit_ok(code: str) -> bool:
    """The GS1 mod-10 check digit (GTIN-8/12/13/14, GLN): weights 3,1,3,... from the right, check digit excluded."""
    if not code.isdigit() or len(code) not in (8, 12, 13, 14):
        return False
    body, check = code[:-1], int(code[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def date_formats_of(values: Sequence[str]) -> list[str]:
    """Every format of DATE_FORMATS that parses all `values` (timestamps count as ISO dates)."""
    if values and all(_TIMESTAMP.match(v) for v in values):
        return ["%Y-%m-%d"]
    # A format that reads `20261107` must not also take `1107` or `2026`: the length must fit.
    found = []
    for fmt in DATE_FORMATS:
        width = len(datetime(2000, 12, 31).strftime(fmt))
        try:
            if all(len(v) == width or "%d" not in fmt or not v.isdigit() for v in values):
                for v in values:
                    datetime.strptime(v, fmt)
                found.append(fmt)
        except ValueError:
            continue
    return found


def parse_dates(values: Sequence[str], fmt: str) -> list[date]:
    return [datetime.strptime(v[:10] if _TIMESTAMP.match(v) else v, fmt).date() for v in values]


def profile_values(raw: Sequence[str | None]) -> ValueProfile:
    """The facts about one column's sample values (nulls and blanks left out)."""
    present = [v.strip() for v in raw if v is not None and v.strip()]
    count = len(present)
    # Every rule below holds for a column when it holds for each distinct value: look at those once.
    values = list(dict.fromkeys(present))
    distinct = len(values)
    if not values:
        return ValueProfile("empty", 0, 0)
    formats = date_formats_of(values) if not all(_INTEGER.match(v) and len(v) != 8 for v in values) else []
    if formats:
        days = tuple(sorted(set(parse_dates(values, formats[0]))))
        plausible = all(1990 <= d.year <= 2100 for d in days)
        if plausible:
            return ValueProfile("date", count, distinct, date_format=formats[0], ambiguous_formats=tuple(formats[1:]), dates=days)
    if (
        all(v.isdigit() for v in values)
        and len({len(v) for v in values}) == 1
        and (values[0].startswith("0") and len(values[0]) > 1 or len(values[0]) >= 8)
    ):
        n = len(values[0])
        valid = sum(gs1_check_digit_ok(v) for v in values) / distinct
        return ValueProfile("code", count, distinct, digits=n, gs1_valid=valid)
    if all(_INTEGER.match(v) for v in values):
        return ValueProfile("integer", count, distinct)
    point = all(_INTEGER.match(v) or _POINT.match(v) for v in values)
    comma = all(_INTEGER.match(v) or _COMMA.match(v) or _THOUSANDS_POINT.match(v) for v in values)
    if point or comma:
        decimal_comma = comma and not point
        mark = "," if decimal_comma else "."
        decimals = max((len(v.rsplit(mark, 1)[1]) for v in values if mark in v and not _THOUSANDS_POINT.match(v)), default=0)
        return ValueProfile("decimal", count, distinct, decimal_comma=decimal_comma, max_decimals=decimals)
    if all(v.isdigit() for v in values):
        valid = sum(gs1_check_digit_ok(v) for v in values) / distinct
        return ValueProfile("code", count, distinct, gs1_valid=valid)
    return ValueProfile("text", count, distinct)


def is_numeric(p: ValueProfile) -> bool:
    return p.kind in ("integer", "decimal")
