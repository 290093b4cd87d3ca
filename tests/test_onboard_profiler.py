"""`pos-lakehouse onboard`: each profiling rule on tiny files, then the demo retailers' own files.

Run on the files the demo generator writes (without the retailers' YAML), the proposal maps them
as the shipped YAMLs do.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import spec_named

from pos_lakehouse.cli import main
from pos_lakehouse.demo.generator import gln13, gtin13
from pos_lakehouse.onboarding.compare import mapping_differences
from pos_lakehouse.onboarding.grain import grain_of, kind_glob, kind_name, name_date
from pos_lakehouse.onboarding.mapping import map_columns
from pos_lakehouse.onboarding.profile import propose
from pos_lakehouse.onboarding.render import render
from pos_lakehouse.onboarding.sniff import compression_of, sniff
from pos_lakehouse.onboarding.values import gs1_check_digit_ok, profile_values
from pos_lakehouse.onboarding.vocabulary import candidates
from pos_lakehouse.retailer import RetailerSpec

FILE_RETAILERS = ("marche_fr", "kaufhalle_de", "bigbox_us", "polder_nl", "prairie_ca", "sakura_jp")


def _spec(text: str) -> RetailerSpec:
    return RetailerSpec.model_validate(yaml.safe_load(text)["attributes"])


# ---- format ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sep", [",", ";", "|", "\t"])
def test_separator_is_the_one_that_splits_every_line_alike(sep):
    text = sep.join(["a", "b", "c"]) + "\n" + sep.join(["1", "x, y" if sep != "," else "x", "3"]) + "\n"
    assert sniff("f.csv", text.encode()).separator == sep


def test_encoding_utf8_latin1_and_cp1252():
    assert sniff("f.csv", "Straße;Menge\nMünchen;1\n".encode()).encoding == "utf-8"
    assert sniff("f.csv", "Straße;Menge\nMünchen;1\n".encode("latin-1")).encoding == "latin-1"
    assert sniff("f.csv", "Name;Preis\n€uro;1\n".encode("cp1252")).encoding == "cp1252"
    # A head cut in the middle of a multi-byte character is still UTF-8.
    assert sniff("f.csv", "a;b\nü;1\n".encode()[:-4]).encoding == "utf-8"


def test_json_array_lines_and_record_path():
    assert sniff("x.json", json.dumps([{"a": 1}, {"a": 2}]).encode(), True).type == "json"
    lines = sniff("x.json", b'{"a": 1}\n{"a": 2}\n', True)
    assert lines.type == "jsonl"
    nested = sniff("x.json", json.dumps({"meta": {"page": 1}, "data": {"items": [{"a": 1}]}}).encode(), True)
    assert (nested.type, nested.record_path) == ("json", "data.items")


def test_containers_by_magic_bytes():
    assert sniff("x.bin", b"PAR1....").type == "parquet"
    assert sniff("week.xlsx", b"PK\x03\x04...").type == "excel"
    assert compression_of("x.csv.gz", gzip.compress(b"a,b\n")[:8]) == "gzip"
    assert compression_of("week.xlsx", b"PK\x03\x04") == "none"  # a workbook is a zip, not a compressed file
    assert compression_of("x.zip", b"PK\x03\x04") == "zip"


# ---- values -----------------------------------------------------------------------------------------
def test_decimal_comma_and_point():
    assert profile_values(["1.234,56", "12,30", "5"]).decimal_comma
    p = profile_values(["1234.56", "12.3"])
    assert p.kind == "decimal" and not p.decimal_comma and p.max_decimals == 2
    assert profile_values(["3", "40"]).kind == "integer"


@pytest.mark.parametrize(
    ("values", "fmt"),
    [
        (["2026-11-01", "2026-11-30"], "%Y-%m-%d"),
        (["01.11.2026", "30.11.2026"], "%d.%m.%Y"),
        (["11/01/2026", "11/30/2026"], "%m/%d/%Y"),
        (["30/11/2026", "01/11/2026"], "%d/%m/%Y"),
        (["2026/11/27"], "%Y/%m/%d"),
        (["2026-11-01 00:00:00"], "%Y-%m-%d"),  # Excel and Parquet timestamps
        (["20261107", "20261130"], "%Y%m%d"),
    ],
)
def test_date_formats(values, fmt):
    p = profile_values(values)
    assert (p.kind, p.date_format) == ("date", fmt)


def test_ambiguous_day_month_is_reported():
    p = profile_values(["01/02/2026", "03/04/2026"])
    assert p.date_format == "%d/%m/%Y" and "%m/%d/%Y" in p.ambiguous_formats


def test_gs1_check_digits():
    assert gs1_check_digit_ok(gtin13(42)) and gs1_check_digit_ok(gln13(7)) and gs1_check_digit_ok("036000291452")  # a UPC-A
    assert not gs1_check_digit_ok(gtin13(42)[:-1] + str((int(gtin13(42)[-1]) + 1) % 10))
    p = profile_values([gtin13(i) for i in range(20)])
    assert p.kind == "code" and p.digits == 13 and p.gs1_valid == 1.0
    assert profile_values(["0001", "0002"]).kind == "code" and profile_values(["0", "1", "2"]).kind == "integer"


# ---- names --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("code_magasin", "site_id"),
        ("Winkelnummer", "site_id"),
        ("店舗コード", "site_id"),
        ("ITEM_NBR", "prod_id"),
        ("Artikel", "prod_id"),
        ("libelle_article", "prod_name"),
        ("Filialname", "site_name"),
        ("JANコード", "gtin"),
        ("Bundesland", "region"),
        ("Straße", "address"),
        ("qte_vendue", "pos_sales_units"),
        ("Units Sold", "pos_sales_units"),
        ("Net Sales CAD", "pos_sales_value_lc"),
        ("montant_retour_eur", "pos_returns_value_lc"),
        ("RETURN_QTY", "pos_returns_units"),
        ("ON_HAND_QTY", "inventory_qty_on_hand"),
        ("qte_en_commande", "inventory_qty_on_order"),
    ],
)
def test_names_in_several_languages(name, target):
    assert candidates(name)[0][1] == target


# ---- content decides ------------------------------------------------------------------------------
def _mapped(frame: pl.DataFrame) -> dict[str, str]:
    return map_columns(frame, {c: profile_values(frame[c].to_list()) for c in frame.columns}).columns


def test_unnamed_gs1_codes_are_gtin_or_gln_by_what_fixes_them():
    frame = pl.DataFrame(
        {
            "store": ["S1", "S1", "S2", "S2"],
            "product": ["P1", "P2", "P1", "P2"],
            "code_a": [gtin13(1), gtin13(2), gtin13(1), gtin13(2)],
            "code_b": [gln13(1), gln13(1), gln13(2), gln13(2)],
            "units": ["1", "2", "3", "4"],
        }
    )
    mapped = _mapped(frame)
    assert mapped["code_a"] == "gtin" and mapped["code_b"] == "global_location_number"


def test_a_bare_name_belongs_to_the_dimension_whose_id_fixes_it():
    frame = pl.DataFrame({"store": ["S1", "S1", "S2"], "item": ["P1", "P2", "P1"], "name": ["Milk", "Bread", "Milk"]})
    assert _mapped(frame)["name"] == "prod_name"


def test_a_measure_name_over_text_values_is_not_a_measure():
    frame = pl.DataFrame({"store": ["S1"], "item": ["P1"], "sales": ["n/a"], "qty": ["2"]})
    mapped = _mapped(frame)
    assert "sales" not in mapped and mapped["qty"] == "pos_sales_units"


# ---- time ------------------------------------------------------------------------------------------------
def test_file_kinds_and_names_from_file_names():
    assert kind_glob("bigbox_us_store_0001_20261109_20261206.txt") == "bigbox_us_store_*.txt"
    assert kind_glob("marche_fr_pos_2026-10-08.parquet") == "marche_fr_pos_*.parquet"
    assert kind_name("kaufhalle_umsatz_*.csv", "kaufhalle_de") == "umsatz"
    assert name_date("kaufhalle_artikel_20261116.csv") == (r"kaufhalle_artikel_(\d{8})", "%Y%m%d")
    assert name_date("sales_20261116_20261122.csv") is None  # two dates: not one observation day


def test_grain_daily_weekly_rows_and_weekly_files():
    monday = date(2026, 11, 2)
    daily = grain_of([[monday + timedelta(days=d)] for d in range(5)])
    assert (daily.weekly_rows, daily.cadence) == (False, "daily")
    saturdays = grain_of([[monday + timedelta(days=5 + 7 * w)] for w in range(3)], "week")
    assert (saturdays.weekly_rows, saturdays.cadence, saturdays.week_ends_on, saturdays.week_date) == (True, "weekly", "saturday", "end")
    starts = grain_of([[monday + timedelta(days=7 * w)] for w in range(3)], "week_start")
    assert (starts.week_date, starts.week_ends_on) == ("start", "sunday")
    week_files = grain_of([[monday + timedelta(days=7 * w + d) for d in range(7)] for w in range(2)])
    assert (week_files.weekly_rows, week_files.cadence, week_files.sure) == (False, "weekly", True)


# ---- whole folders: the formats the issue lists ----------------------------------------------------------
def _days(n: int) -> list[date]:
    return [date.today() - timedelta(days=40 - d) for d in range(n)]


def test_semicolon_latin1_decimal_comma_day_first(tmp_path):
    folder = tmp_path / "ventas"
    folder.mkdir()
    for day in _days(3):
        rows = [f"{day:%d/%m/%Y};T{s};Tienda {s};A{p};{gtin13(p)};Artículo {p};{p + s};{p},5{s}" for s in range(2) for p in range(3)]
        text = "Fecha;Tienda;NombreTienda;Articulo;EAN;Descripcion;Unidades;Importe\n" + "\n".join(rows) + "\n"
        (folder / f"ventas_{day:%Y%m%d}.csv").write_bytes(text.encode("latin-1"))
    spec = _spec(render(propose(folder, "example_es")))
    [kind] = spec.delivery.files
    assert kind.match == "ventas_*.csv" and kind.holds == ["prod_dim", "site_dim", "store_day_fact"]
    assert (kind.format.separator, kind.format.encoding, kind.format.decimal_comma, kind.format.date_formats) == (
        ";",
        "latin-1",
        True,
        ["%d/%m/%Y"],
    )
    assert spec.columns[kind.name] == {
        "Fecha": "date",
        "Tienda": "site_id",
        "NombreTienda": "site_name",
        "Articulo": "prod_id",
        "EAN": "gtin",
        "Descripcion": "prod_name",
        "Unidades": "pos_sales_units",
        "Importe": "pos_sales_value_lc",
    }
    assert spec.cadence == "daily" and spec.country == "ES" and spec.currency == "EUR"


def test_nested_json_and_excel_sheet(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    for day in _days(2):
        items = [{"day": day.isoformat(), "store_id": "S1", "sku": f"P{p}", "qty": p + 1} for p in range(3)]
        (folder / f"shop_{day:%Y%m%d}.json").write_text(json.dumps({"meta": {"n": 3}, "data": {"items": items}}))
    spec = _spec(render(propose(folder, "shop")))
    [kind] = spec.delivery.files
    assert (kind.format.type, kind.format.record_path) == ("json", "data.items")
    assert spec.columns[kind.name] == {"day": "date", "store_id": "site_id", "sku": "prod_id", "qty": "pos_sales_units"}

    book = tmp_path / "book"
    book.mkdir()
    import xlsxwriter

    for w, end in enumerate([date(2026, 10, 31), date(2026, 11, 7)]):
        wb = xlsxwriter.Workbook(book / f"weekly_{end:%Y%m%d}.xlsx")
        wb.add_worksheet("Cover").write(0, 0, "Weekly report")
        ws = wb.add_worksheet("Data")
        for c, h in enumerate(["Week Ending", "Store", "Item", "Units"]):
            ws.write(0, c, h)
        for r in range(1, 5):
            ws.write_row(r, 0, [end.isoformat(), f"S{r % 2}", f"P{r}", r + w])
        wb.close()
    spec = _spec(render(propose(book, "weekly_x")))
    [kind] = spec.delivery.files
    assert kind.format.sheet_name == "Data" and kind.holds == ["store_week_fact"]
    assert spec.columns[kind.name]["Week Ending"] == "week_end_date" and spec.week_ends_on == "saturday"


def test_empty_files_make_a_kind_incremental(tmp_path):
    folder = tmp_path / "changes"
    folder.mkdir()
    (folder / "products_20261101.csv").write_text("product_id,product_name\nP1,Milk\nP2,Bread\n")
    (folder / "products_20261102.csv").write_text("product_id,product_name\n")
    text = render(propose(folder, "changes"))
    [kind] = _spec(text).delivery.files
    assert kind.incremental and kind.holds == ["prod_dim"] and "# REVIEW: 1 of 2 sample files hold no rows" in text


# ---- the command, and the demo retailers' own files ---------------------------------------------------------
def test_onboard_command_writes_a_yaml_that_loads(tmp_path, capsys):
    folder = tmp_path / "files"
    folder.mkdir()
    pl.DataFrame({"date": [d.isoformat() for d in _days(2)], "store": ["S1", "S2"], "item": ["P1", "P2"], "units": [1, 2]}).write_csv(
        folder / "x_sales_20261101.csv"
    )
    out = tmp_path / "out" / "defs.yaml"
    assert main(["onboard", str(folder), "--name", "newshop", "--out", str(out), "--retailer-id", "4242"]) == 0
    spec = _spec(out.read_text())
    assert spec.retailer_id == 4242 and spec.name == "newshop"
    assert "wrote" in capsys.readouterr().err
    assert main(["onboard", str(folder), "--name", "newshop", "--out", str(out)]) == 2  # never overwritten silently
    assert main(["onboard", str(tmp_path / "nowhere"), "--name", "newshop", "--out", "-"]) == 2


def _demo_files(tmp_path: Path, name: str) -> Path:
    from pos_lakehouse.demo.retailers import DEMO_WRITERS

    DEMO_WRITERS[name](tmp_path / "landing" / name, tmp_path / "expected")
    return tmp_path / "landing" / name


@pytest.mark.parametrize("name", FILE_RETAILERS)
def test_demo_retailers_files_give_their_shipped_mapping(tmp_path, name):
    spec = _spec(render(propose(_demo_files(tmp_path, name), name)))
    assert mapping_differences(spec, spec_named(name)) == []


def test_one_file_per_store_and_changes_only_dimension_files(tmp_path):
    stores = tmp_path / "stores"
    stores.mkdir()
    for s in (1, 2, 3):
        rows = [f"{d:%Y-%m-%d}|{s:04d}|P{p}|{p + 1}" for d in _days(3) for p in range(2)]
        (stores / f"chain_store_{s:04d}.txt").write_text("SALES_DATE|STORE_NBR|ITEM_NBR|UNIT_QTY\n" + "\n".join(rows) + "\n")
    text = render(propose(stores, "chain"))
    [kind] = _spec(text).delivery.files
    assert kind.match == "chain_store_*.txt" and kind.format.separator == "|"
    assert "# one file per store" in text

    changes = tmp_path / "changes"
    changes.mkdir()
    for n, ids in enumerate([range(0, 10), range(10, 14), range(14, 16)]):
        body = "\n".join(f"P{i},Product {i}" for i in ids)
        (changes / f"items_2026110{n + 1}.csv").write_text("item_id,item_name\n" + body + "\n")
    text = render(propose(changes, "changes"))
    [kind] = _spec(text).delivery.files
    assert kind.incremental and kind.observed_on is not None
    assert "REVIEW: consecutive files share 0% of their ids" in text


def test_proposed_id_and_key_follow_the_loaded_retailers(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "x_20261101.csv").write_text("date,store,item,units\n2026-11-01,S1,P1,1\n")
    spec = _spec(render(propose(folder, "newshop")))
    demo = [spec_named(n) for n in (*FILE_RETAILERS, "shopnow_us", "highstreet_uk")]
    assert spec.retailer_id == max(s.retailer_id for s in demo) + 1
    assert spec.secure_group_key == max(s.secure_group_key for s in demo) + 1


def test_a_store_day_split_over_files_is_upserted_by_rows(tmp_path):
    folder = tmp_path / "tills"
    folder.mkdir()
    day = _days(1)[0]
    for till in (1, 2):
        rows = [f"{day:%Y-%m-%d},S1,P{p + 10 * till},{p + 1}" for p in range(3)]
        (folder / f"tills_{till}_{day:%Y%m%d}.csv").write_text("date,store_id,item_id,qty\n" + "\n".join(rows) + "\n")
    text = render(propose(folder, "tills"))
    [kind] = _spec(text).delivery.files
    assert kind.replaces == "rows" and "REVIEW: a store-day appears in more than one file" in text


def test_mapping_differences_names_each_difference():
    shipped = spec_named("sakura_jp")
    doc = shipped.model_dump()
    doc["columns"]["sales"]["売上数量"] = "pos_returns_units"
    doc["delivery"]["files"][0]["format"]["date_formats"] = ["%d/%m/%Y"]
    doc["delivery"]["files"].reverse()
    doc["cadence"] = "weekly"
    diffs = mapping_differences(RetailerSpec.model_validate(doc), shipped)
    assert len(diffs) == 4, diffs
    assert any("column '売上数量' -> pos_returns_units, reference pos_sales_units" in d for d in diffs)
    assert any("format.date_formats ['%d/%m/%Y'], reference ['%Y/%m/%d']" in d for d in diffs)
    assert any(d.startswith("store_day_fact: fed by") for d in diffs) and "cadence: proposed weekly, reference daily" in diffs
