"""Small, explicit gold and silver rows for the serving tests (written through the real Lake / gold code)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl

from pos_lakehouse.layers.gold import PARTITION_COLUMN, gold_keys
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.storage.lake import Lake
from pos_lakehouse.transform import canonical


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    schema = canonical.TABLES[table].schema
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema, strict=False)


def fact_rows(
    code: str,
    key: int,
    days: list[date],
    *,
    sites: int = 2,
    products: int = 3,
    units: float = 10.0,
    masked_units: float = 7.0,
    value: float = 100.0,
    masked_value: float = 70.0,
    updated_at: datetime | None = None,
) -> list[dict]:
    rid = code.removeprefix("cds_")
    ts = updated_at or datetime.now(UTC)
    rows = []
    for d in days:
        for s in range(sites):
            for p in range(products):
                rows.append(
                    {
                        "date": d,
                        "site_id": f"{rid}_S{s}",
                        "prod_id": f"{rid}_P{p}",
                        "pos_sales_units": Decimal(str(units)),
                        "pos_sales_value_lc": Decimal(str(value)),
                        "pos_sales_value_usd": Decimal(str(value * 1.1)),
                        "at_masked_pos_sales_units": Decimal(str(masked_units)),
                        "at_masked_pos_sales_value_lc": Decimal(str(masked_value)),
                        "at_masked_pos_sales_value_usd": Decimal(str(masked_value * 1.1)),
                        "currency": "EUR",
                        "data_provider_code": code,
                        "secure_group_key": key,
                        "_updated_at": ts,
                        "_ingested_at": ts,
                    }
                )
    return rows


def prod_rows(code: str, key: int, n: int = 3) -> list[dict]:
    rid = code.removeprefix("cds_")
    ts = datetime.now(UTC)
    return [
        {
            "prod_id": f"{rid}_P{p}",
            "prod_key": int(rid) * 1000 + p,
            "prod_name": f"product {p}",
            "valid_from": date(2026, 1, 1),
            "is_current": True,
            "data_provider_code": code,
            "secure_group_key": key,
            "_updated_at": ts,
            "_ingested_at": ts,
        }
        for p in range(n)
    ]


def write_gold(lake: Lake, table: str, rows: list[dict]) -> None:
    """Publish rows straight into gold through the same MERGE the pipeline uses (per partition)."""
    df = frame(table, rows)
    for code in df[PARTITION_COLUMN].unique().sort():
        part = df.filter(pl.col(PARTITION_COLUMN) == code)
        lake.merge(
            lake.gold(table),
            part,
            keys=gold_keys(table),
            restrict=f"t.{PARTITION_COLUMN} = '{code}'",
            partition_by=[PARTITION_COLUMN],
            description=canonical.TABLES[table].description,
            column_descriptions={c.name: c.description for c in canonical.TABLES[table].columns},
        )


def write_silver(lake: Lake, spec: RetailerSpec, table: str, rows: list[dict]) -> None:
    lake.merge(
        lake.silver(spec.name, table),
        frame(table, rows),
        keys=list(canonical.TABLES[table].natural_keys) if table in canonical.FACTS else ["prod_key"],
    )


def days_ago(n: int, today: date | None = None) -> date:
    return (today or date.today()) - timedelta(days=n)


def retailer(retailer_id: int, name: str, key: int) -> RetailerSpec:
    """A retailer that delivers daily sales only (the serving tests do not depend on other helpers' YAMLs)."""
    return RetailerSpec.model_validate(
        {
            "retailer_id": retailer_id,
            "name": name,
            "country": "DE",
            "currency": "EUR",
            "secure_group_key": key,
            "delivery": {"files": [{"name": "sales", "match": "sales_*.csv", "holds": ["store_day_fact"]}]},
        }
    )
