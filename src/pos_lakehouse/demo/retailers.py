"""Which demo retailer is generated how: name -> function writing its deliveries and expected totals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pos_lakehouse.demo.generator import write_marche_fr

# Each writer takes (landing folder of the retailer, expected-totals folder) and returns the files written.
DEMO_WRITERS: dict[str, Callable[[Path, Path], list[Path]]] = {
    "marche_fr": lambda landing, expected: write_marche_fr(landing, expected),
}


def write_demo_landing(data_root: Path, only: list[str] | None = None) -> dict[str, list[Path]]:
    """Write every demo retailer's deliveries under `<root>/landing/<retailer>/` and totals under `<root>/expected/`."""
    written = {}
    for name, writer in DEMO_WRITERS.items():
        if only and name not in only:
            continue
        written[name] = writer(data_root / "landing" / name, data_root / "expected")
    return written
