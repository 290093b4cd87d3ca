"""Checks that tell the truth: the demo's codes are valid GS1 codes, and a check on a column the
retailer does not deliver is reported as not applicable instead of failing every row."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from pos_lakehouse.demo.retailers import write_demo_landing
from pos_lakehouse.quality.schemas import gs1_check_digit_valid


def test_the_demo_upcs_of_bigbox_us_and_prairie_ca_carry_valid_check_digits(tmp_path):
    written = write_demo_landing(tmp_path, ["bigbox_us", "prairie_ca"])
    codes = []
    for retailer, separator in (("bigbox_us", "|"), ("prairie_ca", ",")):
        for path in written[retailer]:
            frame = pl.read_csv(path, separator=separator, infer_schema=False)
            column = next(c for c in frame.columns if c.strip().lower() == "upc")
            codes.append(frame.select(pl.col(column).alias("code")))
    codes = pl.concat(codes)
    assert codes.height > 0
    invalid = codes.filter(~gs1_check_digit_valid(pl.col("code")).fill_null(False))
    assert invalid.is_empty(), invalid.head()


USD_YAML = """\
type: pos_lakehouse.components.RetailerPipeline
attributes:
  retailer_id: 1992
  name: dollar_us
  country: US
  currency: USD
  secure_group_key: 119992
  delivery:
    channel: landing
    files:
      - name: sales
        match: "sales_*.csv"
        holds: [prod_dim, site_dim, store_day_fact]
  columns:
    sales: {day: date, store: site_id, item: prod_id, units: pos_sales_units, dollars: pos_sales_value_lc}
"""


def test_checks_of_undelivered_codes_are_not_applicable_and_usd_values_need_no_fx(tmp_path, data_root, lake, instance):
    from own_defs import defs_folder, run_ingest

    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.runner.summary import check_outcomes

    folder = data_root / "landing" / "dollar_us"
    folder.mkdir(parents=True)
    day = (date.today() - timedelta(days=2)).isoformat()
    (folder / "sales_1.csv").write_text("day,store,item,units,dollars\n" + "".join(f"{day},S1,P{i},{i + 1},{i + 1}.25\n" for i in range(3)))
    defs_dir = defs_folder(tmp_path / "defs", {"dollar_us": USD_YAML})  # no fx_rates reference table anywhere
    result = run_ingest(defs_dir, instance, "dollar_us", "cds_1992", {"ops": {"dollar_us_bronze": {"config": {"files": ["sales_1.csv"]}}}})
    assert result.success

    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    for table, name in (("prod_dim", "valid_gtin"), ("site_dim", "valid_global_location_number")):
        evaluation = checks[(table, name)]
        assert evaluation.passed and evaluation.metadata["applicable"].value is False
        assert "does not deliver" in evaluation.description
    spec = next(iter(load_retailer_specs(defs_dir / "retailers")))
    outcome = check_outcomes(instance, spec)
    assert outcome["not applicable"] == 2 and not outcome.get("warned") and not outcome.get("failed")

    gold = lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == "cds_1992").collect()
    assert gold.height == 3
    assert gold["pos_sales_value_usd"].to_list() == gold["pos_sales_value_lc"].to_list()
    assert gold["fx_rate_to_usd"].to_list() == [1.0, 1.0, 1.0]


def test_a_policy_warning_is_one_line_once_when_definitions_load(tmp_path):
    import os
    import subprocess
    import sys

    from own_defs import defs_folder

    defs_dir = defs_folder(tmp_path / "defs", {"dollar_us": USD_YAML})  # its key is in no reader group
    code = "from pos_lakehouse.definitions import build_definitions\nbuild_definitions()\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POS_LAKEHOUSE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(tmp_path), POS_LAKEHOUSE_DATA=str(tmp_path / "data"), POS_LAKEHOUSE_DEFS_DIR=str(defs_dir))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "warning: no reader group names dollar_us (cds_1992, key 119992): only all-retailers groups see it; "
        "add its key to a group in access_policy.yaml"
    ]


def test_query_says_how_many_result_values_are_masked_and_why(tmp_path):
    from pos_lakehouse.retailer import RetailerSpec
    from pos_lakehouse.serving.masked_note import masked_note
    from pos_lakehouse.serving.policy import load_policy

    spec = RetailerSpec.model_validate(
        {
            "retailer_id": 1991,
            "name": "masked_fr",
            "country": "FR",
            "currency": "EUR",
            "secure_group_key": 119991,
            "antitrust": "value",
            "mask_younger_than_days": 28,
            "delivery": {"files": [{"name": "sales", "match": "s_*.csv", "holds": ["store_day_fact"]}]},
        }
    )
    policy_file = tmp_path / "access_policy.yaml"
    policy_file.write_text("groups:\n  fr: {description: fr, secure_group_keys: [119991]}\nusers:\n  claire: [fr]\n  guest: []\n")
    policy = load_policy(policy_file, [spec])
    today = date.today()
    recent, old = [today - timedelta(days=3)] * 3, [today - timedelta(days=200)] * 2
    result = pl.DataFrame(
        {"data_provider_code": ["cds_1991"] * 5, "date": recent + old, "pos_sales_value_lc": [1.0, None, 2.0, 3.0, 4.0]},
        schema_overrides={"date": pl.Date},
    )
    note = masked_note(policy, "claire", ["store_day_fact"], result, today)
    assert note.startswith(f"{len(recent)} value(s) in this result are antitrust-masked") and "masked_fr: 28 days" in note
    aggregated = masked_note(policy, "claire", ["store_day_fact"], result.select(pl.col("pos_sales_value_lc").sum()), today)
    assert aggregated.startswith("pos_sales_value_lc may hold antitrust-masked values")
    assert masked_note(policy, "guest", ["store_day_fact"], result, today) is None  # sees no masked retailer
