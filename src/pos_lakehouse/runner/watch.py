"""What the daemon did, read from the instance's own records: runs that finished, sensor ticks, and
whether everything is settled -- for the one line per run `pos-lakehouse run` prints and for when it stops."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from pos_lakehouse.runner.daemon import LOCATION_NAME
from pos_lakehouse.sensors.targets import run_label

if TYPE_CHECKING:  # the type of what `DagsterInstance.get_ticks` returns (not exported by dagster)
    from dagster._core.scheduler.instigation import InstigatorTick

UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass
class FinishedRun:
    run_id: str
    name: str
    status: str  # SUCCESS, FAILURE or CANCELED; SENSOR for a sensor whose evaluation failed
    seconds: float | None
    partition_key: str | None = None
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.status == "SUCCESS"


def run_name(run: dg.DagsterRun) -> str:
    """`<retailer>_ingest` for a retailer's run; the job's name; for other runs of asset selections, their assets."""
    return run_label(run)


def run_error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why a run failed: its steps' failures (the first line a person needs), else the run's own failure."""
    steps, run_failures = [], []
    wanted = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    for entry in instance.all_logs(run_id, of_type=wanted):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        # A step's own exception, not Dagster's "Error occurred while executing op" around it.
        while error is not None and error.cause is not None and "DagsterExecutionStepExecutionError" in (error.cls_name or ""):
            error = error.cause
        text = (error.message if error is not None else None) or (event.message if event else None) or entry.message or ""
        (steps if event and event.event_type == dg.DagsterEventType.STEP_FAILURE else run_failures).append(" ".join(text.split()))
    return "; ".join(steps or run_failures) or None


class Watcher:
    """The runs created since `since` (the daemon's start) and the ticks of the code location's sensors."""

    def __init__(self, instance: dg.DagsterInstance, sensors: list[str], since: float):
        self.instance, self.sensors, self.since = instance, list(sensors), since
        self.reported: set[str] = set()
        self.failed_sensors: set[str] = set()
        self.inherited: list[str] = []

    # ---- records -------------------------------------------------------------------------------
    def run_records(self) -> list:
        created_after = datetime.fromtimestamp(self.since, UTC)
        records = list(self.instance.get_run_records(filters=dg.RunsFilter(created_after=created_after)))
        if self.inherited:
            records += self.instance.get_run_records(filters=dg.RunsFilter(run_ids=self.inherited))
        return records

    def inherit_runs_in_flight(self) -> list[dg.DagsterRun]:
        """Runs an earlier process left queued or in progress, watched from now on like this session's own."""
        older = [r for r in self.instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)) if r.run_id not in self.inherited]
        self.inherited += [r.run_id for r in older]
        return older

    def in_flight(self) -> list[dg.DagsterRun]:
        return [r.dagster_run for r in self.run_records() if not r.dagster_run.is_finished]

    def _sensor_states(self) -> dict:
        """The instance's record of each of our sensors (the daemon writes it on the sensor's first tick)."""
        states = {}
        for state in self.instance.all_instigator_state():
            if state.instigator_name not in self.sensors:
                continue
            if state.origin.repository_origin.code_location_origin.location_name == LOCATION_NAME:
                states[state.instigator_name] = state
        return states

    def _latest_ticks(self) -> dict[str, InstigatorTick | None]:
        """sensor -> its latest tick (None: not ticked yet); sensors stopped in the UI are left out."""
        ticks = {}
        states = self._sensor_states()
        for name in self.sensors:
            state = states.get(name)
            if state is not None and state.status.value == "STOPPED":
                continue
            found = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1) if state is not None else []
            ticks[name] = found[0] if found else None
        return ticks

    # ---- what to print -------------------------------------------------------------------------
    def newly_finished(self) -> list[FinishedRun]:
        """Runs that ended since the last call, oldest end first."""
        done = []
        for record in self.run_records():
            run = record.dagster_run
            if not run.is_finished or run.run_id in self.reported:
                continue
            self.reported.add(run.run_id)
            seconds = record.end_time - record.start_time if record.start_time and record.end_time else None
            error = run_error(self.instance, run.run_id) if run.status == dg.DagsterRunStatus.FAILURE else None
            done.append(FinishedRun(run.run_id, run_name(run), run.status.value, seconds, run.tags.get("dagster/partition"), error))
        return sorted(done, key=lambda f: f.seconds or 0)

    def newly_failed_sensors(self) -> list[FinishedRun]:
        """Sensors whose evaluation failed since the daemon started (each once): a source that cannot be read."""
        failed = []
        for name, tick in self._latest_ticks().items():
            if tick is None or name in self.failed_sensors or tick.timestamp < self.since or tick.status.value != "FAILURE":
                continue
            self.failed_sensors.add(name)
            error = tick.error
            while error is not None and error.cause is not None:  # the sensor's own exception, not Dagster's wrapper
                error = error.cause
            message = " ".join((error.message if error else "evaluation failed").split())
            failed.append(FinishedRun("", name, "SENSOR", None, None, message))
        return failed

    # ---- when to stop --------------------------------------------------------------------------
    def settled(self) -> bool:
        """Nothing queued or in progress, and every sensor (automation and catch-up included) has
        finished a tick that started after the last run ended.

        The ticks are read before the runs: a tick finished by then has created its runs already,
        so a run it requested is seen queued, never missed.
        """
        ticks = self._latest_ticks()
        records = self.run_records()
        if any(not r.dagster_run.is_finished for r in records):
            return False
        last_end = max([self.since, *(r.end_time for r in records if r.end_time)])
        return all(tick is not None and tick.timestamp >= last_end and tick.status.value != "STARTED" for tick in ticks.values())

    def ticked_at_all(self) -> bool:
        """Whether any of our sensors has ticked since the daemon started (its code location loaded)."""
        return any(t is not None and t.timestamp >= self.since for t in self._latest_ticks().values())

    # ---- stopping ------------------------------------------------------------------------------
    def cancel_in_flight(self, timeout: float = 30.0) -> list[str]:
        """Cancel every run of this session not finished yet, as the UI's Terminate does: queued runs at
        once, launched ones by asking their worker to stop (they end CANCELED). Waits up to `timeout`."""
        asked: set[str] = set()
        deadline = time.monotonic() + timeout
        while True:
            open_runs = self.in_flight()
            if not open_runs or time.monotonic() > deadline:
                break
            for run in open_runs:
                if run.status == dg.DagsterRunStatus.NOT_STARTED:
                    # Created by a sensor and not submitted yet: no worker will ever end it, so it is
                    # canceled as the coordinator cancels a queued run (a submit that follows skips it).
                    self.instance.report_run_canceling(run, message="Canceling run before it was queued.")
                    self.instance.report_run_canceled(run)
                    asked.add(run.run_id)
                    continue
                if run.run_id in asked and run.status == dg.DagsterRunStatus.CANCELING and self._worker_gone(run):
                    # Asked while its worker was still starting (the interrupt ended it before Dagster
                    # could record anything): nobody else will mark it, so it is marked here, not
                    # after the timeout.
                    self.instance.report_run_canceled(run, message="its run worker ended on the termination request")
                    continue
                # A run the coordinator launched just after it was asked (as queued) is asked again.
                if run.run_id not in asked or run.status == dg.DagsterRunStatus.QUEUED:
                    try:
                        self.instance.run_coordinator.cancel_run(run.run_id)
                    except Exception:  # its worker is already gone: marked below, once the daemon is stopped
                        pass
                    asked.add(run.run_id)
            time.sleep(0.5)
        return sorted(asked)

    def _worker_gone(self, run: dg.DagsterRun) -> bool:
        """Whether the run launcher knows the run's worker process has ended (False when it cannot tell)."""
        from dagster._core.launcher import WorkerStatus

        launcher = self.instance.run_launcher
        if not launcher.supports_check_run_worker_health:
            return False
        try:
            return launcher.check_run_worker_health(run).status == WorkerStatus.FAILED
        except Exception:  # a launcher that cannot check this run: wait for the timeout
            return False

    def mark_left_canceled(self, why: str) -> list[str]:
        """Runs still not finished once every process is stopped: their worker is gone, so record them CANCELED."""
        left = self.in_flight()
        for run in left:
            self.instance.report_run_canceled(run, message=why)
        return [r.run_id for r in left]
