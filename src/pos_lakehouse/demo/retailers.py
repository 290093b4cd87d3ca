"""Which demo retailer is generated how: name -> function writing its deliveries and expected totals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pos_lakehouse.demo.file_retailers import (
    write_bigbox_us,
    write_kaufhalle_de,
    write_polder_nl,
    write_prairie_ca,
    write_sakura_jp,
)
from pos_lakehouse.demo.generator import DEMO_LAST_DAY, last_week_end, write_marche_fr
from pos_lakehouse.demo.reference import CORPORATE_FOLDER, write_corporate_reference

# Each writer takes (landing folder of the retailer, expected-totals folder) and returns the files written.
# Dates are relative to today: daily retailers deliver up to yesterday (also those whose files hold
# many dates), weekly ones up to the last finished week (ending on Sunday, their `week_ends_on`).
DEMO_WRITERS: dict[str, Callable[[Path, Path], list[Path]]] = {
    "marche_fr": lambda landing, expected: write_marche_fr(landing, expected, days=60, start=DEMO_LAST_DAY - timedelta(days=59)),
    "kaufhalle_de": lambda landing, expected: write_kaufhalle_de(landing, expected, weeks=3, start=DEMO_LAST_DAY - timedelta(days=20)),
    "bigbox_us": lambda landing, expected: write_bigbox_us(landing, expected, days=28, start=DEMO_LAST_DAY - timedelta(days=27)),
    "polder_nl": lambda landing, expected: write_polder_nl(landing, expected, weeks=6, start=last_week_end() - timedelta(weeks=5)),
    "prairie_ca": lambda landing, expected: write_prairie_ca(landing, expected, weeks=4, start=last_week_end() - timedelta(days=27)),
    "sakura_jp": lambda landing, expected: write_sakura_jp(landing, expected, days=10, start=DEMO_LAST_DAY - timedelta(days=9)),
}

# The demo's retailers pulled from its sources (API simulator, warehouse) rather than written to landing.
PULLED_DEMO_RETAILERS = ("shopnow_us", "highstreet_uk")
# Every retailer the demo ships a YAML for (in `defs/retailers/<name>/`); the tests load copies of these.
DEMO_RETAILERS = (*DEMO_WRITERS, *PULLED_DEMO_RETAILERS)


def write_demo_landing(data_root: Path, only: list[str] | None = None) -> dict[str, list[Path]]:
    """Write every demo retailer's deliveries under `<root>/landing/<retailer>/` and totals under `<root>/expected/`."""
    written = {"_corporate": write_corporate_reference(data_root / "landing" / CORPORATE_FOLDER)}
    for name, writer in DEMO_WRITERS.items():
        if only and name not in only:
            continue
        written[name] = writer(data_root / "landing" / name, data_root / "expected")
    return written
