"""Deterministic deliveries of the file-based demo retailers: every file shape retailers really send.

| retailer     | shape                                                                     |
| ------------ | ------------------------------------------------------------------------- |
| kaufhalle_de | separate product, store and sales CSVs (`;`, decimal comma, latin-1); one sales file per week holding its 7 dates |
| bigbox_us    | one pipe-delimited file per store holding every date of the period, product and store columns inline |
| polder_nl    | one .xlsx per week holding week-ending totals (-> store_week_fact)        |
| prairie_ca   | one gzipped CSV per week holding every day of the previous week           |
| sakura_jp    | several files per date: sales CSV (with product and store columns) and inventory JSON lines, JPY |

Like `generator.write_marche_fr`, each writer is seeded (same arguments, same bytes), keeps
money in integer cents until it is written, and records the totals it put into the files with
`write_expected` so gold can be reconciled exactly.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from pos_lakehouse.demo.generator import DEMO_START, gln13, gtin13, upc12, write_expected


@dataclass(frozen=True)
class Day:
    """One day's sales lines: store index, product index and measures (money in cents)."""

    day: date
    s: np.ndarray
    p: np.ndarray
    units: np.ndarray
    value_cents: np.ndarray
    returns: np.ndarray
    stock: np.ndarray
    on_order: np.ndarray


def _day(rng: np.random.Generator, day: date, n_stores: int, price_cents: np.ndarray, density: float) -> Day:
    mask = rng.random((n_stores, len(price_cents))) < density
    s, p = np.nonzero(mask)
    n = len(s)
    units = rng.integers(1, 40, n)
    returns = np.where(rng.random(n) < 0.03, rng.integers(1, 3, n), 0)
    stock = rng.integers(0, 200, n)
    on_order = np.where(rng.random(n) < 0.2, rng.integers(10, 100, n), 0)
    return Day(day, s, p, units, units * price_cents[p], returns, stock, on_order)


def _total(retailer: str, day: date, rows: int, units: int, cents: int, table: str = "store_day_fact") -> dict:
    return {
        "retailer": retailer,
        "table": table,
        "date": day,
        "rows": rows,
        "pos_sales_units": str(Decimal(units)),
        "pos_sales_value_lc": str(Decimal(cents) / 100),
    }


def _money(cents: int, decimal_comma: bool = False, thousands: bool = False) -> str:
    """Cents as a decimal string; optionally German style (`1.234,56`)."""
    whole, frac = divmod(int(cents), 100)
    whole_s = f"{whole:,}".replace(",", ".") if thousands else str(whole)
    return f"{whole_s}{',' if decimal_comma else '.'}{frac:02d}"


# ---------------------------------------------------------------------------------------------
# kaufhalle_de (1002): separate dims and facts, `;`, decimal comma, latin-1, one file many dates
# ---------------------------------------------------------------------------------------------
_DE_PRODUCTS = ["Müsli Früchte", "Käse Gouda", "Weißbier", "Grüner Tee", "Süße Brötchen", "Öl Sonnenblume", "Straußeneier", "Bärchen Gummi"]
_DE_BRANDS = ["Bäckerei Groß", "Alpenmühle", "Nordsee Frisch", "Hofgut Müller", "Schöne Küche"]
_DE_CATEGORIES = ["Frühstück", "Molkerei", "Getränke", "Süßwaren", "Grundnahrung"]
_DE_CITIES = [
    ("München", "Bayern"),
    ("Köln", "Nordrhein-Westfalen"),
    ("Düsseldorf", "Nordrhein-Westfalen"),
    ("Nürnberg", "Bayern"),
    ("Görlitz", "Sachsen"),
    ("Lübeck", "Schleswig-Holstein"),
    ("Tübingen", "Baden-Württemberg"),
]


def _csv_text(header: list[str], rows: list[list[str]], sep: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_kaufhalle_de(
    landing: Path,
    expected: Path,
    *,
    weeks: int = 3,
    start: date = DEMO_START,
    n_products: int = 120,
    n_stores: int = 10,
    density: float = 0.3,
    seed: int = 1002,
) -> list[Path]:
    """kaufhalle_de (1002): `artikel` and `filialen` master files, then one `umsatz` file per week holding 7 dates."""
    rng = np.random.default_rng(seed)
    landing.mkdir(parents=True, exist_ok=True)
    price = rng.integers(49, 2999, n_products)
    stamp = start.strftime("%Y%m%d")
    products = [
        [
            f"{100000 + i}",
            gtin13(200000 + i),
            f"{_DE_PRODUCTS[i % len(_DE_PRODUCTS)]} {i:03d}",
            _DE_BRANDS[int(rng.integers(0, len(_DE_BRANDS)))],
            _DE_CATEGORIES[int(rng.integers(0, len(_DE_CATEGORIES)))],
            _money(int(price[i]), decimal_comma=True),
            "0,25" if i % 5 == 0 else "0,00",
        ]
        for i in range(n_products)
    ]
    stores = []
    for i in range(n_stores):
        city, land = _DE_CITIES[int(rng.integers(0, len(_DE_CITIES)))]
        stores.append(
            [
                f"F{i:03d}",
                gln13(500000 + i),
                f"Kaufhalle {city} {i:03d}",
                f"Hauptstraße {i + 1}",
                city,
                land,
                ["Markt", "Großmarkt", "Express"][i % 3],
            ]
        )
    written = []
    for name, header, rows in (
        (
            f"kaufhalle_artikel_{stamp}.csv",
            ["Artikelnummer", "EAN", "Bezeichnung", "Marke", "Warengruppe", "Grundpreis", "Pfand"],
            products,
        ),
        (f"kaufhalle_filialen_{stamp}.csv", ["Filiale", "GLN", "Filialname", "Straße", "Stadt", "Bundesland", "Vertriebslinie"], stores),
    ):
        path = landing / name
        path.write_bytes(_csv_text(header, rows, ";").encode("latin-1"))
        written.append(path)
    totals = []
    for w in range(weeks):
        lines = []
        for d in range(7):
            day = start + timedelta(days=7 * w + d)
            sales = _day(rng, day, n_stores, price, density)
            for k in range(len(sales.s)):
                lines.append(
                    [
                        day.strftime("%d.%m.%Y"),
                        f"F{sales.s[k]:03d}",
                        f"{100000 + sales.p[k]}",
                        str(sales.units[k]),
                        _money(int(sales.value_cents[k]), decimal_comma=True, thousands=True),
                        str(sales.returns[k]),
                    ]
                )
            totals.append(_total("kaufhalle_de", day, len(sales.s), int(sales.units.sum()), int(sales.value_cents.sum())))
        first = start + timedelta(days=7 * w)
        path = landing / f"kaufhalle_umsatz_{first.strftime('%Y%m%d')}_{(first + timedelta(days=6)).strftime('%Y%m%d')}.csv"
        path.write_bytes(_csv_text(["Datum", "Filiale", "Artikel", "Menge", "Umsatz", "Retouren"], lines, ";").encode("latin-1"))
        written.append(path)
    write_expected(expected, "kaufhalle_de", totals)
    return written


# ---------------------------------------------------------------------------------------------
# bigbox_us (1003): one pipe-delimited file per store, many dates, product/store columns inline
# ---------------------------------------------------------------------------------------------
_US_STATES = [("Bentonville", "AR"), ("Dallas", "TX"), ("Columbus", "OH"), ("Phoenix", "AZ"), ("Atlanta", "GA"), ("Denver", "CO")]
_US_DEPTS = ["GROCERY", "HOUSEHOLD", "PERSONAL CARE", "BEVERAGE", "FROZEN"]
_US_BRANDS = ["Great Value", "Lakeside", "Summit", "Prairie Gold", "Blue Ridge", "Redwood"]


def bigbox_store_frame(
    rng: np.random.Generator,
    store: int,
    days: list[date],
    price: np.ndarray,
    brands: list[str],
    depts: list[str],
    city: tuple[str, str],
    density: float,
) -> tuple[pl.DataFrame, list[tuple[date, int, int, int]]]:
    """One store's file content (every date) and its (date, rows, units, cents) totals; also used by the benchmark."""
    frames, totals = [], []
    for day in days:
        sales = _day(rng, day, 1, price, density)
        p = sales.p
        frames.append(
            pl.DataFrame(
                {
                    "STORE_NBR": np.full(len(p), store, dtype=np.int64),
                    "ITEM_NBR": p + 10_000,
                    "SALES_DATE": [day.strftime("%m/%d/%Y")] * len(p),
                    "UNIT_QTY": sales.units,
                    "CENTS": sales.value_cents,
                    "RETURN_QTY": sales.returns,
                    "ON_HAND_QTY": sales.stock,
                    "WM_WEEK": [f"{day.isocalendar().year}{day.isocalendar().week:02d}"] * len(p),
                }
            )
        )
        totals.append((day, len(p), int(sales.units.sum()), int(sales.value_cents.sum())))
    frame = pl.concat(frames)
    n_products = len(price)
    product_cols = pl.DataFrame(
        {
            "ITEM_NBR": np.arange(n_products) + 10_000,
            "UPC": [upc12(300000 + i) for i in range(n_products)],
            "ITEM_DESC": [f"ITEM {i:05d} {['12OZ', '1GAL', '6PK', '32CT'][i % 4]}" for i in range(n_products)],
            "BRAND": [brands[i % len(brands)] for i in range(n_products)],
            "DEPT": [depts[i % len(depts)] for i in range(n_products)],
        }
    )
    frame = frame.join(product_cols, on="ITEM_NBR", how="left").select(
        pl.col("STORE_NBR").cast(pl.String).str.zfill(4),
        pl.lit(f"BIGBOX SUPERCENTER #{store:04d}").alias("STORE_NAME"),
        pl.lit(city[0]).alias("CITY"),
        pl.lit(city[1]).alias("STATE"),
        pl.col("ITEM_NBR").cast(pl.String),
        "UPC",
        "ITEM_DESC",
        "BRAND",
        "DEPT",
        "WM_WEEK",
        "SALES_DATE",
        "UNIT_QTY",
        pl.format("{}.{}", pl.col("CENTS") // 100, (pl.col("CENTS") % 100).cast(pl.String).str.zfill(2)).alias("SALES_AMT"),
        "RETURN_QTY",
        "ON_HAND_QTY",
    )
    return frame, totals


def write_bigbox_us(
    landing: Path,
    expected: Path,
    *,
    days: int = 28,
    start: date = DEMO_START,
    n_products: int = 300,
    n_stores: int = 16,
    density: float = 0.4,
    seed: int = 1003,
) -> list[Path]:
    """bigbox_us (1003): one `|`-delimited file per store holding every date of the period (SharePoint sync)."""
    rng = np.random.default_rng(seed)
    landing.mkdir(parents=True, exist_ok=True)
    price = rng.integers(97, 4999, n_products)
    dates = [start + timedelta(days=d) for d in range(days)]
    per_day: dict[date, list[int]] = {d: [0, 0, 0] for d in dates}
    written = []
    for store in range(1, n_stores + 1):
        frame, totals = bigbox_store_frame(rng, store, dates, price, _US_BRANDS, _US_DEPTS, _US_STATES[store % len(_US_STATES)], density)
        for day, rows, units, cents in totals:
            acc = per_day[day]
            acc[0] += rows
            acc[1] += units
            acc[2] += cents
        path = landing / f"bigbox_us_store_{store:04d}_{dates[0]:%Y%m%d}_{dates[-1]:%Y%m%d}.txt"
        frame.write_csv(path, separator="|")
        written.append(path)
    write_expected(expected, "bigbox_us", [_total("bigbox_us", d, v[0], v[1], v[2]) for d, v in per_day.items()])
    return written


# ---------------------------------------------------------------------------------------------
# polder_nl (1006): weekly Excel with week-ending totals -> store_week_fact
# ---------------------------------------------------------------------------------------------
_NL_CITIES = ["Amsterdam", "Rotterdam", "Utrecht", "Den Haag", "Eindhoven", "Groningen", "Tilburg", "Almere"]
_NL_CATEGORIES = ["Zuivel", "Brood", "Dranken", "Snoep", "Groente", "Huishouden"]
_NL_BRANDS = ["Hollandse Glorie", "Molenaar", "Tulp", "Zeeuws Meisje", "De Vries"]


def write_polder_nl(
    landing: Path,
    expected: Path,
    *,
    weeks: int = 6,
    start: date = DEMO_START,
    n_products: int = 80,
    n_stores: int = 8,
    density: float = 0.6,
    seed: int = 1006,
) -> list[Path]:
    """polder_nl (1006): one `.xlsx` per week, one week-ending date, weekly totals per store and product."""
    rng = np.random.default_rng(seed)
    landing.mkdir(parents=True, exist_ok=True)
    price = rng.integers(59, 1999, n_products)
    first_sunday = start + timedelta(days=(6 - start.weekday()) % 7)
    written, totals = [], []
    for w in range(weeks):
        week_end = first_sunday + timedelta(days=7 * w)
        sales = _day(rng, week_end, n_stores, price, density)
        units = sales.units * 5  # a week of sales
        cents = units * price[sales.p]
        frame = pl.DataFrame(
            {
                "Weekeinde": [week_end] * len(sales.s),
                "Winkelnummer": [f"W{s:03d}" for s in sales.s],
                "Winkelnaam": [f"Polder {_NL_CITIES[s % len(_NL_CITIES)]} {s:03d}" for s in sales.s],
                "Plaats": [_NL_CITIES[s % len(_NL_CITIES)] for s in sales.s],
                "Artikelnummer": [f"NL{p:05d}" for p in sales.p],
                "EAN": [gtin13(400000 + int(p)) for p in sales.p],
                "Omschrijving": [f"Product {p:05d}" for p in sales.p],
                "Merk": [_NL_BRANDS[p % len(_NL_BRANDS)] for p in sales.p],
                "Categorie": [_NL_CATEGORIES[p % len(_NL_CATEGORIES)] for p in sales.p],
                "Aantal": units,
                # Excel stores numbers as doubles; two-decimal values round-trip exactly through their shortest repr.
                "Omzet": cents / 100,
                "Voorraad": sales.stock,
            }
        )
        path = landing / f"polder_nl_week_{week_end.isoformat()}.xlsx"
        frame.write_excel(path, worksheet="Verkopen", dtype_formats={pl.Date: "yyyy-mm-dd"})
        written.append(path)
        totals.append(_total("polder_nl", week_end, len(sales.s), int(units.sum()), int(cents.sum()), table="store_week_fact"))
    write_expected(expected, "polder_nl", totals)
    return written


# ---------------------------------------------------------------------------------------------
# prairie_ca (1007): weekly gzipped CSV holding every day of the previous week
# ---------------------------------------------------------------------------------------------
_CA_PROVINCES = [("Winnipeg", "MB"), ("Regina", "SK"), ("Saskatoon", "SK"), ("Calgary", "AB"), ("Edmonton", "AB"), ("Brandon", "MB")]
_CA_PRODUCTS = ["Maple Syrup, Grade A", "Bannock Mix", "Wild Rice", "Perogies, Potato & Cheddar", "Butter Tarts", "Saskatoon Berry Jam"]


def write_prairie_ca(
    landing: Path,
    expected: Path,
    *,
    weeks: int = 4,
    start: date = DEMO_START,
    n_products: int = 90,
    n_stores: int = 9,
    density: float = 0.35,
    seed: int = 1007,
) -> list[Path]:
    """prairie_ca (1007): every Monday a `.csv.gz` with each day of the previous week (Monday to Sunday)."""
    rng = np.random.default_rng(seed)
    landing.mkdir(parents=True, exist_ok=True)
    price = rng.integers(129, 2599, n_products)
    monday = start - timedelta(days=start.weekday())
    header = [
        " Store Number ",
        "Store Name",
        "City",
        "Province",
        "Product Code",
        "UPC",
        "Product Description",
        "Brand",
        "Category",
        "Business Date",
        "Units Sold",
        "Net Sales CAD",
        "Units Returned",
        "Promo Flag",
    ]
    written, totals = [], []
    for w in range(weeks):
        week_start = monday + timedelta(days=7 * w)
        lines = []
        for d in range(7):
            day = week_start + timedelta(days=d)
            sales = _day(rng, day, n_stores, price, density)
            for k in range(len(sales.s)):
                s, p = int(sales.s[k]), int(sales.p[k])
                city, prov = _CA_PROVINCES[s % len(_CA_PROVINCES)]
                lines.append(
                    [
                        f"{s + 1:03d}",
                        f"Prairie Co-op {city} {s + 1:03d}",
                        city,
                        prov,
                        f"PC-{p:04d}",
                        upc12(600000 + p),
                        f"{_CA_PRODUCTS[p % len(_CA_PRODUCTS)]} #{p}",
                        "Prairie Harvest",
                        "Pantry",
                        day.isoformat(),
                        str(sales.units[k]),
                        _money(int(sales.value_cents[k])),
                        str(sales.returns[k]),
                        "Y" if k % 7 == 0 else "N",
                    ]
                )
            totals.append(_total("prairie_ca", day, len(sales.s), int(sales.units.sum()), int(sales.value_cents.sum())))
        week_end = week_start + timedelta(days=6)
        path = landing / f"prairie_ca_sales_week_{week_end.isoformat()}.csv.gz"
        # mtime=0 keeps the gzip bytes identical run after run (deterministic delivery ids).
        path.write_bytes(gzip.compress(_csv_text(header, lines, ",").encode("utf-8"), mtime=0))
        written.append(path)
    write_expected(expected, "prairie_ca", totals)
    return written


# ---------------------------------------------------------------------------------------------
# sakura_jp (1008): several files per date, sales and inventory apart, JPY
# ---------------------------------------------------------------------------------------------
_JP_PREFS = [("東京都", "新宿"), ("大阪府", "梅田"), ("愛知県", "名古屋"), ("福岡県", "天神"), ("北海道", "札幌")]
_JP_PRODUCTS = ["緑茶", "おにぎり 鮭", "味噌汁", "カップ麺", "抹茶アイス", "醤油"]
_JP_BRANDS = ["さくら食品", "富士", "やまと", "ひかり"]


def write_sakura_jp(
    landing: Path,
    expected: Path,
    *,
    days: int = 10,
    start: date = DEMO_START,
    n_products: int = 70,
    n_stores: int = 6,
    density: float = 0.35,
    seed: int = 1008,
) -> list[Path]:
    """sakura_jp (1008): per date a sales CSV (with product and store columns) and an inventory JSON-lines file, in yen."""
    rng = np.random.default_rng(seed)
    landing.mkdir(parents=True, exist_ok=True)
    price_yen = rng.integers(98, 2980, n_products)
    price_cents = price_yen * 100
    seen_products: set[int] = set()
    seen_stores: set[int] = set()
    written, totals = [], []
    for d in range(days):
        day = start + timedelta(days=d)
        sales = _day(rng, day, n_stores, price_cents, density)
        lines = []
        for k in range(len(sales.s)):
            s, p = int(sales.s[k]), int(sales.p[k])
            pref, town = _JP_PREFS[s % len(_JP_PREFS)]
            lines.append(
                [
                    f"S{s:03d}",
                    f"さくらマート {town}{s:03d}",
                    pref,
                    f"J{p:05d}",
                    gtin13(700000 + p),
                    f"{_JP_PRODUCTS[p % len(_JP_PRODUCTS)]} {p:03d}",
                    _JP_BRANDS[p % len(_JP_BRANDS)],
                    "食品",
                    day.strftime("%Y/%m/%d"),
                    str(sales.units[k]),
                    str(int(sales.value_cents[k]) // 100),
                ]
            )
        seen_products.update(int(p) for p in sales.p)
        seen_stores.update(int(s) for s in sales.s)
        sales_path = landing / f"sakura_jp_sales_{day:%Y%m%d}.csv"
        sales_path.write_bytes(
            _csv_text(
                [
                    "店舗コード",
                    "店舗名",
                    "都道府県",
                    "商品コード",
                    "JANコード",
                    "商品名",
                    "ブランド",
                    "カテゴリ",
                    "売上日",
                    "売上数量",
                    "売上金額",
                ],
                lines,
                ",",
            ).encode("utf-8")
        )
        # Stock is reported for items the store carries (sold here before or today) -- also unsold ones.
        inv_stores = np.array(sorted(seen_stores))
        inv_products = np.array(sorted(seen_products))
        carried = rng.random((len(inv_stores), len(inv_products))) < 0.5
        si, pi = np.nonzero(carried)
        stock = rng.integers(0, 300, len(si))
        on_order = np.where(rng.random(len(si)) < 0.15, rng.integers(12, 120, len(si)), 0)
        inv_path = landing / f"sakura_jp_inventory_{day:%Y%m%d}.jsonl"
        inv_path.write_text(
            "".join(
                json.dumps(
                    {
                        "store_code": f"S{inv_stores[a]:03d}",
                        "item_code": f"J{inv_products[b]:05d}",
                        "stock_date": day.isoformat(),
                        "on_hand": int(h),
                        "on_order": int(o),
                    },
                    ensure_ascii=False,
                )
                + "\n"
                for a, b, h, o in zip(si, pi, stock, on_order)
            ),
            encoding="utf-8",
        )
        keys = set(zip(sales.s.tolist(), sales.p.tolist())) | {(int(inv_stores[a]), int(inv_products[b])) for a, b in zip(si, pi)}
        totals.append(_total("sakura_jp", day, len(keys), int(sales.units.sum()), int(sales.value_cents.sum())))
        written += [sales_path, inv_path]
    write_expected(expected, "sakura_jp", totals)
    return written
