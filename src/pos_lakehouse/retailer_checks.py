"""A retailer YAML checked against the canonical model when definitions load, each mistake named by its field.

Pydantic checks the YAML's shape (names, types, allowed values); these checks read what the
mapping means: a target column the canonical model does not have, a canonical column filled
twice, a required column (keys, dates) or every measure of a fact left unmapped. Each would
otherwise load silently and leave the column null in silver and gold.
"""

from __future__ import annotations

import difflib
from typing import Any


class FieldError(ValueError):
    """A mistake at one field of a retailer YAML; `field` is its path under `attributes` (keys and list indexes)."""

    def __init__(self, field: tuple[str | int, ...], message: str):
        self.field = field
        self.message = message
        super().__init__(f"{dotted(field)}: {message}")


def dotted(field: tuple[str | int, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in field).replace(".[", "[")


def did_you_mean(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def check_against_model(spec: Any) -> None:
    """Raise `FieldError` at the first mapping of a `RetailerSpec` the canonical model cannot take.

    (`spec` is not annotated with its class: `retailer` calls this while validating, and importing
    it back would tie the two modules in a cycle.)"""
    from pos_lakehouse.transform.canonical import FACTS, MEASURES, TABLES

    for file_spec in spec.delivery.files:
        mapping = spec.columns.get(file_spec.name, {})
        allowed: list[str] = []
        for table in file_spec.holds:
            allowed += [c.name for c in TABLES[table].source_columns if c.name not in allowed]
        filled: dict[str, str] = {}
        for source, target in mapping.items():
            where = ("columns", file_spec.name, source)
            if target not in allowed:
                raise FieldError(
                    where,
                    f"`{target}` is not a column of {', '.join(file_spec.holds)}{did_you_mean(target, allowed)}; allowed: {', '.join(allowed)}",
                )
            if target in filled:
                raise FieldError(where, f"`{target}` is filled by `{filled[target]}` already: one source column per canonical column")
            filled[target] = source
        if not mapping:
            continue  # a file whose columns carry the canonical names needs no mapping
        for table in file_spec.holds:
            for column in TABLES[table].source_columns:
                if column.required and column.name not in filled:
                    raise FieldError(
                        ("columns", file_spec.name),
                        f"no source column is mapped to `{column.name}`, which {table} requires: add `<source column>: {column.name}` "
                        f"(`{column.name}: {column.name}` when the file's column has that name)",
                    )
            if table in FACTS and not any(m in filled for m in MEASURES):
                raise FieldError(
                    ("columns", file_spec.name),
                    f"no source column is mapped to a measure of {table}: map at least one of {', '.join(MEASURES)}",
                )
