"""Dimension history changes only when a value changes: `extra_attributes` across deliveries.

A delivery speaks only for the extra columns it carries and fills. One without an extra column,
or with an extra column left empty, writes nothing over the stored `extra_attributes` (no new
version, no update in place); one with a new value for one product changes that product only,
and keeps the product's other stored extra columns.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
from conftest import spec_named

from pos_lakehouse.demo.generator import write_marche_fr
from pos_lakehouse.ingest.landing import LocalLandingZone
from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.silver import refresh_silver

DIMS = ("prod_dim", "site_dim")


def _load(lake, data_root: Path, path: Path):
    spec = spec_named("marche_fr")
    ingest_files(lake, LocalLandingZone(root=str(data_root / "landing")), spec, [path.name])
    return refresh_silver(lake, spec, spec.canonical_tables)


def _dim(lake, table: str) -> pl.DataFrame:
    return lake.scan(lake.silver("marche_fr", table)).collect().drop("_updated_at", "_source_file", "_delivery_id", "_ingested_at")


def _origin(code: pl.Expr) -> pl.Expr:
    return pl.when(code.str.slice(-1).cast(pl.Int64) % 2 == 0).then(pl.lit("FR")).otherwise(pl.lit("ES"))


def test_dimension_versions_change_only_when_a_value_changes(data_root, lake):
    start = date.today() - timedelta(days=10)
    files = write_marche_fr(
        data_root / "landing" / "marche_fr", data_root / "expected", days=4, start=start, n_products=20, n_stores=3, density=1.0, renames={}
    )
    # Day 1 carries a product-level extra column.
    first = pl.read_parquet(files[0]).with_columns(_origin(pl.col("code_article")).alias("origine"))
    first.write_parquet(files[0])
    _load(lake, data_root, files[0])
    products = _dim(lake, "prod_dim")
    assert products["extra_attributes"].is_not_null().all()
    stored = {p: json.loads(e) for p, e in products.select("prod_id", "extra_attributes").iter_rows()}
    assert set(map(json.dumps, stored.values())) == {json.dumps({"origine": "FR"}), json.dumps({"origine": "ES"})}
    before = {t: _dim(lake, t) for t in DIMS}

    # Day 2 carries no extra column; day 3 the same origin and one more column left empty.
    third = pl.read_parquet(files[2]).with_columns(_origin(pl.col("code_article")).alias("origine"), pl.lit(None, pl.String).alias("promo"))
    third.write_parquet(files[2])
    for path in files[1:3]:
        silver = _load(lake, data_root, path)
        for table in DIMS:
            result = silver[table]
            assert result.input_rows > 0, (path.name, table)
            assert (result.new_versions, result.closed_versions, result.inserted, result.updated) == (0, 0, 0, 0), (path.name, table)
            assert _dim(lake, table).sort(result_key(table)).equals(before[table].sort(result_key(table))), (path.name, table)

    # Day 4: one product gets a colour; its origin stays, every other product is untouched.
    fourth = pl.read_parquet(files[3])
    coloured = fourth["code_article"][0]
    fourth = fourth.with_columns(pl.when(pl.col("code_article") == coloured).then(pl.lit("rouge")).alias("couleur"))
    fourth.write_parquet(files[3])
    silver = _load(lake, data_root, files[3])
    assert silver["prod_dim"].updated == 1 and silver["prod_dim"].new_versions == 0
    after = _dim(lake, "prod_dim")
    changed = after.join(before["prod_dim"], on=[*after.columns], how="anti", nulls_equal=True)
    assert changed["prod_id"].to_list() == [f"1001_{coloured}"]
    assert json.loads(changed["extra_attributes"].item()) == {**stored[f"1001_{coloured}"], "couleur": "rouge"}


def result_key(table: str) -> str:
    return "prod_key" if table == "prod_dim" else "site_key"


# (new extras, stored extras) -> what the dimension keeps, once the YAML maps `Importe` (it retired).
MERGE_CASES = [
    (None, '{"Importe":"2.50","color":"red"}'),  # no extras this time: the mapped key leaves
    (None, '{"Importe":"2.50"}'),  # ... and nothing is left
    ('{"color":"red"}', '{"Importe":"2.50","color":"red"}'),  # the same extra, the mapped key leaves
    ('{"size":"L"}', '{"color":"red"}'),  # nothing retired: merged key by key
    ('{"color":"red"}', '{"color":"red"}'),  # unchanged: the stored text to the byte
    (None, '{"color":"red"}'),
    ('{"color":null}', None),
]


def test_keys_the_yaml_now_maps_leave_the_stored_extra_attributes():
    from pos_lakehouse.engines.json_objects import merge_objects

    retired = frozenset({"Importe"})
    got = [merge_objects(new, stored, retired) for new, stored in MERGE_CASES]
    assert [json.loads(g) if g else g for g in got] == [{"color": "red"}, None, {"color": "red"}, {"color": "red", "size": "L"}] + [
        {"color": "red"},
        {"color": "red"},
        None,
    ]
    assert got[4] == MERGE_CASES[4][1] and got[5] == MERGE_CASES[5][1]  # verbatim: no new version for them
    # Without retired keys the stored objects stand as before.
    assert merge_objects(None, MERGE_CASES[0][1]) == MERGE_CASES[0][1]
