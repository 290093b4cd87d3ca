"""Which demo retailer is generated how: name -> function writing its deliveries and expected totals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pos_lakehouse.demo.file_retailers import (
    write_bigbox_us,
    write_kaufhalle_de,
    write_polder_nl,
    write_prairie_ca,
    write_sakura_jp,
)
from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.demo.reference import CORPORATE_FOLDER, write_corporate_reference

# Each writer takes (landing folder of the retailer, expected-totals folder) and returns the files written.
DEMO_WRITERS: dict[str, Callable[[Path, Path], list[Path]]] = {
    "marche_fr": lambda landing, expected: write_marche_fr(landing, expected),
    "kaufhalle_de": lambda landing, expected: write_kaufhalle_de(landing, expected),
    "bigbox_us": lambda landing, expected: write_bigbox_us(landing, expected),
    "polder_nl": lambda landing, expected: write_polder_nl(landing, expected),
    "prairie_ca": lambda landing, expected: write_prairie_ca(landing, expected),
    "sakura_jp": lambda landing, expected: write_sakura_jp(landing, expected),
}


def write_demo_landing(data_root: Path, only: list[str] | None = None) -> dict[str, list[Path]]:
    """Write every demo retailer's deliveries under `<root>/landing/<retailer>/` and totals under `<root>/expected/`."""
    written = {"_corporate": write_corporate_reference(data_root / "landing" / CORPORATE_FOLDER)}
    for name, writer in DEMO_WRITERS.items():
        if only and name not in only:
            continue
        written[name] = writer(data_root / "landing" / name, data_root / "expected")
    return written
