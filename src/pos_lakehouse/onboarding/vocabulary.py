"""What a column's name says, in the languages retailers write their headers in.

A name is split into words (separators, camelCase, Latin vs. CJK script); each word is looked up
among concepts (store, product, id, name, date, units, value, ...). Rules then say which set of
concepts names which canonical column. Long stems also match inside compound words
(`Artikelnummer`, `Winkelnaam`), short ones only as whole words (`id`, `ca`, `nr`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# concept -> stems. Stems of 4+ letters (and any CJK stem) match inside a word; shorter ones whole.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "store": ("store", "magasin", "filial", "winkel", "shop", "site", "location", "tienda", "branch", "outlet", "boutique", "店舗", "店"),
    "product": ("product", "produit", "producto", "prod", "article", "artikel", "articulo", "item", "sku", "商品", "品"),
    "id": ("id", "nbr", "no", "nr", "num", "number", "nummer", "numero", "code", "cd", "key", "コード", "番号"),
    "name": ("name", "nom", "naam", "nombre", "nome", "名"),
    "desc": ("desc", "description", "descr", "libelle", "omschrijving", "bezeichnung", "beschreibung", "descripcion"),
    "gtin": ("ean", "upc", "gtin", "jan", "barcode", "ean13"),
    "gln": ("gln", "global location"),
    "brand": ("brand", "marque", "marke", "merk", "marca", "ブランド", "メーカー"),
    "category": ("category", "categorie", "categoria", "kategorie", "warengruppe", "dept", "department", "rayon", "カテゴリ", "分類"),
    "sub": ("sub", "subcategory", "unterkategorie"),
    "pack": ("pack", "packsize", "uom", "contenance", "inhalt"),
    "address": ("address", "adresse", "adres", "strasse", "straat", "street", "rue", "calle", "住所"),
    "city": ("city", "ville", "stadt", "plaats", "ciudad", "town", "ort", "市区町村"),
    "region": ("region", "state", "province", "provincie", "bundesland", "prefecture", "county", "都道府県"),
    "country": ("country", "pays", "pais", "国"),
    "channel": ("channel", "format", "formaat", "vertriebslinie", "banner", "canal", "業態"),
    "lat": ("lat", "latitude", "breitengrad"),
    "lon": ("lon", "lng", "longitude", "laengengrad"),
    "date": ("date", "datum", "day", "jour", "dag", "fecha", "data", "日"),
    "week": ("week", "wk", "woche", "semaine", "semana", "週"),
    "start": ("start", "begin", "debut", "beginn", "anfang"),
    "units": (
        "qty",
        "quantity",
        "units",
        "unit",
        "unidad",
        "qte",
        "quantite",
        "menge",
        "aantal",
        "stuks",
        "pieces",
        "cantidad",
        "anzahl",
        "数量",
        "個数",
    ),
    "value": (
        "amount",
        "amt",
        "value",
        "sales",
        "revenue",
        "umsatz",
        "omzet",
        "ca",
        "chiffre",
        "montant",
        "betrag",
        "importe",
        "turnover",
        "金額",
        "売上高",
    ),
    "returns": ("return", "returns", "returned", "retour", "retourne", "retournee", "retouren", "devolucion", "返品"),
    "stock": ("stock", "on hand", "onhand", "voorraad", "bestand", "inventory", "inventaire", "inventario", "在庫"),
    "order": ("order", "commande", "bestellt", "besteld", "bestelling", "pedido", "発注"),
    "price": ("price", "prix", "preis", "prijs", "precio", "単価"),
}

# Words that say which language (hence which country and currency) a header was written in.
LANGUAGE_HINTS: dict[str, tuple[str, ...]] = {
    "FR": ("magasin", "produit", "article", "libelle", "marque", "ville", "vente", "qte", "montant", "retour", "commande", "categorie"),
    "DE": ("filial", "artikel", "bezeichnung", "marke", "warengruppe", "stadt", "bundesland", "datum", "menge", "umsatz", "retouren"),
    "NL": ("winkel", "naam", "omschrijving", "merk", "plaats", "aantal", "omzet", "voorraad", "weekeinde"),
    "ES": ("tienda", "nombre", "fecha", "importe", "cantidad", "articulo", "unidades", "descripcion"),
    "JP": ("店舗", "商品", "売上", "数量", "金額"),
}
CURRENCY_WORDS = {
    "eur": "EUR",
    "usd": "USD",
    "cad": "CAD",
    "gbp": "GBP",
    "jpy": "JPY",
    "yen": "JPY",
    "chf": "CHF",
    "sek": "SEK",
    "aud": "AUD",
}
COUNTRY_CURRENCY = {"FR": "EUR", "DE": "EUR", "NL": "EUR", "ES": "EUR", "JP": "JPY", "US": "USD", "CA": "CAD", "GB": "GBP"}


@dataclass(frozen=True)
class Rule:
    """`target` when the name holds every concept of `needs` and none of `excludes`; `score` ranks rules."""

    target: str
    needs: frozenset[str]
    excludes: frozenset[str] = frozenset()
    score: int = 2


def _rule(target: str, needs: str, excludes: str = "", score: int = 2) -> Rule:
    return Rule(target, frozenset(needs.split()), frozenset(excludes.split()), score)


_NOT_ID = "name desc gtin gln city region address channel brand category"
_MEASURE_OTHER = "returns stock order price date"
RULES: tuple[Rule, ...] = (
    _rule("site_id", "store id", "name desc gln", 4),
    _rule("site_id", "store", _NOT_ID + " units value stock order date", 3),
    _rule("prod_id", "product id", "name desc gtin", 4),
    _rule("prod_id", "product", _NOT_ID + " units value stock order date price", 3),
    _rule("site_name", "store name", "", 4),
    _rule("prod_name", "product name", "", 4),
    _rule("prod_name", "product desc", "", 4),
    _rule("prod_name", "desc", "store", 3),
    _rule("@name", "name", "store product", 2),  # a bare `name`: the dimension whose id determines it decides
    _rule("gtin", "gtin", "gln", 4),
    _rule("global_location_number", "gln", "", 4),
    _rule("brand", "brand", "", 3),
    _rule("subcategory", "sub category", "", 4),
    _rule("category", "category", "sub", 3),
    _rule("pack_size", "pack", "", 3),
    _rule("address", "address", "", 3),
    _rule("city", "city", "", 3),
    _rule("region", "region", "", 3),
    _rule("country", "country", "", 3),
    _rule("channel", "channel", "", 3),
    _rule("latitude", "lat", "", 3),
    _rule("longitude", "lon", "", 3),
    _rule("@date", "date", "", 3),
    _rule("@date", "week", "", 2),
    _rule("pos_sales_units", "units", _MEASURE_OTHER, 3),
    _rule("pos_sales_value_lc", "value", _MEASURE_OTHER, 3),
    _rule("pos_returns_units", "returns units", "value stock order", 4),
    _rule("pos_returns_value_lc", "returns value", "stock order", 4),
    _rule("@returns", "returns", "value units stock order", 3),  # units or value: decided by the values
    _rule("inventory_qty_on_order", "order", "value returns", 3),
    _rule("inventory_value_lc", "stock value", "returns order", 4),
    _rule("inventory_qty_on_hand", "stock", "value returns order", 3),
)


def _fold(text: str) -> str:
    """Lower case, Latin accents dropped (`Straße` -> `strasse`, `libellé` -> `libelle`); CJK kept as it is."""
    out = []
    for ch in text.replace("ß", "ss").replace("ẞ", "ss"):
        if ord(ch) < 0x250:
            ch = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(ch)
    return "".join(out).lower()


def words(name: str) -> list[str]:
    """`SALES_DATE` -> [sales, date]; `qteVendue` -> [qte, vendue]; `JANコード` -> [jan, コード]."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return re.findall(r"[a-z]+|[0-9]+|[^\x00-\x7f\s_\-./()\[\]#:]+", _fold(spaced))


def concepts(name: str) -> frozenset[str]:
    """The concepts a column name mentions."""
    ws = words(name)
    joined = " ".join(ws)
    found = set()
    for concept, stems in CONCEPTS.items():
        for stem in stems:
            if " " in stem:
                hit = f" {stem} " in f" {joined} "
            elif len(stem) >= 4 or not stem.isascii():
                hit = any(stem in w for w in ws)
            else:
                hit = stem in ws
            if hit:
                found.add(concept)
                break
    # `sales` next to units (`units sold`, `sales qty`) describes the units, not a value.
    if "units" in found and "value" in found and not any(w in ("amt", "amount", "value", "montant", "betrag", "金額") for w in ws):
        if not any(w in CURRENCY_WORDS for w in ws):
            found.discard("value")
    return frozenset(found)


def candidates(name: str) -> list[tuple[int, str]]:
    """(score, target) of every rule the name satisfies, best first."""
    found = concepts(name)
    hits = {}
    for rule in RULES:
        if rule.needs <= found and not (rule.excludes & found):
            hits[rule.target] = max(hits.get(rule.target, 0), rule.score + len(rule.needs))
    return sorted(((s, t) for t, s in hits.items()), reverse=True)


def currency_in(names: list[str]) -> str | None:
    """A currency code a column name carries (`ca_ttc_eur`, `Net Sales CAD`), if any."""
    for name in names:
        for w in words(name):
            if w in CURRENCY_WORDS:
                return CURRENCY_WORDS[w]
    return None


def language_country(names: list[str]) -> str | None:
    """The country whose language most column names are written in, if any hint is found."""
    folded = " ".join(_fold(n) for n in names)
    counts = {c: sum(folded.count(h) for h in hints) for c, hints in LANGUAGE_HINTS.items()}
    best = max(counts, key=lambda country: counts[country])
    return best if counts[best] > 0 else None
