"""bigbox_us-shaped store files (one pipe-delimited file per store, every date) over days ending
yesterday, on a lake with corporate reference data: the large-delivery tests' shared set-up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from conftest import spec_named

from pos_lakehouse.demo.file_retailers import _US_BRANDS, _US_DEPTS, _US_STATES, bigbox_store_frame
from pos_lakehouse.demo.reference import write_corporate_reference
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.reference import load_reference_file
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake


def write_store(landing_dir: Path, rng, store: int, dates: list[date], price, drop_every: int = 0) -> int:
    """One store's file over `dates` (every `drop_every`-th row left out when set); returns its rows."""
    frame, _ = bigbox_store_frame(rng, store, dates, price, _US_BRANDS, _US_DEPTS, _US_STATES[store % len(_US_STATES)], 0.6)
    if drop_every:
        frame = frame.filter(pl.int_range(pl.len()) % drop_every != 0)
    frame.write_csv(landing_dir / f"bigbox_us_store_{store:04d}_{dates[0]:%Y%m%d}_{dates[-1]:%Y%m%d}.txt", separator="|")
    return frame.height


class BigboxStores(NamedTuple):
    """What the set-up made; unpacks in this order."""

    spec: RetailerSpec
    lake: Lake
    landing: LocalLandingZone
    landing_dir: Path
    rng: np.random.Generator
    price: np.ndarray
    dates: list[date]


def bigbox_stores(root: Path, *, products: int, days: int, stores: int, seed: int, reference: tuple[int, int]) -> BigboxStores:
    """Every store's file over `days` days ending yesterday, in bigbox_us's landing folder under `root`,
    on a lake holding corporate reference data for `reference` (products, sites)."""
    spec = spec_named("bigbox_us")
    lake = Lake(root=str(root))
    for path in write_corporate_reference(root / "corporate", products=reference[0], sites=reference[1]):
        load_reference_file(lake, path.stem, path)
    landing_dir = root / "landing" / spec.name
    landing_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    price = rng.integers(97, 4999, products)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    dates = [yesterday - timedelta(days=days - 1 - d) for d in range(days)]
    for store in range(1, stores + 1):
        write_store(landing_dir, rng, store, dates, price)
    return BigboxStores(spec, lake, LocalLandingZone(root=str(root / "landing")), landing_dir, rng, price, dates)
