"""A delivery's own run carries it from landing to gold: one run, no automation round-trip, and the
guarantees that come with it (a failed blocking check keeps gold as it was, two runs of one
retailer at once count every row once, reference data landing later re-enriches by a sensor)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta

import dagster as dg
import polars as pl
from conftest import PROJECT_ROOT, RETAILERS_DIR
from test_real_dates import _gold, _marche_day

TODAY = date.today()
DAYS = [TODAY - timedelta(days=d) for d in range(6, 0, -1)]  # the last six days, up to yesterday


def _sensor_requests(headless, name: str) -> list[dg.RunRequest]:
    requests = headless.tick_sensor(headless.defs.resolve_sensor_def("retailer_landing_sensor"))
    return [r for r in requests if r.tags["retailer"] == name]


def test_one_run_carries_a_delivery_from_landing_to_gold(data_root, lake, headless, instance):
    landing = data_root / "landing" / "marche_fr"
    written = [_marche_day(landing, day, units=2 + i) for i, day in enumerate(DAYS[:2])]
    headless.tick_automation()  # the automation sensor's first tick only records the state, as in the daemon

    [request] = _sensor_requests(headless, "marche_fr")
    record = headless.run_request(headless.defs.resolve_sensor_def("retailer_landing_sensor"), request)
    assert record.success, record.error
    assert [r.name for r in headless.runs] == ["marche_fr_ingest"]  # no other run: no automation yet

    gold = _gold(lake, "store_day_fact", "cds_1001")
    assert gold.height == sum(f.height for f in written)
    assert int(gold["pos_sales_units"].sum()) == sum(int(f["qte_vendue"].sum()) for f in written)
    # The gold partitions it fed are recorded against the gold assets, by the delivery's run.
    for table in ("store_day_fact", "store_week_fact", "store_month_fact", "prod_dim", "site_dim", "delivery_calendar"):
        event = instance.get_latest_materialization_event(dg.AssetKey(["gold", table]))
        assert event is not None and event.run_id == record.run_id, table
        assert event.asset_materialization.partition == "cds_1001"
        assert event.asset_materialization.metadata["partition_rows"].value == _gold(lake, table, "cds_1001").height
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(["gold", "store_day_fact"]), n) for n in ("rows_match_silver", "unique_keys")]
    )
    assert len(checks) == 2 and all(c.run_id == record.run_id and c.status.value == "SUCCEEDED" for c in checks.values())

    # Automation then only refreshes the serving views; nothing else is requested.
    later = headless.settle()
    assert [r.name for r in later] == ["automation: serving/gold_views"]


def test_failed_blocking_silver_check_keeps_gold_as_it_was(data_root, lake, headless, instance, monkeypatch):
    landing = data_root / "landing" / "marche_fr"
    _marche_day(landing, DAYS[0], units=3)
    assert all(r.success for r in headless.settle())
    before = _gold(lake, "store_day_fact", "cds_1001")

    # The next delivery's silver fails a blocking check (as if its keys were broken): the run fails,
    # and the retailer's gold partition is not touched.
    from pos_lakehouse.components import retailer_pipeline

    real = retailer_pipeline.run_silver_checks

    def broken(context, lake_, spec, tables, results=None):
        for check in real(context, lake_, spec, tables, results):
            if check.check_name == "facts_reference_dimension_versions":
                check = dg.AssetCheckResult(
                    asset_key=check.asset_key, check_name=check.check_name, passed=False, severity=dg.AssetCheckSeverity.ERROR
                )
            yield check

    monkeypatch.setattr(retailer_pipeline, "run_silver_checks", broken)
    _marche_day(landing, DAYS[1], units=5)
    runs = headless.tick_landing()
    assert len(runs) == 1
    after = _gold(lake, "store_day_fact", "cds_1001")
    assert after.sort("date", "site_id", "prod_id").equals(before.sort("date", "site_id", "prod_id"))
    assert lake.scan(lake.silver("marche_fr", "store_day_fact")).collect().height > before.height  # silver did load it
    event = instance.get_latest_materialization_event(dg.AssetKey(["gold", "store_day_fact"]))
    assert event.run_id != runs[0].run_id


_ONE_BATCH = """
import json, sys
import dagster as dg
from pos_lakehouse.definitions import build_definitions
files = json.loads(sys.argv[1])
with dg.DagsterInstance.get() as instance:
    defs = build_definitions()
    keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] in ("bronze", "silver") and k.path[1:2] == ["marche_fr"]]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        run_config={"ops": {"marche_fr_bronze": {"config": {"files": files}}}}, asset_selection=keys,
        instance=instance, partition_key="cds_1001", raise_on_error=False, tags={"retailer": "marche_fr", "pos_lakehouse/ingest": "marche_fr"},
    )
print("RUN", result.run_id, result.success)
"""


def test_two_delivery_runs_of_one_retailer_at_once_count_every_row_once(data_root, lake, tmp_path):
    """Two batches of one retailer launched together in two processes (as the daemon may): the
    silver step takes turns through the retailer's pool, each run reads bronze past the other's bookmark."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the pools' limits
    landing_dir = data_root / "landing" / "marche_fr"
    written = [_marche_day(landing_dir, day, units=1 + i) for i, day in enumerate(DAYS)]
    names = sorted(p.name for p in landing_dir.iterdir())
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with dg.DagsterInstance.from_config(str(home)):
        pass  # the instance's storage exists before two processes open it at once
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ONE_BATCH, json.dumps(half)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for half in (names[:3], names[3:])
    ]
    # The parent plays the daemon's pool_claims_sensor: a step that asked for the pool just as the
    # other run freed it is handed the slot instead of waiting forever.
    from pos_lakehouse.sensors.pool_claims import assign_stranded_pool_claims

    deadline = time.monotonic() + 600
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            assign_stranded_pool_claims(instance)
            time.sleep(1)
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and " True" in out, err[-2000:]

    silver = lake.scan(lake.silver("marche_fr", "store_day_fact")).collect()
    gold = _gold(lake, "store_day_fact", "cds_1001")
    expected_rows = sum(f.height for f in written)
    assert silver.height == gold.height == expected_rows
    assert int(gold["pos_sales_units"].sum()) == sum(int(f["qte_vendue"].sum()) for f in written)
    assert gold.select("date", "site_id", "prod_id").is_unique().all()
    assert sorted(set(gold["date"].to_list())) == DAYS


def test_reference_data_landing_after_silver_re_runs_only_that_retailers_silver(data_root, lake, headless, instance):
    from pos_lakehouse.components.retailer_pipeline import REFERENCE_KEYS
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.sensors.reference import reference_refresh_requests

    _marche_day(data_root / "landing" / "marche_fr", DAYS[0])
    assert all(r.success for r in headless.settle())
    specs = load_retailer_specs(RETAILERS_DIR)
    assert reference_refresh_requests(instance, specs, REFERENCE_KEYS) == []

    # FX rates land after marche_fr's silver: marche_fr (and no retailer without silver) is due.
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=REFERENCE_KEYS["store_day_fact"]))
    due = reference_refresh_requests(instance, specs, REFERENCE_KEYS)
    assert [s.name for s, _ in due] == ["marche_fr"]
    runs = headless.settle()
    refresh = [r for r in runs if r.name == "marche_fr_ingest"]  # its silver, as a subset of its ingest job
    assert len(refresh) == 1 and refresh[0].success
    assert reference_refresh_requests(instance, specs, REFERENCE_KEYS) == []
    # Once per reference event: a second settle launches nothing more for it.
    assert not [r for r in headless.settle() if r.name == "marche_fr_ingest"]
    assert pl.Series(_gold(lake, "store_day_fact", "cds_1001")["date"]).n_unique() == 1


def test_runs_waiting_or_working_on_a_retailers_silver_keep_catch_up_and_refresh_off_it(data_root, defs, instance):
    """A retailer's run (tagged with the retailer, selecting its bronze only here) writes its silver and
    publishes its gold partitions too; while it is queued or running, catch-up requests neither, and the
    reference refresh sensor waits while corporate reference data is still being loaded."""
    from pos_lakehouse.layers.gold import GOLD_TABLES
    from pos_lakehouse.retailer import load_retailer_specs
    from pos_lakehouse.sensors.runs import busy_assets as _busy_assets

    specs = load_retailer_specs(RETAILERS_DIR)
    marche = next(s for s in specs if s.name == "marche_fr")
    assert not _busy_assets(instance, specs)
    # Not started yet (waiting in the queue counts as well): its tag names the retailer.
    job = defs.resolve_implicit_global_asset_job_def()
    bronze = [dg.AssetKey(["bronze", "marche_fr", f.name]) for f in marche.delivery.files]
    refresh = instance.create_run_for_job(
        job, asset_selection=frozenset(bronze), tags={"dagster/partition": "cds_1001", "pos_lakehouse/ingest": "marche_fr"}
    )
    assert _busy_assets(instance, specs) == {
        *((k, "cds_1001") for k in bronze),
        *((dg.AssetKey(["silver", "marche_fr", t]), "cds_1001") for t in marche.silver_tables),
        *((dg.AssetKey(["gold", t]), "cds_1001") for t in marche.silver_tables if t in GOLD_TABLES),
    }
    instance.report_run_canceled(refresh)
    gold_key = dg.AssetKey(["gold", "store_day_fact"])
    gold_run = instance.create_run_for_job(job, asset_selection=frozenset([gold_key]), tags={"dagster/partition": "cds_1002"})
    assert _busy_assets(instance, specs) == {(dg.AssetKey(["gold", "store_day_fact"]), "cds_1002")}
    instance.report_run_canceled(gold_run)

    sensor = defs.resolve_sensor_def("reference_refresh_sensor")
    loading = instance.create_run_for_job(defs.resolve_job_def("corporate_reference_refresh"))
    instance.handle_run_event(loading.run_id, dg.DagsterEvent("PIPELINE_START", loading.job_name))  # STARTED
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        result = sensor(context)
    assert not result.run_requests and "being loaded" in result.skip_reason.skip_message
    instance.report_run_canceled(loading)


def test_a_step_queued_just_after_the_slot_was_freed_is_handed_it():
    """The interleaving that stranded a run for good: B finds the pool full, A frees its slot (and
    finds nobody queued to hand it to), then B queues. B would wait forever; the pool-claims sensor
    hands it the slot -- and never hands out more slots than the pool has."""
    from pos_lakehouse.sensors.pool_claims import assign_stranded_pool_claims

    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("silver_tryout", 1)
        assert storage.claim_concurrency_slot("silver_tryout", "run_a", "silver").is_claimed
        assert not storage.has_unassigned_slots("silver_tryout")  # B looks: the pool is full
        storage.free_concurrency_slot_for_step("run_a", "silver")  # A ends: nobody queued yet
        storage.add_pending_step("silver_tryout", "run_b", "silver", should_assign=False)  # B queues
        assert not storage.claim_concurrency_slot("silver_tryout", "run_b", "silver").is_claimed  # stranded

        # A third run queues behind B: one slot, so only one of them may be handed it.
        storage.add_pending_step("silver_tryout", "run_c", "silver", should_assign=False)
        assert assign_stranded_pool_claims(instance) == ["silver_tryout"]
        assert storage.claim_concurrency_slot("silver_tryout", "run_b", "silver").is_claimed
        assert not storage.claim_concurrency_slot("silver_tryout", "run_c", "silver").is_claimed
        assert assign_stranded_pool_claims(instance) == []  # B holds the only slot: C keeps waiting
        assert not storage.claim_concurrency_slot("silver_tryout", "run_c", "silver").is_claimed

        storage.free_concurrency_slot_for_step("run_b", "silver")  # the normal hand-over still works
        assert storage.claim_concurrency_slot("silver_tryout", "run_c", "silver").is_claimed
