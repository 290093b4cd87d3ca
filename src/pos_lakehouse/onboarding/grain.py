"""File kinds, cadence and grain from file names and the dates inside the files.

Pure functions: file names in, glob patterns and observation-date patterns out; per-file date
sets in, the grain (daily or week-ending rows), the cadence and the week's last day out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# A date in a file name: 20261107, 2026-11-07, 2026_11_07.
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})([-_]?)(\d{2})\2(\d{2})(?!\d)")


def kind_glob(file_name: str) -> str:
    """The glob shared by the files of one kind: digit runs (dates, store numbers) become `*`.

    `bigbox_us_store_0001_20261109_20261206.txt` -> `bigbox_us_store_*.txt`.
    """
    glob = re.sub(r"\d+", "*", file_name)
    return re.sub(r"\*(?:[-_.]?\*)+", "*", glob)


def kind_name(glob: str, retailer: str, taken: Sequence[str] = ()) -> str:
    """A bronze table name from the glob: its words without the retailer's name and the wildcards."""
    stem = glob.split(".", 1)[0].lower()
    for prefix in (retailer.lower(), retailer.lower().split("_")[0]):
        stem = stem.removeprefix(prefix)
    name = "_".join(w for w in re.split(r"[^a-z0-9]+", stem.replace("*", " ")) if w and not w.isdigit()) or "sales"
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def name_date(file_name: str) -> tuple[str, str] | None:
    """(regular expression with the date as its group, strftime format) for a file name holding one date."""
    found = list(_NAME_DATE.finditer(file_name))
    if len(found) != 1:
        return None
    m = found[0]
    sep = m.group(2)
    fmt = f"%Y{sep}%m{sep}%d"
    try:
        datetime.strptime(m.group(0), fmt)
    except ValueError:
        return None
    prefix = re.sub(r"\d+", "*", file_name[: m.start()])
    pattern = re.escape(prefix).replace(r"\*", r"\d+") + (
        r"(\d{8})" if not sep else rf"(\d{{4}}{re.escape(sep)}\d{{2}}{re.escape(sep)}\d{{2}})"
    )
    return pattern, fmt


@dataclass
class Grain:
    """The rows' grain and the delivery's rhythm, with the doubts worth a `# REVIEW:`."""

    weekly_rows: bool  # one row per week (store_week_fact), not per day
    cadence: str  # daily | weekly
    week_ends_on: str = "sunday"
    week_date: str = "end"
    notes: list[str] = field(default_factory=list)
    sure: bool = True


def grain_of(dates_per_file: Sequence[Sequence[date]], date_column: str = "") -> Grain:
    """Daily rows or week rows, and daily or weekly deliveries, from the distinct dates of each file."""
    files = [sorted(set(d)) for d in dates_per_file if d]
    if not files:
        return Grain(False, "daily", notes=["no dates found: cadence assumed daily"], sure=False)
    every = sorted({d for f in files for d in f})
    one_per_file = all(len(f) == 1 for f in files)
    steps = {(b - a).days for a, b in zip(every, every[1:])}
    weekdays = {d.weekday() for d in every}
    if len(weekdays) == 1 and (steps <= {7} or (one_per_file and steps and min(steps) >= 7)) and len(every) > 1:
        day = WEEKDAYS[every[0].weekday()]
        starts = bool(re.search(r"start|begin|debut|beginn|anfang", date_column, re.I))
        grain = Grain(True, "weekly", week_date="start" if starts else "end")
        if starts:
            grain.week_ends_on = WEEKDAYS[(every[0] - timedelta(days=1)).weekday()]
            grain.notes.append(f"every date is a {day}, taken as the first day of the week (week_date: start)")
        else:
            grain.week_ends_on = day
            grain.notes.append(f"every date is a {day}: taken as the week's last day (week_date: end, week_ends_on: {day})")
        return grain
    if len(every) == 1:
        return Grain(False, "daily", notes=["only one date in the sample: daily rows and deliveries assumed"], sure=False)
    spans = sorted((f[-1] - f[0]).days + 1 for f in files)
    span = spans[len(spans) // 2]
    if span >= 7:
        grain = Grain(False, "weekly")
        grain.notes.append(f"a file covers {span} days of daily rows: weekly deliveries")
        if span > 7:
            grain.sure = False
            grain.notes.append(f"{span} days per file is more than a week: cadence can only be daily or weekly")
        ends = {f[-1].weekday() for f in files}
        if span == 7 and len(ends) == 1:
            grain.notes.append(f"each file ends on a {WEEKDAYS[ends.pop()]}; week_ends_on (weekly aggregates) left at sunday")
        return grain
    return Grain(False, "daily")


def incremental_kind(rows_per_file: Sequence[int]) -> bool:
    """Files that may arrive empty (or header-only) carry changes only."""
    return any(n == 0 for n in rows_per_file)


def snapshot_overlap(keys_per_file: Sequence[set[str]]) -> float:
    """How much of each file's keys the next file repeats (1.0: full snapshots, near 0: changes only)."""
    pairs = [(a, b) for a, b in zip(keys_per_file, keys_per_file[1:]) if a and b]
    if not pairs:
        return 1.0
    return sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)
