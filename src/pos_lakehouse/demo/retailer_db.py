"""highstreet_uk's warehouse, simulated: product, store, daily sales and inventory tables with `updated_at`.

Fills a SQLite file by default (the embedded demo source) or any SQLAlchemy URL, e.g. a
PostgreSQL database (`postgresql+psycopg://user:pw@127.0.0.1:5432/db`). Deterministic:
the same seed writes the same rows; `updated_at` comes from a logical clock that continues
from the newest value in the database, so changes made later always look newer — except
`late_commit`, which writes a row stamped in the past, as a long transaction does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from pos_lakehouse.demo.generator import DEMO_START, _day_rows, catalogue, gln13, gtin13, write_expected

RETAILER = "highstreet_uk"
CLOCK_START = datetime(2026, 10, 1, 6, 0)
_TOWNS = {
    "Paris": "London",
    "Lyon": "Manchester",
    "Marseille": "Bristol",
    "Lille": "Leeds",
    "Toulouse": "Glasgow",
    "Nantes": "Cardiff",
    "Bordeaux": "Birmingham",
    "Rennes": "Norwich",
}

metadata = sa.MetaData()
products = sa.Table(
    "products",
    metadata,
    sa.Column("product_code", sa.String(20), primary_key=True),
    sa.Column("barcode", sa.String(14)),
    sa.Column("description", sa.String(200)),
    sa.Column("brand", sa.String(100)),
    sa.Column("department", sa.String(100)),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)
stores = sa.Table(
    "stores",
    metadata,
    sa.Column("store_no", sa.String(10), primary_key=True),
    sa.Column("store_name", sa.String(200)),
    sa.Column("gln", sa.String(13)),
    sa.Column("town", sa.String(100)),
    sa.Column("county", sa.String(100)),
    sa.Column("store_format", sa.String(50)),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)
daily_sales = sa.Table(
    "daily_sales",
    metadata,
    sa.Column("trade_date", sa.Date, primary_key=True),
    sa.Column("store_no", sa.String(10), primary_key=True),
    sa.Column("product_code", sa.String(20), primary_key=True),
    sa.Column("units_sold", sa.Integer, nullable=False),
    sa.Column("sales_gbp", sa.Numeric(14, 2), nullable=False),
    sa.Column("units_returned", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)
inventory = sa.Table(
    "inventory",
    metadata,
    sa.Column("snapshot_date", sa.Date, primary_key=True),
    sa.Column("store_no", sa.String(10), primary_key=True),
    sa.Column("product_code", sa.String(20), primary_key=True),
    sa.Column("on_hand", sa.Integer, nullable=False),
    sa.Column("on_order", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


@dataclass
class RetailerDatabase:
    """The warehouse at `url`: create it, add days of trading, restate rows, commit late."""

    url: str
    seed: int = 1005
    n_products: int = 60
    n_stores: int = 8
    density: float = 0.35
    start: date = DEMO_START
    engine: sa.Engine = field(init=False)

    def __post_init__(self) -> None:
        u = sa.make_url(self.url)
        if u.get_backend_name() == "sqlite" and u.database:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("", "psycopg2"):
            u = u.set(drivername="postgresql+psycopg")
        self.engine = sa.create_engine(u)
        self._rng = np.random.default_rng(self.seed)
        self._cat = catalogue(self.n_products, self.n_stores, self._rng)

    # ---- clock ----------------------------------------------------------------------------
    def _now(self, conn) -> datetime:
        newest = [conn.execute(sa.select(sa.func.max(t.c.updated_at))).scalar() for t in (products, stores, daily_sales, inventory)]
        newest = [n for n in newest if n is not None]
        return (max(newest) if newest else CLOCK_START) + timedelta(seconds=1)

    def days_loaded(self) -> int:
        with self.engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(daily_sales.c.trade_date))).scalar()
        return 0 if last is None else (last - self.start).days + 1

    # ---- writing --------------------------------------------------------------------------
    def create(self) -> RetailerDatabase:
        """Tables and master data (idempotent: an existing warehouse is kept as it is)."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(products)).scalar():
                return self
            ts = self._now(conn)
            conn.execute(
                products.insert(),
                [
                    {
                        "product_code": f"HS{i:06d}",
                        "barcode": gtin13(800_000 + i),
                        "description": f"Highstreet Product {i:05d}",
                        "brand": p["marque"],
                        "department": p["categorie"],
                        "updated_at": ts,
                    }
                    for i, p in enumerate(self._cat.products.iter_rows(named=True))
                ],
            )
            conn.execute(
                stores.insert(),
                [
                    {
                        "store_no": f"UK{i:03d}",
                        "store_name": f"Highstreet {_TOWNS.get(s['ville'], s['ville'])} {i:03d}",
                        "gln": gln13(900_000 + i),
                        "town": _TOWNS.get(s["ville"], s["ville"]),
                        "county": f"Greater {_TOWNS.get(s['ville'], s['ville'])}",
                        "store_format": s["format_magasin"],
                        "updated_at": ts,
                    }
                    for i, s in enumerate(self._cat.stores.iter_rows(named=True))
                ],
            )
        return self

    def add_days(self, n: int) -> list[date]:
        """The next `n` trading days: one transaction per day with sales and end-of-day inventory."""
        done = self.days_loaded()
        # Replay the generator to the same position so re-opening a warehouse continues it deterministically.
        rng = np.random.default_rng(self.seed + 1)
        added = []
        for d in range(done + n):
            day = self.start + timedelta(days=d)
            rows = _day_rows(self._cat, day, rng, self.density)
            if d < done:
                continue
            with self.engine.begin() as conn:
                ts = self._now(conn)
                sales, stock = [], []
                for r in rows.iter_rows(named=True):
                    key = {"store_no": f"UK{r['s']:03d}", "product_code": f"HS{r['p']:06d}"}
                    sales.append(
                        key
                        | {
                            "trade_date": day,
                            "units_sold": int(r["qte_vendue"]),
                            "sales_gbp": Decimal(int(r["ca_cents"])) / 100,
                            "units_returned": int(r["qte_retournee"]),
                            "updated_at": ts,
                        }
                    )
                    stock.append(
                        key
                        | {
                            "snapshot_date": day,
                            "on_hand": int(r["stock_fin_journee"]),
                            "on_order": int(r["qte_en_commande"]),
                            "updated_at": ts,
                        }
                    )
                conn.execute(daily_sales.insert(), sales)
                conn.execute(inventory.insert(), stock)
            added.append(day)
        return added

    def restate(self, trade_date: date, store_no: str, product_code: str, units: int, sales_gbp: Decimal) -> None:
        """A correction of a past day's sale: the row changes and gets a new `updated_at`."""
        with self.engine.begin() as conn:
            ts = self._now(conn)
            hit = conn.execute(
                daily_sales.update()
                .where(
                    daily_sales.c.trade_date == trade_date, daily_sales.c.store_no == store_no, daily_sales.c.product_code == product_code
                )
                .values(units_sold=units, sales_gbp=sales_gbp, updated_at=ts)
            ).rowcount
        if hit != 1:
            raise KeyError(f"no sale {trade_date} {store_no} {product_code}")

    def late_commit(self, trade_date: date, store_no: str, product_code: str, units: int, sales_gbp: Decimal, seconds_ago: int) -> None:
        """A row whose transaction began `seconds_ago` before the newest change but commits only now."""
        with self.engine.begin() as conn:
            ts = self._now(conn) - timedelta(seconds=seconds_ago)
            conn.execute(
                daily_sales.insert(),
                [
                    {
                        "trade_date": trade_date,
                        "store_no": store_no,
                        "product_code": product_code,
                        "units_sold": units,
                        "sales_gbp": sales_gbp,
                        "units_returned": 0,
                        "updated_at": ts,
                    }
                ],
            )

    def sales_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(daily_sales))]

    # ---- expected totals --------------------------------------------------------------------
    def expected_totals(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    daily_sales.c.trade_date, sa.func.count(), sa.func.sum(daily_sales.c.units_sold), sa.func.sum(daily_sales.c.sales_gbp)
                )
                .group_by(daily_sales.c.trade_date)
                .order_by(daily_sales.c.trade_date)
            ).all()
        return [
            {
                "retailer": RETAILER,
                "table": "store_day_fact",
                "date": d if isinstance(d, date) else date.fromisoformat(str(d)),
                "rows": int(n),
                "pos_sales_units": str(int(u)),
                "pos_sales_value_lc": str(Decimal(str(v)).quantize(Decimal("0.01"))),
            }
            for d, n, u, v in rows
        ]

    def write_expected(self, expected_dir: Path) -> Path:
        return write_expected(expected_dir, RETAILER, self.expected_totals())

    def dispose(self) -> None:
        self.engine.dispose()


def write_highstreet_uk(url: str, expected_dir: Path, *, days: int = 30, **kwargs) -> RetailerDatabase:
    """The demo warehouse with `days` days of trading, and its expected totals."""
    db = RetailerDatabase(url, **kwargs).create()
    missing = days - db.days_loaded()
    if missing > 0:
        db.add_days(missing)
    db.write_expected(expected_dir)
    return db
