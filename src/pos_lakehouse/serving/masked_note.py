"""The line `pos-lakehouse query` adds on stderr when its result holds antitrust-masked values.

A masked measure is a rolling mean (or null where none is known yet), not the real value; printed
without a word it reads as data. The note counts the masked values of the result where its rows
say which retailer and date they are (the measure column under its own name, with
`data_provider_code` and the view's date column), else says which columns may hold some.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from pos_lakehouse.serving.policy import AccessPolicy
from pos_lakehouse.serving.render import date_column, mask_rules
from pos_lakehouse.transform import canonical


def _block_end(day: pl.Expr) -> pl.Expr:
    """Last day of the two-month masking block (Jan-Feb, Mar-Apr, ...) holding the date (as `render.block_end`)."""
    end_month = ((day.dt.month() - 1) // 2) * 2 + 2
    return pl.date(day.dt.year(), end_month, 1).dt.month_end()


def masked_note(policy: AccessPolicy, user: str, views: Sequence[str], result: pl.DataFrame, today: date | None = None) -> str | None:
    """One line on the masked values in `result` of a query over `views` as `user`, or None when none can be."""
    today = today or date.today()
    keys = set(policy.user_keys(user))
    visible = {code: r for code, r in policy.masked_retailers().items() if r.secure_group_key in keys}
    if not visible:
        return None
    counted, maybe, why = 0, set(), {}
    for view in views:
        date_col = date_column(view)
        if date_col is None:
            continue
        for rule in mask_rules(policy, view, [c.name for c in canonical.TABLES[view].columns]):
            thresholds = {code: days for code, days in rule.thresholds if code in visible}
            if not thresholds or rule.column not in result.columns:
                continue
            why.update({visible[c].name: d for c, d in thresholds.items()})
            if not {"data_provider_code", date_col} <= set(result.columns) or result.schema[date_col] != pl.Date:
                maybe.add(rule.column)
                continue
            age = (pl.lit(today) - _block_end(pl.col(date_col))).dt.total_days()
            masked = pl.any_horizontal([(pl.col("data_provider_code") == code) & (age < days) for code, days in thresholds.items()])
            counted += result.select(masked.fill_null(False).sum()).item()
    reasons = ", ".join(f"{name}: {days} days" for name, days in sorted(why.items()))
    if counted:
        return (
            f"{counted} value(s) in this result are antitrust-masked (rolling means, null where none is known yet; "
            f"not real values): records whose two-month block is younger than their retailer's masking age ({reasons})"
        )
    if maybe:
        return f"{', '.join(sorted(maybe))} may hold antitrust-masked values (rolling means) of {', '.join(sorted(why))} ({reasons})"
    return None
