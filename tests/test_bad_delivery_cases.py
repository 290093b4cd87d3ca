"""Every bad-delivery case with its defined outcome (marche_fr's Parquet cases: test_bad_deliveries.py).

File-level problems reject the file: the bytes are copied to `quarantine/<retailer>/files/` with a
`.reason.json`, a row lands in `quarantine/<retailer>/rejected_files`, bronze is untouched and the
retailer's run fails naming the file and the reason. Row-level problems quarantine the rows in
`quarantine/<retailer>/rejected_rows` (rule, file, row number, raw values) while good rows load.
Most cases run the layer functions directly (fast); the run-level behaviour is checked once
through sensors and automation.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import spec_named
from own_defs import execute_ingest

from pos_lakehouse.demo.file_retailers import write_kaufhalle_de, write_polder_nl, write_prairie_ca, write_sakura_jp
from pos_lakehouse.demo.generator import read_expected
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.ingest.readers import DeliveryError, read_raw
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.gold import refresh_gold
from pos_lakehouse.layers.silver import refresh_silver
from pos_lakehouse.quality.reconcile import gold_totals, reconcile
from pos_lakehouse.retailer import FileFormat

SALES_HEADER = "Datum;Filiale;Artikel;Menge;Umsatz;Retouren"


def _landing(data_root: Path) -> LocalLandingZone:
    return LocalLandingZone(root=str(data_root / "landing"))


def _run_layers(lake, data_root: Path, name: str, files: list[str]):
    """Bronze, silver and gold for one retailer, as its runs would do them."""
    spec = spec_named(name)
    outcomes = ingest_files(lake, _landing(data_root), spec, files)
    silver = refresh_silver(lake, spec, spec.canonical_tables)
    for table in spec.canonical_tables:
        refresh_gold(lake, spec, table)
    return outcomes, silver


def _kaufhalle(data_root: Path, **kw) -> list[Path]:
    kw = {"weeks": 1, "n_products": 12, "n_stores": 3, **kw}
    return write_kaufhalle_de(data_root / "landing" / "kaufhalle_de", data_root / "expected", **kw)


def _sales_lines(path: Path) -> list[str]:
    return path.read_bytes().decode("latin-1").split("\r\n")[:-1]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))


def _silver(lake, name: str, table: str = "store_day_fact") -> pl.DataFrame:
    return lake.scan(lake.silver(name, table)).collect()


def _gold(lake, code: str, table: str = "store_day_fact") -> pl.DataFrame:
    return lake.scan(lake.gold(table)).filter(pl.col("data_provider_code") == code).collect()


# ---- file-level rejections -----------------------------------------------------------------


def _truncate_mid_row(data: bytes) -> bytes:
    """Cut a CSV inside a row (after that row's second separator), as an interrupted upload does."""
    cut = data.index(b"\n", len(data) // 2) + 1
    second_sep = data.index(b";", data.index(b";", cut) + 1)
    return data[: second_sep + 1]


def _good(data_root: Path, name: str) -> bytes:
    staging = data_root / "staging"
    writers = {
        "kaufhalle_de": lambda: write_kaufhalle_de(staging / "k", staging / "e", weeks=1, n_products=8, n_stores=2)[-1],
        "prairie_ca": lambda: write_prairie_ca(staging / "p", staging / "e", weeks=1, n_products=8, n_stores=2)[0],
        "polder_nl": lambda: write_polder_nl(staging / "n", staging / "e", weeks=1, n_products=8, n_stores=2)[0],
        "sakura_jp": lambda: write_sakura_jp(staging / "s", staging / "e", days=1, n_products=8, n_stores=2)[0],
    }
    return writers[name]().read_bytes()


def _with_bad_byte(data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[2] = lines[2].replace(b",", b",\xff", 1)  # a latin-1/cp1252 byte inside a UTF-8 file, line 3
    return b"\n".join(lines)


def _wrong_separator(data: bytes) -> bytes:
    return data.replace(b";", b",")


def _drop_column(data: bytes) -> bytes:
    lines = data.decode("latin-1").split("\r\n")
    return "\r\n".join(";".join(f for i, f in enumerate(line.split(";")) if i != 1) for line in lines).encode("latin-1")


FILE_CASES = {
    # case: (retailer, landing file name, bytes from a good file, reason, words the detail must contain)
    "corrupt_gzip": (
        "prairie_ca",
        "prairie_ca_sales_week_2026-12-06.csv.gz",
        lambda good: b"this was never gzip" + good[:40],
        "corrupt",
        ["decompress"],
    ),
    "corrupt_excel": ("polder_nl", "polder_nl_week_2026-12-06.xlsx", lambda good: b"PK\x03\x04 not a workbook" * 20, "corrupt", ["excel"]),
    "truncated_csv": ("kaufhalle_de", "kaufhalle_umsatz_20261201_20261207.csv", _truncate_mid_row, "truncated", ["cut off"]),
    "truncated_gzip": (
        "prairie_ca",
        "prairie_ca_sales_week_2026-12-13.csv.gz",
        lambda good: good[: len(good) // 2],
        "truncated",
        ["ends early"],
    ),
    "truncated_excel": ("polder_nl", "polder_nl_week_2026-12-13.xlsx", lambda good: good[: len(good) // 2], "corrupt", []),
    "empty_file": ("kaufhalle_de", "kaufhalle_umsatz_20261208_20261214.csv", lambda good: b"", "empty_file", ["zero bytes"]),
    "blank_file": ("kaufhalle_de", "kaufhalle_umsatz_20261215_20261221.csv", lambda good: b"\r\n\r\n", "empty_file", []),
    "header_only": (
        "kaufhalle_de",
        "kaufhalle_umsatz_20261222_20261228.csv",
        lambda good: (SALES_HEADER + "\r\n").encode(),
        "header_only",
        [],
    ),
    "wrong_separator": (
        "kaufhalle_de",
        "kaufhalle_umsatz_20261229_20270104.csv",
        _wrong_separator,
        "missing_column",
        ["separator", "Datum,Filiale"],
    ),
    "missing_required_column": ("kaufhalle_de", "kaufhalle_umsatz_20270105_20270111.csv", _drop_column, "missing_column", ["site_id"]),
    "non_utf8_in_utf8_file": ("sakura_jp", "sakura_jp_sales_20261201.csv", _with_bad_byte, "bad_encoding", ["0xff", "line 3"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_file_level_rejection(case, data_root, lake):
    name, file_name, make, reason, words = FILE_CASES[case]
    content = make(_good(data_root, name))
    folder = data_root / "landing" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name).write_bytes(content)

    outcomes, _ = _run_layers(lake, data_root, name, [file_name])

    assert [o.status for o in outcomes] == ["rejected"]
    assert outcomes[0].reason == reason, outcomes[0].detail
    for word in words:
        assert word in outcomes[0].detail, outcomes[0].detail
    assert file_name in outcomes[0].describe()
    # Recorded, kept byte for byte with a machine-readable reason, and nothing appended to bronze.
    rejected = lake.scan(lake.quarantine(name, "rejected_files")).collect()
    assert rejected.select("file", "reason").rows() == [(file_name, reason)]
    copy = Path(rejected["quarantined_copy"][0])
    assert copy.read_bytes() == content
    assert json.loads(copy.with_suffix(copy.suffix + ".reason.json").read_text())["reason"] == reason
    spec = spec_named(name)
    assert all(lake.row_count(lake.bronze(name, fs.name)) == 0 for fs in spec.delivery.files)
    # The landing file itself is never modified: a corrected re-delivery simply replaces it.
    assert (folder / file_name).read_bytes() == content


def test_compressed_and_json_formats_read(tmp_path):
    """`.zip` with one member and `.jsonl.gz` read like their plain twins; a zip with two members is rejected."""
    csv_bytes = b"a;b\n1;x\n2;y\n"
    one = tmp_path / "one.csv.zip"
    with zipfile.ZipFile(one, "w") as zf:
        zf.writestr("inner.csv", csv_bytes)
    frame = read_raw(one, FileFormat(type="csv", separator=";")).collect()
    assert frame.rows() == [("1", "x"), ("2", "y")]
    two = tmp_path / "two.csv.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", csv_bytes)
        zf.writestr("b.csv", csv_bytes)
    with pytest.raises(DeliveryError) as err:
        read_raw(two, FileFormat(type="csv", separator=";"))
    assert err.value.reason == "zip_members"
    jl = tmp_path / "rows.jsonl.gz"
    jl.write_bytes(gzip.compress(b'{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n'))
    assert read_raw(jl, FileFormat(type="jsonl")).collect().rows() == [("1", "x"), ("2", None)]
    # Header row absent, banner lines skipped, quoted separators kept inside their field.
    raw = tmp_path / "noheader.csv"
    raw.write_bytes(b'EXPORT 2026-09-01\n1;"x;y"\n')
    frame = read_raw(raw, FileFormat(type="csv", separator=";", has_header=False, skip_rows=1)).collect()
    assert frame.rows() == [("1", "x;y")]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(io.BytesIO("\ufeffa,b\n1,2\n".encode()).getvalue())
    assert read_raw(bom, FileFormat()).collect_schema().names() == ["a", "b"]


# ---- the run fails naming the file; other retailers keep running ----------------------------


def test_bad_delivery_fails_its_run_and_other_retailers_keep_running(data_root, lake, headless):
    kh = _kaufhalle(data_root)
    staging = data_root / "staging_prairie"
    weeks = write_prairie_ca(staging, data_root / "expected", weeks=2, n_products=10, n_stores=2)
    prairie = data_root / "landing" / "prairie_ca"
    prairie.mkdir(parents=True)
    (prairie / weeks[0].name).write_bytes(weeks[0].read_bytes())
    assert all(r.success for r in headless.settle())
    kh_gold = _gold(lake, "cds_1002").sort("date", "site_id", "prod_id")

    bad_name = "kaufhalle_umsatz_20261201_20261207.csv"
    (kh[0].parent / bad_name).write_bytes(_wrong_separator(kh[-1].read_bytes()))
    (prairie / weeks[1].name).write_bytes(weeks[1].read_bytes())
    runs = headless.settle()

    failed = [r for r in runs if not r.success]
    assert [r.name for r in failed] == ["kaufhalle_de_ingest"]
    assert bad_name in failed[0].error and "missing_column" in failed[0].error
    assert any(r.name == "prairie_ca_ingest" and r.success for r in runs)
    exp = read_expected(data_root / "expected")
    assert reconcile(exp, gold_totals(lake, [spec_named("prairie_ca"), spec_named("kaufhalle_de")])).is_empty()
    assert _gold(lake, "cds_1002").sort("date", "site_id", "prod_id").equals(kh_gold)


# ---- accepted with a defined treatment -------------------------------------------------------


def test_unknown_extra_columns_are_accepted_and_kept(data_root, lake):
    files = _kaufhalle(data_root)
    products, sales = files[0], files[-1]
    lines = products.read_bytes().decode("latin-1").split("\r\n")[:-1]
    _write_lines(products, [lines[0] + ";Bio-Siegel"] + [line + (";ja" if i % 2 else ";nein") for i, line in enumerate(lines[1:])])
    lines = _sales_lines(sales)
    _write_lines(sales, [lines[0] + ";Kassennummer"] + [line + f";K{i % 4}" for i, line in enumerate(lines[1:])])

    outcomes, _ = _run_layers(lake, data_root, "kaufhalle_de", [f.name for f in files])

    assert all(o.status == "ingested" for o in outcomes)
    by_table = {o.table: o for o in outcomes}
    assert "Bio-Siegel" in by_table["products"].extra_columns and "Kassennummer" in by_table["sales"].extra_columns
    assert "Kassennummer" in lake.scan(lake.bronze("kaufhalle_de", "sales")).collect_schema().names()
    extras = [json.loads(e) for e in _gold(lake, "cds_1002", "prod_dim")["extra_attributes"]]
    assert {e["Bio-Siegel"] for e in extras} == {"ja", "nein"}
    assert reconcile(read_expected(data_root / "expected"), gold_totals(lake, [spec_named("kaufhalle_de")])).is_empty()


def test_unparseable_dates_and_numbers_quarantine_rows_and_good_rows_load(data_root, lake):
    files = _kaufhalle(data_root)
    sales = files[-1]
    lines = _sales_lines(sales)
    broken = {4: (0, "31.02.2026"), 9: (3, "zwölf"), 15: (4, "12,3,4")}  # data row -> (field, bad value)
    dates_hit = set()
    for row, (field, value) in broken.items():
        fields = lines[row].split(";")
        dates_hit.add(fields[0])
        fields[field] = value
        lines[row] = ";".join(fields)
    _write_lines(sales, lines)

    outcomes, silver = _run_layers(lake, data_root, "kaufhalle_de", [f.name for f in files])

    assert all(o.status == "ingested" for o in outcomes)
    assert silver["store_day_fact"].quarantined == 3
    rejected = lake.scan(lake.quarantine("kaufhalle_de", "rejected_rows")).collect().sort("_row_number")
    assert rejected["_row_number"].to_list() == sorted(broken)
    assert set(rejected["_source_file"]) == {sales.name}
    reasons = rejected["reason"].to_list()
    assert "date: cannot parse 31.02.2026" in reasons[0]
    assert "pos_sales_units: cannot parse zwölf" in reasons[1]
    assert "pos_sales_value_lc: cannot parse 12,3,4" in reasons[2]
    assert json.loads(rejected["raw_values"][1])["Menge"] == "zwölf"
    # Good rows load: all rows but the three, and the dates without a broken row reconcile exactly.
    exp = read_expected(data_root / "expected")
    assert _gold(lake, "cds_1002").height == exp["rows"].sum() - 3
    untouched = exp.filter(~pl.col("date").dt.strftime("%d.%m.%Y").is_in(sorted(dates_hit)))
    assert reconcile(
        untouched, gold_totals(lake, [spec_named("kaufhalle_de")]).join(untouched.select("date"), on="date", how="semi")
    ).is_empty()


def test_duplicate_rows_inside_a_file(data_root, lake):
    files = _kaufhalle(data_root)
    sales = files[-1]
    lines = _sales_lines(sales)
    exact = lines[3]
    conflicting = lines[4].split(";")
    old_units = int(conflicting[3])
    conflicting[3] = str(old_units + 100)
    _write_lines(sales, [*lines, exact, ";".join(conflicting)])
    total_rows = len(lines) - 1

    _, silver = _run_layers(lake, data_root, "kaufhalle_de", [f.name for f in files])

    facts = _silver(lake, "kaufhalle_de")
    assert facts.height == total_rows  # one row per key
    assert facts.select("date", "site_id", "prod_id").is_unique().all()
    # The file's last word counts; the earlier copies are quarantined with the reason, not dropped silently.
    d, site, prod = conflicting[0], conflicting[1], conflicting[2]
    row = facts.filter(
        (pl.col("site_id") == f"1002_{site}") & (pl.col("prod_id") == f"1002_{prod}") & (pl.col("date").dt.strftime("%d.%m.%Y") == d)
    )
    assert int(row["pos_sales_units"][0]) == old_units + 100
    rejected = lake.scan(lake.quarantine("kaufhalle_de", "rejected_rows")).collect().sort("_row_number")
    assert rejected["_row_number"].to_list() == [3, 4]
    assert all(r.startswith("duplicate:") for r in rejected["reason"])
    assert silver["store_day_fact"].quarantined == 2


def test_same_file_delivered_twice_is_ingested_once(data_root, lake):
    files = _kaufhalle(data_root)
    _run_layers(lake, data_root, "kaufhalle_de", [f.name for f in files])
    bronze = lake.row_count(lake.bronze("kaufhalle_de", "sales"))
    gold_version = lake.version(lake.gold("store_day_fact"))
    copy = files[-1].with_name("kaufhalle_umsatz_20260901_20260907_nochmal.csv")
    copy.write_bytes(files[-1].read_bytes())  # re-uploaded under another name

    outcomes, _ = _run_layers(lake, data_root, "kaufhalle_de", [files[-1].name, copy.name])

    assert [o.status for o in outcomes] == ["duplicate", "duplicate"]
    assert lake.row_count(lake.bronze("kaufhalle_de", "sales")) == bronze
    assert lake.version(lake.gold("store_day_fact")) == gold_version
    assert reconcile(read_expected(data_root / "expected"), gold_totals(lake, [spec_named("kaufhalle_de")])).is_empty()


def test_corrected_redelivery_replaces_its_store_days(data_root, lake):
    files = _kaufhalle(data_root, n_stores=3)
    _run_layers(lake, data_root, "kaufhalle_de", [f.name for f in files])
    before = _gold(lake, "cds_1002")
    lines = _sales_lines(files[-1])
    rows = [line.split(";") for line in lines[1:]]
    d1 = rows[0][0]
    d2 = (datetime.strptime(d1, "%d.%m.%Y") + timedelta(days=1)).strftime("%d.%m.%Y")  # the file's second day
    # The correction restates stores F000 and F001 on two dates: one line dropped, one changed, one added.
    restated = [r for r in rows if r[0] in (d1, d2) and r[1] in ("F000", "F001")]
    dropped = restated.pop(0)
    changed = next(r for r in restated if r[0] == d2)
    changed[3] = str(int(changed[3]) + 7)
    sold = {(r[0], r[1], r[2]) for r in rows}
    new_prod = next(str(100000 + p) for p in range(12) if (d2, "F001", str(100000 + p)) not in sold)
    restated.append([d2, "F001", new_prod, "5", "10,00", "0"])
    correction = files[-1].with_name("kaufhalle_umsatz_20260901_20260902_korrektur.csv")
    _write_lines(correction, [SALES_HEADER] + [";".join(r) for r in restated])

    _, silver = _run_layers(lake, data_root, "kaufhalle_de", [correction.name])

    assert silver["store_day_fact"].removed == 1
    after = _gold(lake, "cds_1002")
    key = lambda r: (r[0], f"1002_{r[1]}", f"1002_{r[2]}")  # noqa: E731
    as_keys = lambda f: set(zip(f["date"].dt.strftime("%d.%m.%Y"), f["site_id"], f["prod_id"]))  # noqa: E731
    restated_scope = (pl.col("date").dt.strftime("%d.%m.%Y").is_in([d1, d2])) & pl.col("site_id").is_in(["1002_F000", "1002_F001"])
    # Inside the restated store-days gold now holds exactly the correction ...
    assert as_keys(after.filter(restated_scope)) == {key(r) for r in restated}
    assert key(dropped) not in as_keys(after)
    assert after.filter(restated_scope)["pos_sales_units"].cast(pl.Int64).sum() == sum(int(r[3]) for r in restated)
    # ... and everything else (other stores on those dates, other dates) is exactly as before.
    cols = ["date", "site_id", "prod_id", "pos_sales_units", "pos_sales_value_lc"]
    assert after.filter(~restated_scope).select(cols).sort(cols).equals(before.filter(~restated_scope).select(cols).sort(cols))
    assert _silver(lake, "kaufhalle_de").height == after.height


def test_restating_sales_keeps_inventory_delivered_apart(data_root, lake):
    written = write_sakura_jp(data_root / "landing" / "sakura_jp", data_root / "expected", days=1, n_products=12, n_stores=2)
    sales_file, inventory_file = written
    _run_layers(lake, data_root, "sakura_jp", [f.name for f in written])
    stored = _silver(lake, "sakura_jp")
    with_both = stored.filter(pl.col("pos_sales_units").is_not_null() & pl.col("inventory_qty_on_hand").is_not_null())
    sales_only = stored.filter(pl.col("pos_sales_units").is_not_null() & pl.col("inventory_qty_on_hand").is_null())
    assert with_both.height and sales_only.height
    drop = {with_both["prod_id"][0].removeprefix("1008_"), sales_only["prod_id"][0].removeprefix("1008_")}
    drop_sites = {with_both["site_id"][0].removeprefix("1008_"), sales_only["site_id"][0].removeprefix("1008_")}
    text = sales_file.read_text(encoding="utf-8").splitlines()
    kept = [text[0]] + [line for line in text[1:] if not (line.split(",")[3] in drop and line.split(",")[0] in drop_sites)]
    correction = sales_file.with_name(sales_file.name.replace(".csv", "_v2.csv"))
    correction.write_text("\n".join(kept) + "\n", encoding="utf-8")

    _run_layers(lake, data_root, "sakura_jp", [correction.name])

    after = _silver(lake, "sakura_jp")
    k = ("date", "site_id", "prod_id")
    # A removed sale on a row that also has stock: the stock stays, the sale is cleared.
    row = after.join(with_both.head(1).select(k), on=list(k))
    assert (
        row.height == 1 and row["pos_sales_units"][0] is None and row["inventory_qty_on_hand"][0] == with_both["inventory_qty_on_hand"][0]
    )
    # A removed sale on a sales-only row: the row is gone.
    assert after.join(sales_only.head(1).select(k), on=list(k)).is_empty()
    inventory = pl.read_ndjson(inventory_file)
    assert after["inventory_qty_on_hand"].cast(pl.Int64).sum() == inventory["on_hand"].sum()
    gold = _gold(lake, "cds_1008")
    assert gold.height == after.height and gold["pos_sales_units"].sum() == after["pos_sales_units"].sum()


# ---- file names that escape their folder -----------------------------------------------------


def test_file_name_escaping_its_folder_is_rejected(data_root, lake, defs, instance):
    """`../` in a requested name, or a symlink pointing out of the retailer's folder: rejected, nothing read."""
    outside = data_root / "landing" / "marche_fr"
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "prairie_ca_sales_week_secret.csv.gz"
    secret.write_bytes(_good(data_root, "prairie_ca"))
    folder = data_root / "landing" / "prairie_ca"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prairie_ca_sales_week_link.csv.gz").symlink_to(secret)

    config = {"files": ["../marche_fr/prairie_ca_sales_week_secret.csv.gz", "prairie_ca_sales_week_link.csv.gz"]}
    result = execute_ingest(
        defs,
        "prairie_ca",
        instance=instance,
        partition_key="cds_1007",
        raise_on_error=False,
        run_config={"ops": {"prairie_ca_bronze": {"config": config}}},
    )

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "unsafe_path" in message and "../marche_fr/prairie_ca_sales_week_secret.csv.gz" in message
    rejected = lake.scan(lake.quarantine("prairie_ca", "rejected_files")).collect().sort("file")
    assert rejected.select("file", "reason").rows() == [
        ("../marche_fr/prairie_ca_sales_week_secret.csv.gz", "unsafe_path"),
        ("prairie_ca_sales_week_link.csv.gz", "unsafe_path"),
    ]
    assert rejected["quarantined_copy"].null_count() == 2  # nothing outside the folder was read or copied
    assert not lake.exists(lake.bronze("prairie_ca", "weekly_sales"))
