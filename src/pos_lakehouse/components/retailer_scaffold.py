"""`dg scaffold defs pos_lakehouse.components.RetailerPipeline retailers/<name>`: a commented, valid template.

The template describes a daily Parquet retailer; it passes `dg check defs` as written, and each
line says what to change for the real retailer.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import yaml

TEMPLATE = """\
# Retailer `{name}`: this one file is the whole onboarding. Edit it, then `uv run dg check defs`.
# Its sensor, bronze and silver assets, checks and gold partitions appear on the next reload.
type: pos_lakehouse.components.RetailerPipeline

attributes:
  retailer_id: {retailer_id}               # unique number; the data provider code becomes cds_{retailer_id}
  name: {name}                   # snake_case: names data/landing/{name}/, its tables and asset group
  description: Example daily Parquet retailer (replace with who they are and how they deliver).
  country: XX                        # ISO country code of the retailer's business
  currency: EUR                      # ISO currency of the values when the files do not say
  secure_group_key: {secure_group_key}           # row-level security key; give a group of defs/serving/access_policy.yaml read access
  engine: polars                     # polars (in-process) | spark (big retailers, through Dagster Pipes)
  antitrust: none                    # none | value (money + units) | volume (all): which measures get masked twins
  cadence: daily                     # daily | weekly: sets the freshness policy
  week_ends_on: sunday               # last day of the retailer's business week (weekly aggregates)
  delivery:
    channel: landing                 # landing | sftp | api | database
    files:
      - name: sales                  # bronze table name of these files
        match: "{name}_sales_*.parquet"   # glob matched in data/landing/{name}/
        holds: [prod_dim, site_dim, store_day_fact]   # canonical tables one file feeds (one big table here)
        format: {{type: parquet}}      # parquet | csv | excel | jsonl | json (csv: separator, decimal_comma, encoding, date_formats)
  columns:                           # per file kind: source column -> canonical column (names are matched case-insensitively)
    sales:
      business_date: date
      store_id: site_id
      store_name: site_name
      product_id: prod_id
      ean: gtin
      product_name: prod_name
      units_sold: pos_sales_units
      sales_value: pos_sales_value_lc
  scd2:                              # attributes whose change opens a new dimension version; each must be mapped above
    prod_dim: [prod_name]
    site_dim: [site_name]
"""


def _free_ids(retailers_dir: Path) -> tuple[int, int]:
    """The next retailer id and security key after the ones already onboarded."""
    ids, keys = [1000], [110010]
    for path in retailers_dir.glob("*/defs.yaml"):
        try:
            attrs = (yaml.safe_load(path.read_text()) or {}).get("attributes") or {}
        except yaml.YAMLError:
            continue
        if isinstance(attrs.get("retailer_id"), int):
            ids.append(attrs["retailer_id"])
        if isinstance(attrs.get("secure_group_key"), int):
            keys.append(attrs["secure_group_key"])
    return max(ids) + 1, max(keys) + 1


class RetailerScaffolder(dg.Scaffolder):
    """Writes `defs.yaml` for a new retailer named after its folder."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        target = Path(request.target_path)
        name = re.sub(r"[^a-z0-9_]+", "_", target.name.lower()).strip("_") or "new_retailer"
        retailer_id, key = _free_ids(target.parent)
        target.mkdir(parents=True, exist_ok=True)
        (target / "defs.yaml").write_text(TEMPLATE.format(name=name, retailer_id=retailer_id, secure_group_key=key))
