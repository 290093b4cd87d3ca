"""Corporate reference data as a component: a company's own master and FX files, mapped by YAML.

The files are built here (relative to today), in the company's own layouts -- Parquet with other
column names and a date format, CSV with semicolons, latin-1 and decimal commas -- and run through
the code location: the reference landing sensor, the refresh job, the retailer's sensor and
declarative automation, up to silver's `corp_*` and `*_usd` columns.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from conftest import DEFS_DIR, PROJECT_ROOT
from jsonschema import Draft202012Validator

from pos_lakehouse.components.reference_data import ReferenceData
from pos_lakehouse.demo.generator import gln13, gtin13
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.ingest.readers import DeliveryError
from pos_lakehouse.layers.reference import (
    REJECTED_OWNER,
    ReferenceSource,
    load_reference_files,
    read_reference_file,
    reference_frame,
)

DEFS = DEFS_DIR
YESTERDAY = date.today() - timedelta(days=1)
DE = "%d.%m.%Y"

COMPANY_REFERENCE = """\
type: pos_lakehouse.components.ReferenceData
attributes:
  landing_folder: _corporate
  product_master:
    match: "artikelstamm_*.parquet"
    format: {type: parquet, date_formats: ["%d.%m.%Y"]}
    columns: {EAN: gtin, ArtNr: corp_product_code, Bezeichnung: corp_product_name, Marke: corp_brand,
              Warengruppe: corp_category, Stand: updated_at}
  site_master:
    match: "standorte*.csv"
    format: {type: csv, separator: ";", decimal_comma: true, encoding: latin-1}
    columns: {GLN: global_location_number, Standortcode: corp_site_code, Kunde: corp_customer, Vertriebsregion: corp_sales_region}
  fx_rates:
    match: "kurse_*.csv"
    format: {type: csv, separator: ";", decimal_comma: true, date_formats: ["%d.%m.%Y"]}
    columns: {Datum: date, Waehrung: currency, "USD je Einheit": usd_per_unit}
    mode: upsert
"""


# ---- files in the company's own layouts ------------------------------------------------------------


def _product_master(path: Path, products: range, *, brand_of=lambda p: f"Marke {p}", drop: str | None = None) -> None:
    """The company's article master as Parquet; product 1 is listed twice, the later `Stand` carrying the right brand."""
    rows = [
        (gtin13(p), f"ART{p:05d}", f"Artikel {p}", brand_of(p), "Lebensmittel", (YESTERDAY - timedelta(days=3)).strftime(DE))
        for p in products
    ]
    rows.append((gtin13(1), "ART00001", "Artikel 1", "Alte Marke", "Lebensmittel", (YESTERDAY - timedelta(days=40)).strftime(DE)))
    frame = pl.DataFrame(rows, schema=["EAN", "ArtNr", "Bezeichnung", "Marke", "Warengruppe", "Stand"], orient="row")
    path.parent.mkdir(parents=True, exist_ok=True)
    (frame.drop(drop) if drop else frame).write_parquet(path)


def _site_master(path: Path, stores: range) -> None:
    lines = ["GLN;Standortcode;Kunde;Vertriebsregion;Flaeche_m2"]
    lines += [f"{gln13(s)};ST{s:03d};Kunde {s};Süd;1.234,5" for s in stores]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _fx(path: Path, days: list[date], rate: str = "1,25") -> None:
    lines = ["Datum;Waehrung;USD je Einheit"] + [f"{d.strftime(DE)};EUR;{rate}" for d in days]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _marche_day(landing: Path, day: date, *, products: int = 3, stores: int = 2) -> None:
    """One marche_fr daily Parquet file whose stores carry GLNs and products GTINs."""
    rows = [(s, p) for s in range(stores) for p in range(products)]
    n = len(rows)
    pl.DataFrame(
        {
            "date_vente": [day] * n,
            "code_magasin": [f"M{s:03d}" for s, _ in rows],
            "nom_magasin": [f"Marche {s:03d}" for s, _ in rows],
            "gln_magasin": [gln13(s) for s, _ in rows],
            "ville": ["Lyon"] * n,
            "region": ["ARA"] * n,
            "format_magasin": ["super"] * n,
            "code_article": [f"A{p:05d}" for _, p in rows],
            "ean": [gtin13(p) for _, p in rows],
            "libelle_article": [f"Produit {p}" for _, p in rows],
            "marque": ["Bonjour"] * n,
            "categorie": ["Epicerie"] * n,
            "qte_vendue": [2 + p for _, p in rows],
            "ca_ttc_eur": pl.Series([Decimal(2 + p) * Decimal("1.50") for _, p in rows], dtype=pl.Decimal(18, 2)),
            "qte_retournee": [0] * n,
            "montant_retour_eur": pl.Series([Decimal(0)] * n, dtype=pl.Decimal(18, 2)),
            "stock_fin_journee": [10] * n,
            "qte_en_commande": [0] * n,
        }
    ).write_parquet(landing / f"marche_fr_pos_{day.isoformat()}.parquet")


@pytest.fixture
def company_defs(tmp_path: Path) -> Path:
    """The project's defs (retailers, gold, access policy) with the company's reference YAML."""
    root = tmp_path / "defs"
    shutil.copytree(DEFS / "retailers", root / "retailers")
    shutil.copytree(DEFS / "gold", root / "gold")
    (root / "serving").mkdir()
    shutil.copy(DEFS / "serving" / "access_policy.yaml", root / "serving" / "access_policy.yaml")
    shutil.copy(DEFS / "resources.py", root / "resources.py")
    (root / "reference").mkdir()
    (root / "reference" / "defs.yaml").write_text(COMPANY_REFERENCE)
    return root


def _silver(lake, table: str) -> pl.DataFrame:
    return lake.scan(lake.silver("marche_fr", table)).collect()


@pytest.mark.slow
def test_company_masters_and_fx_mapped_by_yaml_reach_silver_and_a_bad_master_is_quarantined(data_root, lake, company_defs, instance):
    from pos_lakehouse.definitions import build_definitions
    from pos_lakehouse.demo.headless import Headless

    headless = Headless(build_definitions(company_defs), instance, quiet=True)
    corporate, landing = data_root / "landing" / "_corporate", data_root / "landing" / "marche_fr"
    landing.mkdir(parents=True)
    _product_master(corporate / "artikelstamm_1.parquet", range(2))  # product 2 is not in the master
    _site_master(corporate / "standorte.csv", range(2))
    _fx(corporate / "kurse_1.csv", [YESTERDAY - timedelta(days=d) for d in range(1, 30)])  # yesterday's rate is late
    for day in (YESTERDAY - timedelta(days=1), YESTERDAY):
        _marche_day(landing, day)
    runs = headless.settle()
    assert [(r.name, r.error) for r in runs if not r.success] == []
    assert any(r.name == "corporate_reference_refresh" for r in runs)

    prod = _silver(lake, "prod_dim").sort("prod_id")
    assert prod["corp_product_code"].to_list() == ["ART00000", "ART00001", None]
    # The article listed twice: its row with the latest `Stand` (parsed as dd.mm.yyyy) wins.
    assert prod["corp_brand"].to_list() == ["Marke 0", "Marke 1", None]
    assert prod["corp_category"].to_list() == ["Lebensmittel", "Lebensmittel", None]
    site = _silver(lake, "site_dim").sort("site_id")
    assert site["corp_site_code"].to_list() == ["ST000", "ST001"]
    assert site["corp_sales_region"].to_list() == ["Süd", "Süd"]  # latin-1 read right
    facts = _silver(lake, "store_day_fact")
    late = facts.filter(pl.col("date") == YESTERDAY)
    on_time = facts.filter(pl.col("date") == YESTERDAY - timedelta(days=1))
    assert late.height == on_time.height == 6
    assert late["pos_sales_value_usd"].null_count() == 6
    assert on_time["fx_rate_to_usd"].to_list() == [1.25] * 6  # decimal comma
    assert (on_time["pos_sales_value_usd"] - on_time["pos_sales_value_lc"].cast(pl.Float64) * 1.25).abs().max() < 1e-9

    # A broken master (its EAN column missing) and yesterday's late FX rate arrive with a new sales day.
    _product_master(corporate / "artikelstamm_2.parquet", range(3), brand_of=lambda p: "Falsch", drop="EAN")
    _fx(corporate / "kurse_2.csv", [YESTERDAY], rate="1,5")
    _marche_day(landing, YESTERDAY - timedelta(days=2))
    runs = headless.settle()
    failed = [r for r in runs if not r.success]
    assert [r.name for r in failed] == ["corporate_reference_refresh"]
    assert "artikelstamm_2.parquet: rejected (missing_column)" in failed[0].error
    assert "EAN -> gtin" in failed[0].error

    rejected = lake.scan(lake.quarantine(REJECTED_OWNER, "rejected_files")).collect()
    assert rejected["file"].to_list() == ["artikelstamm_2.parquet"] and rejected["reason"].to_list() == ["missing_column"]
    assert "mapped column(s) ['EAN -> gtin'] not found" in rejected["detail"].item()
    assert Path(rejected["quarantined_copy"].item()).exists()
    # The master keeps what the last good file loaded; the retailer's silver went on with it.
    prod = _silver(lake, "prod_dim").sort("prod_id")
    assert "Falsch" not in prod["corp_brand"].to_list() and prod["corp_brand"].to_list()[:2] == ["Marke 0", "Marke 1"]
    facts = _silver(lake, "store_day_fact")
    assert facts.filter(pl.col("date") == YESTERDAY - timedelta(days=2)).height == 6
    # The late rate was upserted next to the earlier ones and filled the stored rows' USD values.
    rates = reference_frame(lake, "fx_rates").collect().to_native()
    assert rates.height == 30 and rates.filter(pl.col("date") == YESTERDAY)["usd_per_unit"].to_list() == [1.5]
    late = facts.filter(pl.col("date") == YESTERDAY)
    assert late["pos_sales_value_usd"].null_count() == 0
    assert (late["pos_sales_value_usd"] - late["pos_sales_value_lc"].cast(pl.Float64) * 1.5).abs().max() < 1e-9
    assert facts["pos_sales_value_usd"].null_count() == 0


# ---- reading and rejecting files (no Dagster run) ----------------------------------------------------


def _source(**kw) -> ReferenceSource:
    return ReferenceSource.model_validate(kw)


def test_rows_that_break_a_rule_reject_the_file_naming_file_row_and_rule(tmp_path):
    fx = _source(
        match="*.csv",
        format={"separator": ";", "decimal_comma": True, "date_formats": [DE]},
        columns={"Datum": "date", "Kurs": "usd_per_unit", "Whg": "currency"},
    )
    path = tmp_path / "kurse.csv"
    day = YESTERDAY.strftime(DE)
    path.write_text(f"Datum;Whg;Kurs\n{day};EUR;1,1\n{day};GBP;abc\n31.02.2026;JPY;0,006\n{day};;1,0\n{day};CHF;-1\n")
    with pytest.raises(DeliveryError) as err:
        read_reference_file(path, "fx_rates", fx)
    assert err.value.file == "kurse.csv" and err.value.reason == "invalid_rows"
    assert err.value.detail == (
        "4 of 5 row(s) break a rule: data row 2: usd_per_unit: cannot parse abc as Float64; "
        "data row 3: date: cannot parse 31.02.2026 as Date; data row 4: currency: required value is missing; "
        "data row 5: usd_per_unit: -1.0 is not a positive rate"
    )
    # The same rate twice is one row; two different rates for one day and currency are ambiguous.
    path.write_text(f"Datum;Whg;Kurs\n{day};EUR;1,1\n{day};EUR;1,1\n{day};USD;1\n")
    assert read_reference_file(path, "fx_rates", fx).height == 2
    path.write_text(f"Datum;Whg;Kurs\n{day};EUR;1,1\n{day};USD;1\n{day};EUR;1,2\n")
    with pytest.raises(DeliveryError, match=r"duplicate_key: date .*, currency EUR is listed with different values in data rows 1 and 3"):
        read_reference_file(path, "fx_rates", fx)
    path.write_text("Datum;Whg;Kurs\n")
    with pytest.raises(DeliveryError, match="header_only"):
        read_reference_file(path, "fx_rates", fx)


def test_a_master_without_a_change_date_may_not_list_a_key_twice(tmp_path):
    path = tmp_path / "pm.json"
    path.write_text('{"data": [{"ean": "1", "brand": "A"}, {"ean": "2", "brand": "B"}, {"ean": "1", "brand": "C"}]}')
    source = _source(match="pm.json", format={"type": "json", "record_path": "data"}, columns={"ean": "gtin", "brand": "corp_brand"})
    with pytest.raises(
        DeliveryError, match=r"gtin 1 is listed with different values in data rows 1 and 3 \(map a change date to `updated_at`"
    ):
        read_reference_file(path, "product_master", source)
    path.write_text('{"data": [{"ean": " 1 ", "brand": "A"}, {"ean": "2"}]}')
    frame = read_reference_file(path, "product_master", source)
    assert frame.to_dicts() == [
        {"gtin": "1", "corp_product_code": None, "corp_product_name": None, "corp_brand": "A", "corp_category": None},
        {"gtin": "2", "corp_product_code": None, "corp_product_name": None, "corp_brand": None, "corp_category": None},
    ]


def test_rejected_files_are_quarantined_once_and_a_corrected_mapping_reads_them_again(tmp_path, lake):
    folder = tmp_path / "landing" / "_corporate"
    _site_master(folder / "standorte.csv", range(3))
    landing = LocalLandingZone(root=str(tmp_path / "landing"))
    wrong = {
        "site_master": _source(
            match="standorte*.csv", format={"separator": ";", "encoding": "latin-1"}, columns={"GLN-Nr": "global_location_number"}
        )
    }
    [outcome] = load_reference_files(lake, landing, "_corporate", wrong, ["standorte.csv"])
    assert outcome.status == "rejected" and outcome.reason == "missing_column"
    assert "standorte.csv: rejected (missing_column): mapped column(s) ['GLN-Nr -> global_location_number'] not found" in outcome.describe()
    again = load_reference_files(lake, landing, "_corporate", wrong, ["standorte.csv"])
    assert [o.status for o in again] == ["known_rejected"]  # same bytes, same mapping: not read again
    assert lake.row_count(lake.quarantine(REJECTED_OWNER, "rejected_files")) == 1
    assert not lake.exists(lake.uri("reference", "site_master"))
    fixed = {
        "site_master": _source(
            match="standorte*.csv",
            format={"separator": ";", "encoding": "latin-1"},
            columns={"GLN": "global_location_number", "Kunde": "corp_customer"},
        )
    }
    [outcome] = load_reference_files(lake, landing, "_corporate", fixed, ["standorte.csv"])
    assert (outcome.status, outcome.rows) == ("loaded", 3)
    sites = reference_frame(lake, "site_master").collect().to_native().sort("global_location_number")
    assert sites["corp_customer"].to_list() == ["Kunde 0", "Kunde 1", "Kunde 2"] and sites["corp_site_code"].null_count() == 3


# ---- the component ---------------------------------------------------------------------------------


def test_shipped_reference_component_through_the_component_tree(data_root):
    from pos_lakehouse.definitions import component_tree

    tree = component_tree(DEFS_DIR)
    component = tree.load_component(Path("reference"), expected_type=ReferenceData)
    assert component.product_master.match == "product_master.csv" and component.fx_rates.format.type == "csv"
    defs = tree.build_defs_at_path(Path("reference"))
    assert {k.to_user_string() for a in defs.assets for k in a.keys} == {
        "reference/product_master",
        "reference/site_master",
        "reference/fx_rates",
    }
    assert {j.name for j in defs.jobs} == {"corporate_reference_refresh"}
    assert {s.name for s in defs.sensors} == {"corporate_reference_landing_sensor"}
    # The whole code location: every retailer's silver lists the reference table it enriches from.
    from pos_lakehouse.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    assert dg.AssetKey(["reference", "product_master"]) in graph.get(dg.AssetKey(["silver", "marche_fr", "prod_dim"])).parent_keys
    assert dg.AssetKey(["reference", "fx_rates"]) in graph.get(dg.AssetKey(["silver", "kaufhalle_de", "store_day_fact"])).parent_keys
    assert graph.get(dg.AssetKey(["reference", "fx_rates"])).is_materializable


def test_shipped_yaml_maps_the_demo_layout(tmp_path, lake):
    from pos_lakehouse.demo.reference import write_corporate_reference

    attrs = yaml.safe_load((DEFS / "reference" / "defs.yaml").read_text())["attributes"]
    component = ReferenceData.model_validate(attrs)
    write_corporate_reference(tmp_path / "landing" / "_corporate", products=30, sites=10)
    landing = LocalLandingZone(root=str(tmp_path / "landing"))
    names = sorted(f.name for f in landing.list_files("_corporate"))
    outcomes = load_reference_files(lake, landing, "_corporate", component.sources, names)
    assert {o.table: o.status for o in outcomes} == {"fx_rates": "loaded", "product_master": "loaded", "site_master": "loaded"}
    assert reference_frame(lake, "product_master").collect().to_native().height == 25  # every 6th is a competitor's


def _attrs() -> dict:
    return yaml.safe_load(COMPANY_REFERENCE)["attributes"]


def test_schema_errors_name_the_field(tmp_path):
    schema = ReferenceData.get_model_cls().model_json_schema()
    assert list(Draft202012Validator(schema).iter_errors(_attrs())) == []
    attrs = _attrs()
    attrs["product_master"]["format"]["type"] = "parket"
    errors = list(Draft202012Validator(schema).iter_errors(attrs))
    assert [list(e.absolute_path) for e in errors] == [["product_master", "format", "type"]]
    assert errors[0].message == "'parket' is not one of ['parquet', 'csv', 'excel', 'jsonl', 'json']"
    attrs = _attrs()
    attrs["fx_rates"]["colums"] = attrs["fx_rates"].pop("columns")
    errors = list(Draft202012Validator(schema).iter_errors(attrs))
    assert [list(e.absolute_path) for e in errors] == [["fx_rates"]] and "'colums' was unexpected" in errors[0].message
    attrs = _attrs()
    attrs["site_master"]["columns"]["Kunde"] = "corp_kunde"
    with pytest.raises(
        ValueError,
        match=r"site_master.columns maps to \['corp_kunde'\], which are not site_master columns; allowed: global_location_number",
    ):
        ReferenceData.model_validate(attrs)
    # Every attribute, nested ones too, carries a description (shown by `dg` when checking or scaffolding YAML).
    undescribed = []

    def walk(node, path):
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if "description" not in prop:
                    undescribed.append(f"{path}.{name}")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    walk(schema, "")
    assert undescribed == []


def test_readme_reference_example_loads():
    text = (PROJECT_ROOT / "README.md").read_text()
    block = text.split("## Corporate reference data", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    component = ReferenceData.model_validate(yaml.safe_load(block)["attributes"])
    assert component.fx_rates.mode == "upsert" and component.product_master.columns["Stand"] == "updated_at"


def test_default_layout_loads_without_a_source_spec(tmp_path, lake):
    from pos_lakehouse.demo.reference import write_corporate_reference
    from pos_lakehouse.layers.reference import load_reference_file

    for path in write_corporate_reference(tmp_path / "files", products=12, sites=7):
        assert load_reference_file(lake, path.stem, path) == pl.read_csv(path).height
    assert reference_frame(lake, "site_master").collect().to_native().height == 6
