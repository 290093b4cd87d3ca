"""Deterministic corporate reference data: product master (by GTIN), site master (by GLN), daily FX rates.

The manufacturer's product master covers most, not all, of what retailers sell (competitor
products do not match), so enrichment hits and misses are both exercised.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pos_lakehouse.demo.generator import DEMO_LAST_DAY, gln13, gtin13

CORPORATE_FOLDER = "_corporate"
# Currency -> USD per unit on the first day; a seeded random walk moves it day by day.
FX_START = {"EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CAD": 0.73, "USD": 1.0, "CHF": 1.12}
# Rates up to yesterday, two years back: every demo and test date (relative to today) has one.
FX_LAST_DAY = DEMO_LAST_DAY
FX_FIRST_DAY = FX_LAST_DAY - timedelta(days=729)


def write_corporate_reference(folder: Path, *, products: int = 5000, sites: int = 2000, seed: int = 7) -> list[Path]:
    """Write product_master.csv, site_master.csv and fx_rates.csv into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    # Every 6th running number is a competitor's product: no corporate match.
    numbers = [n for n in range(products) if n % 6 != 5]
    brands = ["Maison Claire", "Bonjour", "Vitalis", "Le Potager", "Nordique"]
    categories = ["Food", "Beverages", "Personal Care", "Home Care", "Fresh", "Frozen"]
    product_master = pl.DataFrame(
        {
            "gtin": [gtin13(n) for n in numbers],
            "corp_product_code": [f"CP{n:06d}" for n in numbers],
            "corp_product_name": [f"Corporate product {n:06d}" for n in numbers],
            "corp_brand": [brands[int(i)] for i in rng.integers(0, len(brands), len(numbers))],
            "corp_category": [categories[int(i)] for i in rng.integers(0, len(categories), len(numbers))],
        }
    )
    site_numbers = [n for n in range(sites) if n % 7 != 6]
    regions = ["North", "South", "East", "West", "Central"]
    site_master = pl.DataFrame(
        {
            "global_location_number": [gln13(n) for n in site_numbers],
            "corp_site_code": [f"CS{n:06d}" for n in site_numbers],
            "corp_customer": [f"Customer {n % 40:02d}" for n in site_numbers],
            "corp_sales_region": [regions[int(i)] for i in rng.integers(0, len(regions), len(site_numbers))],
        }
    )
    days = (FX_LAST_DAY - FX_FIRST_DAY).days + 1
    rows = []
    for currency, start in FX_START.items():
        if currency == "USD":
            walk = np.ones(days)
        else:
            walk = start * np.exp(np.cumsum(rng.normal(0, 0.003, days)))
        for i in range(days):
            rows.append((FX_FIRST_DAY + timedelta(days=i), currency, float(np.round(walk[i], 8))))
    fx = pl.DataFrame(rows, schema={"date": pl.Date, "currency": pl.String, "usd_per_unit": pl.Float64}, orient="row")
    paths = []
    for name, frame in (("product_master", product_master), ("site_master", site_master), ("fx_rates", fx)):
        path = folder / f"{name}.csv"
        frame.write_csv(path)
        paths.append(path)
    return paths
