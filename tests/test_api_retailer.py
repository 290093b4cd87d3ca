"""shopnow_us (1004) against its API simulator on loopback: full and incremental pulls, faults, crash and restart."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import spec_named
from own_defs import execute_ingest

from pos_lakehouse.demo.api_simulator import ENDPOINTS, ApiSimulator, ShopNowData
from pos_lakehouse.demo.generator import read_expected
from pos_lakehouse.ingest.api import ApiAuthError, ApiError, client_for, pull_api, pull_endpoint
from pos_lakehouse.ingest.pulled import read_state
from pos_lakehouse.quality.reconcile import gold_totals, reconcile

SALES = ENDPOINTS["sales_daily"]


@pytest.fixture
def api(monkeypatch):
    data = ShopNowData(n_products=25, n_stores=4, density=0.3)
    data.add_days(4)
    with ApiSimulator(data, token="t0k3n-for-tests") as sim:
        monkeypatch.setenv("SHOPNOW_API_URL", sim.base_url)
        monkeypatch.setenv("SHOPNOW_API_TOKEN", sim.token)
        yield sim


def small_pages(page_size: int = 10, **api):
    """shopnow_us as in its YAML, with small pages (to paginate small data) and fast retries."""
    spec = spec_named("shopnow_us")
    settings = spec.delivery.api.model_copy(update={"page_size": page_size, "backoff_seconds": 0.0, **api})
    return spec.model_copy(update={"delivery": spec.delivery.model_copy(update={"api": settings})})


def bronze(lake, table: str) -> pl.DataFrame:
    return lake.scan(lake.bronze("shopnow_us", table)).collect()


def assert_gold_reconciles(data_root, lake, sim: ApiSimulator) -> None:
    sim.data.write_expected(data_root / "expected")
    expected = read_expected(data_root / "expected").filter(pl.col("retailer") == "shopnow_us")
    assert expected.height == sim.data.days
    diffs = reconcile(expected, gold_totals(lake, [spec_named("shopnow_us")]))
    assert diffs.is_empty(), diffs.to_dicts()


def test_full_then_incremental_load_through_sensor_to_gold(data_root, lake, headless, api):
    # Full load: the poll sensor sees news, one ingest run pulls everything, automation carries it to gold.
    records = headless.settle()
    assert records and all(r.success for r in records), [r.error for r in records if not r.success]
    assert [r.name for r in records if r.name == "shopnow_us_ingest"] == ["shopnow_us_ingest"]
    for table in ENDPOINTS:
        assert bronze(lake, table).height == len(api.data.collection(table))
    assert_gold_reconciles(data_root, lake, api)
    gold = lake.scan(lake.gold("store_day_fact")).filter(pl.col("data_provider_code") == "cds_1004").collect()
    assert gold["secure_group_key"].unique().to_list() == [110014]
    assert gold["currency"].unique().to_list() == ["USD"]
    assert gold["prod_id"].str.starts_with("1004_SN-").all()
    assert gold.select("prod_key", "site_key").null_count().sum_horizontal().item() == 0
    # Nothing new at the source: the sensor asks, finds nothing, starts nothing.
    assert headless.settle() == []

    # Incremental: two new days and a restated old sale; only records changed after the stored position are asked for.
    high = read_state(lake, lake.bronze("shopnow_us", "sales_daily"))["updated_after"]
    seen = len(api.requests)
    api.data.add_days(2)
    restated_id = api.data.collection("sales_daily")[0]["id"]
    api.data.restate(restated_id, units=999, net_sales="1234.56")
    new_records = [r for r in api.data.collection("sales_daily") if r["updated_at"] > high]

    records = headless.settle()
    assert records and all(r.success for r in records), [r.error for r in records if not r.success]
    later = [r for r in api.requests[seen:] if r["path"] == SALES and r["status"] == 200]
    assert later and all(r["params"].get("updated_after") == high for r in later), later
    pulled = [r for r in later if r["params"]["limit"] != "1"]  # limit=1: the sensor's probe
    assert sum(r["records"] for r in pulled) == len(new_records)
    # Bronze keeps both versions of the restated sale; silver and gold hold it once, with the new values.
    assert bronze(lake, "sales_daily").height == len(api.data.sales) + 1
    silver = lake.scan(lake.silver("shopnow_us", "store_day_fact")).collect()
    assert silver.height == len(api.data.sales)
    assert_gold_reconciles(data_root, lake, api)


def test_429_and_503_are_retried_then_succeed(lake, api):
    spec = small_pages(10)
    api.fail_next(429, times=2, path=SALES, retry_after="0")
    api.fail_next(503, times=1, path=SALES, after=2, retry_after="0")
    outcomes = {o.table: o for o in pull_api(lake, spec)}
    statuses = [r["status"] for r in api.requests if r["path"] == SALES]
    assert statuses[:3] == [429, 429, 200] and 503 in statuses
    assert outcomes["sales_daily"].rows == len(api.data.sales)
    assert bronze(lake, "sales_daily")["id"].n_unique() == len(api.data.sales) == bronze(lake, "sales_daily").height


def test_retries_give_up_with_a_clear_error(lake, api):
    spec = small_pages(10, max_retries=2)
    api.fail_next(503, times=10, path=ENDPOINTS["products"])
    with pytest.raises(ApiError, match=r"still failing after 2 retries \(last: 503"):
        pull_api(lake, spec, ["products"])


def test_401_fails_the_run_with_a_clear_message(data_root, lake, defs, instance, api, monkeypatch):
    monkeypatch.setenv("SHOPNOW_API_TOKEN", "wrong-secret-value")
    with pytest.raises(ApiAuthError, match="401") as info:
        pull_api(lake, spec_named("shopnow_us"))
    assert "SHOPNOW_API_TOKEN" in str(info.value) and "wrong-secret-value" not in str(info.value)
    result = execute_ingest(defs, "shopnow_us", instance=instance, partition_key="cds_1004", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error, message = failure.event_specific_data.error, ""
    while error is not None:  # Dagster wraps the op's exception; the cause carries our message
        message += error.message
        error = error.cause
    assert "401" in message and "SHOPNOW_API_TOKEN" in message and "wrong-secret-value" not in message
    assert not lake.exists(lake.bronze("shopnow_us", "products"))
    assert all(r["status"] == 401 for r in api.requests)


def test_crash_mid_pagination_then_restart_loses_and_duplicates_nothing(lake, api):
    spec = small_pages(10, max_retries=1)
    total = len(api.data.sales)
    assert total > 40, "the data must span several pages"
    # Three pages come through, then the API fails beyond the retry budget: the run dies mid-listing.
    api.fail_next(500, times=5, path=SALES, after=3)
    with client_for(spec) as client, pytest.raises(ApiError):
        pull_endpoint(lake, spec, "sales_daily", client)
    assert bronze(lake, "sales_daily").height == 30
    state = read_state(lake, lake.bronze("shopnow_us", "sales_daily"))
    assert state["cursor"], "the position inside the listing was committed with the pages"

    api.clear_faults()
    before = len(api.requests)
    with client_for(spec) as client:
        outcome = pull_endpoint(lake, spec, "sales_daily", client)
    first = api.requests[before]
    assert first["params"].get("cursor") == state["cursor"], "the restart resumes where the crash left off"
    assert outcome.rows == total - 30
    rows = bronze(lake, "sales_daily")
    assert rows.height == total and rows["id"].n_unique() == total

    # Fetching pages again (position rewound, e.g. a retried request) appends nothing: same request+content, same id.
    with client_for(spec) as client:
        again = pull_endpoint(lake, spec, "sales_daily", client, state={})
    assert again.rows == 0 and again.duplicates_skipped == again.requests
    assert bronze(lake, "sales_daily").height == total
