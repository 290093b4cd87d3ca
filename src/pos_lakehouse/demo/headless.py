"""Drive the code location without a daemon: tick sensors, run what they request, then let
declarative automation carry silver and gold forward -- the same sensors, jobs, assets and
automation conditions that `dg dev` runs, evaluated through Dagster's own APIs.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor


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
    automation_cursor: AssetDaemonCursor | None = None
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def _loggers(self) -> dict:
        # Run events still go to the instance (and the UI); only the console echo is quieted.
        return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}} if self.quiet else {}

    @property
    def landing_sensors(self) -> list[dg.SensorDefinition]:
        return [s for s in (self.defs.sensors or []) if s.name.endswith(("_landing_sensor", "_poll_sensor"))]

    def tick_sensor(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.sensor_cursors.get(sensor.name),
            definitions=self.defs,
            sensor_name=sensor.name,
            resources=self.defs.resources,
        )
        result = sensor(context)
        self.sensor_cursors[sensor.name] = context.cursor if not isinstance(result, dg.SensorResult) else (result.cursor or context.cursor)
        if isinstance(result, dg.SensorResult):
            return list(result.run_requests or [])
        return []

    def run_request(self, sensor: dg.SensorDefinition, request: dg.RunRequest) -> RunRecord:
        # Like the daemon: a run key already used by this sensor is not launched again.
        if request.run_key and self.instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/run_key": request.run_key, "dagster/sensor_name": sensor.name})
        ):
            return RunRecord(sensor.job_name or "", "", True, "skipped: run key already used", request.partition_key)
        job = self.defs.resolve_job_def(sensor.job_name)
        tags = {**(request.tags or {}), "dagster/run_key": request.run_key or "", "dagster/sensor_name": sensor.name}
        result = job.execute_in_process(
            run_config={**(request.run_config or {}), **self._loggers},
            instance=self.instance,
            partition_key=request.partition_key,
            tags=tags,
            raise_on_error=False,
        )
        return self._record(job.name, result, request.partition_key)

    def _record(self, name: str, result: dg.ExecuteInProcessResult, partition_key: str | None) -> RunRecord:
        error = None
        if not result.success:
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            error = "; ".join(
                (e.event_specific_data.error.message.strip() if e.event_specific_data and e.event_specific_data.error else e.message or "")
                for e in failures
            ) or "run failed"
        record = RunRecord(name, result.run_id, result.success, error, partition_key)
        self.runs.append(record)
        if self.on_run:
            self.on_run(record)
        return record

    def tick_landing(self) -> list[RunRecord]:
        records = []
        for sensor in self.landing_sensors:
            for request in self.tick_sensor(sensor):
                records.append(self.run_request(sensor, request))
        return records

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
                    tags=self.automation_tags(result.cursor.evaluation_id),
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

    def settle(self, max_ticks: int = 10) -> list[RunRecord]:
        """Tick landing sensors, then automation until nothing more is requested."""
        if self.automation_cursor is None:
            # The automation sensor's first tick only records the current state, as in the daemon.
            self.tick_automation()
        records = self.tick_landing()
        for _ in range(max_ticks):
            new = self.tick_automation()
            records += new
            if not new:
                break
        return records


def _layer(key: dg.AssetKey) -> int:
    return {"bronze": 0, "silver": 1, "gold": 2}.get(key.path[0], 3)
