"""Drive the code location without a daemon: tick sensors, run what they request (a delivery's
run carries it to gold), then evaluate declarative automation and the catch-up sensor until
nothing more is requested -- the same sensors, jobs, assets and automation conditions that
`dg dev` runs, evaluated through Dagster's own APIs.

On its first `settle` the driver recovers from a predecessor that died mid-run (what the
daemon's run monitoring, run retries and `catch_up_sensor` do for `dg dev`): runs left STARTED
by a dead driver are marked failed and their concurrency slots freed, their landing batches
run again, and every silver or gold table behind its upstream data is brought up to date.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from pos_lakehouse.recovery import (
    DRIVER_TAG,
    IN_PROGRESS_RUN_STATUSES,
    RETAILERS_DIR,
    Recovered,
    catch_up_requests,
    driver_identity,
    fail_dead_runs,
)


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
    automation_cursor: object | None = None
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
        if any(r.status == dg.DagsterRunStatus.SUCCESS or r.status in IN_PROGRESS_RUN_STATUSES for r in earlier):
            return RunRecord(request.job_name or sensor.job_name or "", "", True, "skipped: run key already used", request.partition_key)
        job = self.defs.resolve_job_def(request.job_name or sensor.job_name)
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
            # A retailer's silver re-run (reference refresh) is a subset of its ingest job.
            asset_selection=request.asset_selection,
        )
        return self._record(job.name, result, request.partition_key)

    def _record(self, name: str, result: dg.ExecuteInProcessResult, partition_key: str | None) -> RunRecord:
        error = None
        if not result.success:
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            error = (
                "; ".join(
                    (
                        e.event_specific_data.error.message.strip()
                        if e.event_specific_data and e.event_specific_data.error
                        else e.message or ""
                    )
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

        graph = self.defs.resolve_asset_graph()
        requests, _ = catch_up_requests(lake, self.instance, graph, load_retailer_specs(RETAILERS_DIR))
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
