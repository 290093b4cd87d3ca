"""Columns to the canonical model, by name and by content.

The name proposes (`vocabulary.candidates`), the values dispose: a measure must hold numbers, a
date must parse, a GTIN or GLN must be digits (check digits confirm it), a bare `name` belongs to
the dimension whose id determines it. Each canonical column takes one source column per file
kind; a guess with a doubt carries a note that becomes `# REVIEW:` in the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pos_lakehouse.onboarding.values import ValueProfile, is_numeric
from pos_lakehouse.onboarding.vocabulary import candidates
from pos_lakehouse.transform.canonical import MEASURES, PROD_DIM, SITE_DIM

PROD_ATTRIBUTES = tuple(c.name for c in PROD_DIM.source_columns if c.name != "prod_id")
SITE_ATTRIBUTES = tuple(c.name for c in SITE_DIM.source_columns if c.name != "site_id")
_VALUE_MEASURES = ("pos_sales_value_lc", "pos_returns_value_lc", "inventory_value_lc")


@dataclass
class KindMapping:
    """One file kind's proposed mapping and what it feeds."""

    columns: dict[str, str] = field(default_factory=dict)  # source -> canonical
    notes: dict[str, str] = field(default_factory=dict)  # source -> why it is unsure
    unmapped: list[str] = field(default_factory=list)
    date_column: str | None = None

    @property
    def targets(self) -> set[str]:
        return set(self.columns.values())

    def holds(self, weekly_rows: bool) -> list[str]:
        t = self.targets
        tables = []
        if "prod_id" in t and t & set(PROD_ATTRIBUTES):
            tables.append("prod_dim")
        if "site_id" in t and t & set(SITE_ATTRIBUTES):
            tables.append("site_dim")
        if {"prod_id", "site_id"} <= t and self.date_column and t & set(MEASURES):
            tables.append("store_week_fact" if weekly_rows else "store_day_fact")
        return tables


def _fits(target: str, p: ValueProfile) -> bool:
    """Whether values like these can be `target`'s."""
    if target == "@date":
        return p.kind == "date"
    if target in MEASURES or target == "@returns":
        return is_numeric(p)
    if target in ("gtin", "global_location_number"):
        return p.kind in ("code", "integer")
    if target in ("latitude", "longitude"):
        return p.kind == "decimal"
    return p.kind not in ("date", "empty") or target.endswith("_id")


def _determined_by(frame: pl.DataFrame, key: str | None, column: str) -> bool:
    """Each `key` value comes with one `column` value (the attribute describes what `key` identifies)."""
    if key is None or key not in frame.columns:
        return False
    pairs = frame.select(key, column).drop_nulls().unique()
    return pairs.height > 0 and pairs.height == pairs.select(key).n_unique()


def map_columns(frame: pl.DataFrame, profiles: dict[str, ValueProfile]) -> KindMapping:
    """The mapping of one file kind's sample (`frame`: every column as strings) to canonical columns."""
    result = KindMapping()
    proposals: list[tuple[int, str, str]] = []  # (score, source, target)
    for column in frame.columns:
        p = profiles[column]
        fitting = [(s, t) for s, t in candidates(column) if _fits(t, p)]
        if not fitting:
            proposals.extend(_by_content(column, p))
            continue
        proposals.extend((s, column, t) for s, t in fitting)
    ids = {t: src for s, src, t in sorted(proposals, reverse=True) if t in ("prod_id", "site_id")}
    taken: dict[str, str] = {}
    for score, source, target in sorted(proposals, key=lambda x: -x[0]):
        if source in result.columns:
            continue
        target, note = _resolve(target, source, profiles[source], frame, ids)
        if target is None or target in taken:
            continue
        taken[target] = source
        result.columns[source] = target
        if note or score <= 3 and target not in ("prod_id", "site_id", "@date"):
            result.notes[source] = note or f"only the name suggests {target}"
    result.unmapped = [c for c in frame.columns if c not in result.columns]
    dates = [s for s, t in result.columns.items() if t == "@date"]
    if dates:
        result.date_column = dates[0]
    for extra in dates[1:]:
        del result.columns[extra]
        result.unmapped.append(extra)
    _check_codes(result, profiles)
    return result


def _resolve(target: str, source: str, p: ValueProfile, frame: pl.DataFrame, ids: dict[str, str]) -> tuple[str | None, str | None]:
    """A placeholder target (`@name`, `@returns`) made concrete; the note says what decided it."""
    if target == "@name":
        if _determined_by(frame, ids.get("prod_id"), source) and not _determined_by(frame, ids.get("site_id"), source):
            return "prod_name", "a bare name that each product id fixes: taken as the product's name"
        if _determined_by(frame, ids.get("site_id"), source):
            return "site_name", "a bare name that each store id fixes: taken as the store's name"
        return None, None
    if target == "@gs1":
        if _determined_by(frame, ids.get("site_id"), source) and not _determined_by(frame, ids.get("prod_id"), source):
            return "global_location_number", "GS1 check digits hold and each store id fixes the code: taken as the GLN"
        return "gtin", "GS1 check digits hold; no name says what the code is: taken as the GTIN"
    if target == "@returns":
        if p.kind == "decimal" and p.max_decimals > 0:
            return "pos_returns_value_lc", "returns with decimals: taken as a value (pos_returns_value_lc)"
        return "pos_returns_units", None
    if target in ("pos_sales_units", "pos_returns_units", "inventory_qty_on_hand", "inventory_qty_on_order") and p.max_decimals > 0:
        return target, f"{target} holds decimals (up to {p.max_decimals} places): weights? check the unit"
    if target in _VALUE_MEASURES and p.kind == "integer":
        return target, None  # yen, or whole amounts: fine either way
    return target, None


def _by_content(column: str, p: ValueProfile) -> list[tuple[int, str, str]]:
    """What values alone suggest for a column whose name says nothing: GS1 codes by their check digits."""
    if p.kind == "code" and p.digits in (8, 12, 13, 14) and p.gs1_valid >= 0.99:
        return [(1, column, "@gs1")]
    return []


def _check_codes(result: KindMapping, profiles: dict[str, ValueProfile]) -> None:
    """GTIN and GLN columns whose check digits fail (or that are no codes) are mapped but flagged."""
    for source, target in result.columns.items():
        if target not in ("gtin", "global_location_number"):
            continue
        p = profiles[source]
        if p.gs1_valid < 0.99:
            what = "GTIN" if target == "gtin" else "GLN"
            result.notes[source] = f"{what} by its name, but {1 - p.gs1_valid:.0%} of the sample fails the GS1 check digit"
