"""A test harness: drive the code location in one process, without a daemon -- tick sensors, run
what they request with `execute_in_process` (a delivery's run carries it to gold), then evaluate
declarative automation and the catch-up sensor until nothing more is requested.

Tests and benchmarks use it to run the same sensors, jobs, assets and automation conditions as
`dg dev` at in-process speed, on an ephemeral instance. The product commands (`pos-lakehouse
run`, `demo`) do not: they start Dagster's own daemon (`pos_lakehouse.runner`), so their runs
carry the code location's origin like any run the daemon launches.

On its first `settle` the harness recovers from a predecessor that died mid-run (what the
daemon's run monitoring, run retries and `catch_up_sensor` do for launched runs): runs left
STARTED by a dead harness process are marked failed and their concurrency slots freed, their
landing batches run again, and every silver or gold table behind its upstream data is brought
up to date.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from pos_lakehouse.sensors.catch_up import catch_up_requests
from pos_lakehouse.sensors.runs import FINISHED_STATUSES, IN_PROGRESS_RUN_STATUSES
from pos_lakehouse.sensors.targets import INGEST_TAG

# Runs this harness executes in its own process carry the process's identity, so the next harness
# can tell a run whose process is gone from one another live harness is executing. (Runs the daemon
# launches -- `pos-lakehouse run`, `dg dev` -- are watched by Dagster's run monitoring instead.)
DRIVER_TAG = "pos_lakehouse/driver"


# ---- dead runs ------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against a reused pid), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"


def driver_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or '?'}"


def _driver_alive(identity: str) -> bool:
    try:
        host, pid, started = identity.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's driver: not ours to judge
    now = _process_start(int(pid))
    return now is not None and (started == "?" or now == "?" or now == started)


@dataclass
class Recovered:
    failed_runs: list[str]
    freed_slot_runs: list[str]


def fail_dead_runs(instance: dg.DagsterInstance) -> Recovered:
    """Mark runs whose driver process is gone as failed, and free concurrency slots of ended runs.

    Only runs tagged by this harness are judged here: they were executed in process, which the
    daemon's run monitoring cannot watch; runs the daemon launched are its own to judge.
    """
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES)):
        run = record.dagster_run
        identity = run.tags.get(DRIVER_TAG)
        if identity is None or _driver_alive(identity):
            continue
        instance.report_run_failed(
            run, message=f"The driver process that executed this run ({identity}) is gone (killed or crashed); marked failed."
        )
        failed.append(run.run_id)
    freed = []
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            ended = instance.get_run_records(filters=dg.RunsFilter(run_ids=list(holders), statuses=FINISHED_STATUSES))
            for record in ended:
                storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
                freed.append(record.dagster_run.run_id)
    return Recovered(failed, freed)


@dataclass
class RunRecord:
    name: str
    run_id: str
    success: bool
    error: str | None = None
    partition_key: str | None = None


@dataclass
class Headless:
    """A tiny stand-in for the daemon loop, built on public Dagster test and execution APIs."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    on_run: Callable[[RunRecord], None] | None = None
    quiet: bool = True
    sensor_cursors: dict[str, str | None] = field(default_factory=dict)
    # What `dg.evaluate_automation_conditions` returns as `result.cursor` and takes back as `cursor=`;
    # opaque here (its class is not public API).
    automation_cursor: Any = None  # Dagster's AssetDaemonCursor (not exported)
    runs: list[RunRecord] = field(default_factory=list)
    recovered: Recovered | None = None
    _caught_up: set = field(default_factory=set)
    _identity: str = field(default_factory=driver_identity)

    @property
    def _loggers(self) -> dict:
        # Run events still go to the instance (and the UI); only the console echo is quieted.
        return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}} if self.quiet else {}

    @property
    def landing_sensors(self) -> list[dg.SensorDefinition]:
        return [s for s in (self.defs.sensors or []) if s.name.endswith(("_landing_sensor", "_poll_sensor"))]

    def tick_sensor(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        # As a context manager: some resources (the Spark jobs' local server) open and close around use.
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.sensor_cursors.get(sensor.name),
            definitions=self.defs,
            sensor_name=sensor.name,
            resources=self.defs.resources,
        ) as context:
            result = sensor(context)
        self.sensor_cursors[sensor.name] = context.cursor if not isinstance(result, dg.SensorResult) else (result.cursor or context.cursor)
        if isinstance(result, dg.SensorResult):
            return list(result.run_requests or [])
        return []

    def run_request(self, sensor: dg.SensorDefinition, request: dg.RunRequest) -> RunRecord:
        # Like the daemon: a run key already used by this sensor is not launched again -- unless
        # every run with it failed (e.g. its driver was killed): bronze appends each delivery
        # once, so running the batch again is safe, and it is how a killed ingest is finished.
        earlier = (
            self.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": request.run_key, "dagster/sensor_name": sensor.name}))
            if request.run_key
            else []
        )
        # The sensor's job (corporate reference data); a retailer's run (its assets, `sensors.targets`)
        # is a run of the code location's asset job.
        targets = [t.job_name for t in sensor.targets]
        job_name = request.job_name or (targets[0] if len(targets) == 1 else None)
        job = self.defs.resolve_job_def(job_name) if job_name else self.defs.resolve_implicit_global_asset_job_def()
        retailer = (request.tags or {}).get(INGEST_TAG)
        name = f"{retailer}_ingest" if retailer else job.name
        if any(r.status == dg.DagsterRunStatus.SUCCESS or r.status in IN_PROGRESS_RUN_STATUSES for r in earlier):
            return RunRecord(name, "", True, "skipped: run key already used", request.partition_key)
        tags = {
            **(request.tags or {}),
            "dagster/run_key": request.run_key or "",
            "dagster/sensor_name": sensor.name,
            DRIVER_TAG: self._identity,
        }
        result = job.execute_in_process(
            run_config={**(request.run_config or {}), **self._loggers},
            instance=self.instance,
            partition_key=request.partition_key,
            tags=tags,
            raise_on_error=False,
            asset_selection=request.asset_selection,
        )
        return self._record(name, result, request.partition_key)

    def _record(self, name: str, result: dg.ExecuteInProcessResult, partition_key: str | None) -> RunRecord:
        error = None
        if not result.success:
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            error = (
                "; ".join(
                    (e.step_failure_data.error.message.strip() if e.event_specific_data and e.step_failure_data.error else e.message or "")
                    for e in failures
                )
                or "run failed"
            )
        record = RunRecord(name, result.run_id, result.success, error, partition_key)
        self.runs.append(record)
        if self.on_run:
            self.on_run(record)
        return record

    def tick_landing(self) -> list[RunRecord]:
        records = []
        # Corporate reference data first: retailers' runs of the same tick then enrich with it
        # instead of being re-run by the reference refresh sensor right after.
        for sensor in sorted(self.landing_sensors, key=lambda s: not s.name.startswith("corporate_reference")):
            for request in self.tick_sensor(sensor):
                records.append(self.run_request(sensor, request))
        return records

    def tick_reference_refresh(self) -> list[RunRecord]:
        """The sensor that re-enriches silver when corporate reference data lands after it."""
        sensor = next((s for s in (self.defs.sensors or []) if s.name == "reference_refresh_sensor"), None)
        if sensor is None:
            return []
        return [self.run_request(sensor, request) for request in self.tick_sensor(sensor)]

    def tick_automation(self) -> list[RunRecord]:
        """One evaluation of every automation condition, and the runs it requests."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=dg.BetaWarning)
            result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.automation_cursor)
        self.automation_cursor = result.cursor
        by_partition: dict[str | None, set[dg.AssetKey]] = defaultdict(set)
        for key in {r.key for r in result.results if isinstance(r.key, dg.AssetKey)}:
            for partition_key in result.get_requested_partitions(key):
                by_partition[partition_key].add(key)
        records = []
        job = self.defs.resolve_implicit_global_asset_job_def()
        graph = self.defs.resolve_asset_graph()
        for partition_key, keys in sorted(by_partition.items(), key=lambda kv: str(kv[0])):
            # One run per partitions definition, upstream layers first.
            groups: dict[str, list[dg.AssetKey]] = defaultdict(list)
            for key in keys:
                pdef = graph.get(key).partitions_def
                groups[json.dumps(sorted(pdef.get_partition_keys())) if pdef else ""].append(key)
            for _, group_keys in sorted(groups.items(), key=lambda kv: min(_layer(k) for k in kv[1])):
                run = job.execute_in_process(
                    run_config=self._loggers,
                    instance=self.instance,
                    asset_selection=sorted(group_keys, key=lambda k: k.to_user_string()),
                    partition_key=partition_key,
                    tags={**self.automation_tags(result.cursor.evaluation_id), DRIVER_TAG: self._identity},
                    raise_on_error=False,
                )
                records.append(self._record("automation: " + ", ".join(k.to_user_string() for k in group_keys), run, partition_key))
        return records

    def automation_tags(self, evaluation_id: int) -> dict[str, str]:
        """The tags the automation daemon puts on the runs it launches, so the UI shows who launched them."""
        tags = {
            "dagster/auto_materialize": "true",
            "dagster/from_automation_condition": "true",
            "dagster/asset_evaluation_id": str(evaluation_id),
        }
        sensor = next((s for s in (self.defs.sensors or []) if isinstance(s, dg.AutomationConditionSensorDefinition)), None)
        if sensor is not None:
            tags["dagster/sensor_name"] = sensor.name
        return tags

    def recover(self) -> Recovered:
        """Settle what a dead predecessor left behind: its runs failed, their slots freed."""
        self.recovered = fail_dead_runs(self.instance)
        return self.recovered

    def tick_catch_up(self) -> list[RunRecord]:
        """Materialize every silver/gold asset whose upstream data is newer than what it consumed."""
        lake = (self.defs.resources or {}).get("lake")
        if lake is None:
            return []
        from pos_lakehouse.retailer import load_retailer_specs
        from pos_lakehouse.settings import retailers_dir

        graph = self.defs.resolve_asset_graph()
        requests, _ = catch_up_requests(lake, self.instance, graph, load_retailer_specs(retailers_dir()))
        job = self.defs.resolve_implicit_global_asset_job_def()
        records = []
        for keys, partition_key in requests:
            # Once per asset and settle: a table that stays behind after its run is reported, not looped on.
            keys = [k for k in keys if (k, partition_key) not in self._caught_up]
            if not keys:
                continue
            self._caught_up.update((k, partition_key) for k in keys)
            run = job.execute_in_process(
                run_config=self._loggers,
                instance=self.instance,
                asset_selection=keys,
                partition_key=partition_key,
                tags={"pos_lakehouse/catch_up": "true", DRIVER_TAG: self._identity},
                raise_on_error=False,
            )
            records.append(self._record("catch-up: " + ", ".join(k.to_user_string() for k in keys), run, partition_key))
        return records

    def settle(self, max_ticks: int = 10) -> list[RunRecord]:
        """Tick landing sensors, then automation until nothing more is requested."""
        if self.recovered is None:
            self.recover()
        self._caught_up.clear()
        if self.automation_cursor is None:
            # The automation sensor's first tick only records the current state, as in the daemon.
            self.tick_automation()
        records = self.tick_landing()
        for _ in range(max_ticks):
            new = self.tick_reference_refresh() + self.tick_automation()
            if not new:
                # Automation reacts to new materializations; whatever a failed or killed run left
                # behind its upstream data is requested here (each pass at most once per asset).
                new = self.tick_catch_up()
                if all(not r.success for r in new):
                    records += new
                    break
            records += new
        return records


def _layer(key: dg.AssetKey) -> int:
    return {"bronze": 0, "silver": 1, "gold": 2}.get(key.path[0], 3)
