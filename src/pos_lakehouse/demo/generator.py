"""Deterministic demo deliveries and the totals they contain, so gold can be reconciled exactly.

Every number comes from a seeded generator: the same arguments always write the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

# The demo runs up to yesterday, as production data does on any day: the current week and month
# are open (published period-to-date), masking ages and freshness are exercised. Writers whose
# `start` is left at `DEMO_START` write `days` days from 60 days ago (the marche_fr demo ends
# yesterday); `demo.retailers` picks each retailer's start so its last day is its latest one.
DEMO_LAST_DAY = date.today() - timedelta(days=1)
DEMO_START = DEMO_LAST_DAY - timedelta(days=59)


def last_week_end(week_ends_on: int = 6, before: date | None = None) -> date:
    """The latest day on or before `before` (default: yesterday) that ends a week (0=Monday .. 6=Sunday)."""
    day = before or DEMO_LAST_DAY
    return day - timedelta(days=(day.weekday() - week_ends_on) % 7)


_BRANDS = ["Maison Claire", "Bonjour", "Vitalis", "Le Potager", "Nordique", "Soleil", "Atelier", "Prisme"]
_CATEGORIES = ["Epicerie", "Boissons", "Hygiene", "Entretien", "Frais", "Surgeles"]
_CITIES = [
    ("Paris", "Ile-de-France"),
    ("Lyon", "Auvergne-Rhone-Alpes"),
    ("Marseille", "PACA"),
    ("Lille", "Hauts-de-France"),
    ("Toulouse", "Occitanie"),
    ("Nantes", "Pays de la Loire"),
    ("Bordeaux", "Nouvelle-Aquitaine"),
    ("Rennes", "Bretagne"),
]
_FORMATS = ["hyper", "super", "proxi"]


@dataclass(frozen=True)
class Catalogue:
    products: pl.DataFrame
    stores: pl.DataFrame


def gtin13(n: int) -> str:
    """A valid EAN-13 for running number `n` (GS1 check digit)."""
    body = f"376{n:09d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def upc12(n: int) -> str:
    """A valid UPC-A (12 digits) for running number `n`: an EAN-13 starting with 0, without that 0.
    (Cutting the first digit off another EAN-13 leaves a wrong check digit.)"""
    body = f"076{n:09d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return (body + str((10 - total % 10) % 10))[1:]


def gln13(n: int) -> str:
    body = f"301{n:09d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def catalogue(n_products: int, n_stores: int, rng: np.random.Generator) -> Catalogue:
    idx = np.arange(n_products)
    products = pl.DataFrame(
        {
            "code_article": [f"A{i:05d}" for i in idx],
            "ean": [gtin13(int(i)) for i in idx],
            "libelle_article": [f"Produit {i:05d}" for i in idx],
            "marque": [_BRANDS[int(b)] for b in rng.integers(0, len(_BRANDS), n_products)],
            "categorie": [_CATEGORIES[int(c)] for c in rng.integers(0, len(_CATEGORIES), n_products)],
            "prix": np.round(rng.uniform(0.8, 25.0, n_products), 2),
        }
    )
    sidx = np.arange(n_stores)
    city = rng.integers(0, len(_CITIES), n_stores)
    stores = pl.DataFrame(
        {
            "code_magasin": [f"M{i:03d}" for i in sidx],
            "nom_magasin": [f"Marche {_CITIES[int(c)][0]} {i:03d}" for i, c in zip(sidx, city)],
            "gln_magasin": [gln13(int(i)) for i in sidx],
            "ville": [_CITIES[int(c)][0] for c in city],
            "region": [_CITIES[int(c)][1] for c in city],
            "format_magasin": [_FORMATS[int(f)] for f in rng.integers(0, len(_FORMATS), n_stores)],
        }
    )
    return Catalogue(products, stores)


def _day_rows(cat: Catalogue, day: date, rng: np.random.Generator, density: float) -> pl.DataFrame:
    n_p, n_s = cat.products.height, cat.stores.height
    mask = rng.random((n_s, n_p)) < density
    s_idx, p_idx = np.nonzero(mask)
    n = len(s_idx)
    units = rng.integers(1, 40, n)
    returns = np.where(rng.random(n) < 0.03, rng.integers(1, 3, n), 0)
    price = cat.products["prix"].to_numpy()[p_idx]
    stock = rng.integers(0, 200, n)
    on_order = np.where(rng.random(n) < 0.2, rng.integers(10, 100, n), 0)
    frame = pl.DataFrame(
        {
            "date_vente": [day] * n,
            "s": s_idx,
            "p": p_idx,
            "qte_vendue": units,
            # Cents as integers until the very end keeps every value exact.
            "ca_cents": np.round(units * price * 100).astype(np.int64),
            "qte_retournee": returns,
            "retour_cents": np.round(returns * price * 100).astype(np.int64),
            "stock_fin_journee": stock,
            "qte_en_commande": on_order,
        }
    )
    return frame


def write_marche_fr(
    landing: Path,
    expected: Path,
    *,
    days: int = 60,
    start: date = DEMO_START,
    n_products: int = 300,
    n_stores: int = 30,
    density: float = 0.4,
    seed: int = 1001,
    renames: dict[int, tuple[int, str]] | None = None,
) -> list[Path]:
    """marche_fr (1001): one Parquet file per day holding product, store, sales and inventory columns.

    `renames` maps a day offset to (product index, new name): from that day the product is
    delivered under its new name (an SCD2 change). Returns the files written, in day order.
    """
    rng = np.random.default_rng(seed)
    cat = catalogue(n_products, n_stores, rng)
    renames = {19: (7, "Produit 00007 Nouvelle Recette")} if renames is None else renames
    landing.mkdir(parents=True, exist_ok=True)
    written, totals = [], []
    products = cat.products
    for d in range(days):
        day = start + timedelta(days=d)
        if d in renames:
            p, new_name = renames[d]
            products = products.with_columns(
                pl.when(pl.int_range(pl.len()) == p).then(pl.lit(new_name)).otherwise(pl.col("libelle_article")).alias("libelle_article")
            )
        rows = _day_rows(cat, day, rng, density)
        frame = (
            rows.join(products.with_row_index("p").with_columns(pl.col("p").cast(pl.Int64)), on="p")
            .join(cat.stores.with_row_index("s").with_columns(pl.col("s").cast(pl.Int64)), on="s")
            .sort("s", "p")
            .select(
                "date_vente",
                "code_magasin",
                "nom_magasin",
                "gln_magasin",
                "ville",
                "region",
                "format_magasin",
                "code_article",
                "ean",
                "libelle_article",
                "marque",
                "categorie",
                "qte_vendue",
                (pl.col("ca_cents").cast(pl.Decimal(18, 2)) / 100).cast(pl.Decimal(18, 2)).alias("ca_ttc_eur"),
                "qte_retournee",
                (pl.col("retour_cents").cast(pl.Decimal(18, 2)) / 100).cast(pl.Decimal(18, 2)).alias("montant_retour_eur"),
                "stock_fin_journee",
                "qte_en_commande",
            )
        )
        path = landing / f"marche_fr_pos_{day.isoformat()}.parquet"
        frame.write_parquet(path)
        written.append(path)
        totals.append(
            {
                "retailer": "marche_fr",
                "date": day,
                "rows": frame.height,
                "pos_sales_units": str(Decimal(int(rows["qte_vendue"].sum()))),
                "pos_sales_value_lc": str(Decimal(int(rows["ca_cents"].sum())) / 100),
            }
        )
    write_expected(expected, "marche_fr", totals)
    return written


def write_expected(expected_dir: Path, retailer: str, totals: list[dict]) -> Path:
    """Expected totals per retailer and date, as the generator put them into the files."""
    expected_dir.mkdir(parents=True, exist_ok=True)
    path = expected_dir / f"{retailer}.csv"
    pl.DataFrame(totals).write_csv(path)
    return path


def read_expected(expected_dir: Path) -> pl.DataFrame:
    frames = [
        pl.read_csv(p, schema_overrides={"date": pl.Date, "pos_sales_units": pl.String, "pos_sales_value_lc": pl.String})
        for p in sorted(expected_dir.glob("*.csv"))
    ]
    # Generators of different retailers write different optional columns (e.g. `table`).
    if not frames:
        return pl.DataFrame()
    expected = pl.concat(frames, how="diagonal_relaxed")
    if "table" not in expected.columns:
        return expected.with_columns(pl.lit("store_day_fact").alias("table"))
    return expected.with_columns(pl.col("table").fill_null("store_day_fact"))
