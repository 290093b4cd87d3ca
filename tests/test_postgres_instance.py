"""The production instance on PostgreSQL: the real daemon and code server, run, event log and schedule
storage in a real PostgreSQL server, a file dropped in landing reaches gold with no other help."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from conftest import DEFS_DIR, PROJECT_ROOT
from ports import free_port
from postgres_server import postgres_server
from test_real_dates import _marche_day

SHIPPED = PROJECT_ROOT / ".dagster_home" / "dagster.yaml"
POSTGRES = PROJECT_ROOT / "deploy" / "dagster.postgres.yaml"


def test_postgres_variant_is_the_shipped_instance_on_postgres_storage():
    """The two instance files differ only in storage, so the PostgreSQL one cannot fall behind."""
    shipped, variant = yaml.safe_load(SHIPPED.read_text()), yaml.safe_load(POSTGRES.read_text())
    storage = variant.pop("storage")
    assert variant == shipped
    assert "storage" not in shipped  # SQLite under DAGSTER_HOME, Dagster's default
    # Connection settings only from the environment: no literal host, user or password in the file.
    connection = storage["postgres"]["postgres_db"]
    assert connection.pop("scheme") == "postgresql+psycopg2"
    assert all(set(v) == {"env"} for v in connection.values())


def _wait(predicate, timeout: float, what: str, logs: Path):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"{what} not within {timeout:.0f} s; daemon and code server log:\n{logs.read_text()[-4000:]}")


@pytest.mark.slow
def test_daemon_on_postgres_carries_a_dropped_file_to_gold(tmp_path: Path, monkeypatch):
    defs_dir = tmp_path / "defs"
    shutil.copytree(DEFS_DIR, defs_dir)
    data_root, home = tmp_path / "data", tmp_path / "home"
    data_root.mkdir()
    home.mkdir()
    shutil.copy(POSTGRES, home / "dagster.yaml")
    with postgres_server() as server:
        server.create_database("dagster", "dg-Secret-7", "dagster")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "POS_LAKEHOUSE_DATA": str(data_root),
            "POS_LAKEHOUSE_DEFS_DIR": str(defs_dir),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(server.port),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": "dg-Secret-7",
            "DAGSTER_PG_DB": "dagster",
        }
        for key in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
            monkeypatch.setenv(key, env[key])
        port = free_port()
        (tmp_path / "workspace.yaml").write_text(
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: pos_lakehouse\n"
        )
        bin_dir = Path(sys.executable).parent
        logs = tmp_path / "processes.log"
        with open(logs, "w") as log:
            commands = [
                [str(bin_dir / "dagster"), "code-server", "start", "-m", "pos_lakehouse.definitions", "-h", "127.0.0.1", "-p", str(port)],
                [str(bin_dir / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")],
            ]
            procs = [
                subprocess.Popen(c, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True) for c in commands
            ]
            try:
                with dg.DagsterInstance.get() as instance:
                    # Every store of the instance is PostgreSQL, not SQLite under DAGSTER_HOME.
                    stores = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
                    assert [type(s).__name__ for s in stores] == [
                        "PostgresRunStorage",
                        "PostgresEventLogStorage",
                        "PostgresScheduleStorage",
                    ]
                    _wait(lambda: _ticks(instance, "retailer_landing_sensor") >= 1, 300, "a landing sensor tick", logs)

                    day = date.today() - timedelta(days=1)
                    written = _marche_day(data_root / "landing" / "marche_fr", day, units=5, products=6, stores=3)
                    run = _wait(lambda: _finished_ingest(instance), 600, "the delivery's run", logs)
                    assert run.status == dg.DagsterRunStatus.SUCCESS, _failure(instance, run)
                    # Launched by the daemon from the code location: it carries its origin and the sensor's tags.
                    assert run.remote_job_origin is not None and run.job_code_origin is not None
                    assert run.tags["dagster/sensor_name"] == "retailer_landing_sensor" and run.tags["dagster/run_key"].startswith(
                        "marche_fr-"
                    )

                    lake_gold = data_root / "gold" / "store_day_fact"
                    gold = pl.read_delta(str(lake_gold)).filter(pl.col("data_provider_code") == "cds_1001")
                    assert gold.height == written.height
                    assert int(gold["pos_sales_units"].sum()) == int(written["qte_vendue"].sum())
                    assert gold["date"].unique().to_list() == [day]
                    event = instance.get_latest_materialization_event(dg.AssetKey(["gold", "store_day_fact"]))
                    assert event is not None and event.run_id == run.run_id
                    assert event.asset_materialization.partition == "cds_1001"
            finally:
                for proc in procs:
                    os.killpg(proc.pid, signal.SIGTERM)
                for proc in procs:
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()


def _ticks(instance: dg.DagsterInstance, sensor_name: str) -> int:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == sensor_name:
            return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5))
    return 0


def _finished_ingest(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"pos_lakehouse/ingest": "marche_fr"}))
    return next((r for r in runs if r.is_finished), None)


def _failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    return "\n".join(e.message for e in instance.all_logs(run.run_id) if e.dagster_event_type and "FAILURE" in e.dagster_event_type.value)
