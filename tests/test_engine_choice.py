"""`engine: auto`: a delivery's new bronze rows (from the Delta log, nothing read) pick its engine."""

from __future__ import annotations

import pytest
from bigbox_data import bigbox_stores, write_store

from pos_lakehouse.layers.bronze import ingest_files
from pos_lakehouse.layers.engine_choice import engine_for, pending_bronze_rows
from pos_lakehouse.layers.silver import refresh_silver


def test_pending_rows_follow_what_silver_has_not_read_and_pick_the_engine(tmp_path):
    spec, lake, landing, landing_dir, rng, price, dates = bigbox_stores(tmp_path, products=10, days=4, stores=2, seed=2, reference=(30, 5))
    auto = spec.model_copy(update={"engine": "auto", "spark_from_rows": 40})
    assert pending_bronze_rows(lake, auto, spec.silver_tables) == 0  # nothing in bronze yet
    first = [f.name for f in landing.list_files(spec.name)]
    outcomes = ingest_files(lake, landing, spec, first)
    delivered = sum(o.rows for o in outcomes)
    assert delivered >= 40
    assert pending_bronze_rows(lake, auto, spec.silver_tables) == delivered
    assert engine_for(auto, delivered) == "spark"

    refresh_silver(lake, spec, spec.silver_tables)
    assert pending_bronze_rows(lake, auto, spec.silver_tables) == 0
    small = write_store(landing_dir, rng, 1, dates[:1], price)
    ingest_files(lake, landing, spec, [f.name for f in landing.list_files(spec.name) if f.name not in first])
    assert pending_bronze_rows(lake, auto, spec.silver_tables) == small < 40
    assert engine_for(auto, small) == "polars"
    # A table that has consumed nothing yet counts every bronze row.
    assert pending_bronze_rows(lake, auto, ["store_day_fact"]) == small
    assert engine_for(spec, 10**9) == spec.engine  # a fixed engine stays fixed


def test_auto_needs_nothing_else_and_rejects_a_non_positive_threshold():
    from conftest import spec_named

    spec = spec_named("bigbox_us")
    data = spec.model_dump()
    assert type(spec).model_validate({**data, "engine": "auto"}).spark_from_rows == 1_000_000
    with pytest.raises(ValueError, match="spark_from_rows"):
        type(spec).model_validate({**data, "engine": "auto", "spark_from_rows": 0})
