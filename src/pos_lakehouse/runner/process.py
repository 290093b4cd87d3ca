"""`pos-lakehouse run`: Dagster's daemon processes what is in landing, and the console shows it.

The daemon ticks the same sensors `dg dev` runs (landing and poll sensors, reference refresh,
catch-up, the serving views' automation) and launches the runs they request through the
instance's run launcher -- each delivery's run from landing through bronze and silver to the
retailer's gold partitions. This process only reads the instance's records: one line per finished
run, a live progress line, and the daemon is stopped once everything is settled.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from pos_lakehouse.ingest.reachability import settings_missing as source_missing
from pos_lakehouse.retailer import RetailerSpec
from pos_lakehouse.runner.daemon import RUN_SENSOR_INTERVAL_SECONDS, running_daemon
from pos_lakehouse.runner.processes import Interrupted
from pos_lakehouse.runner.watch import FinishedRun, Watcher, run_name

# The code location loads in the daemon's code server before any sensor ticks; when none has ticked
# after this long, the daemon's log says why (it is printed).
FIRST_TICK_TIMEOUT_SECONDS = 600


class DaemonFailed(Exception):
    """The daemon stopped or its code location never ticked: the message holds its log's last lines."""


class Progress:
    """A live line (terminals only) saying which run is working and for how long."""

    def __init__(self, console, watcher: Watcher):
        self.console, self.watcher = console, watcher
        self.done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.console.is_terminal:
            self._status = self.console.status("starting Dagster's daemon ...")
            self._status.start()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(1.0):
            try:
                records = [r for r in self.watcher.run_records() if not r.dagster_run.is_finished]
            except Exception:  # a busy SQLite file: skip this refresh
                continue
            what, since = "sensors and automation", started
            running = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.STARTED]
            if running:
                run = running[0].dagster_run
                keys = sorted(k.to_user_string() for k in (run.asset_selection or []))
                what = ", ".join(keys[:2]) + (" ..." if len(keys) > 2 else "") if keys else run.job_name
                if run.tags.get("dagster/partition"):
                    what += f" [{run.tags['dagster/partition']}]"
                if running[0].start_time:
                    since = time.monotonic() - (time.time() - running[0].start_time)
            waiting = len(records) - len(running)
            more = f", {len(running) - 1} more running" if len(running) > 1 else ""
            queued = f", {waiting} queued" if waiting else ""
            self._status.update(f"{self.done} run(s) done; running {what} ({time.monotonic() - since:.0f}s){more}{queued}")

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._status.stop()


def _print_finished(console, f: FinishedRun, width: int) -> None:
    took = f"{f.seconds:6.1f}s" if f.seconds is not None else "     - "
    mark = {"SUCCESS": "[green]ok[/]    ", "CANCELED": "[yellow]canceled[/]"}.get(f.status, "[red]FAILED[/]")
    console.print(
        f"  {mark} {took}  {f.name} [dim]{f.partition_key or ''} {f.run_id[:8]}[/]", no_wrap=True, overflow="ellipsis", width=width
    )
    if f.status not in ("SUCCESS", "CANCELED"):
        console.print(f"         [red]{' '.join((f.error or '').split())[:400]}[/]")


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _inherit(console, instance: dg.DagsterInstance, watcher: Watcher) -> None:
    """Runs an earlier process left unfinished (e.g. a `run` killed outright): the daemon's run
    monitoring decides whether their worker is gone (and run retries start them again), so they are
    waited for -- where the run launcher can tell; otherwise they are named and left to the UI."""
    older = watcher.inherit_runs_in_flight()
    if not older:
        return
    names = ", ".join(sorted({run_name(r) for r in older}))
    if instance.run_launcher.supports_check_run_worker_health:
        console.print(f"[dim]{len(older)} run(s) of an earlier process still in flight ({names}): waiting for run monitoring[/]")
        return
    watcher.inherited = [r.run_id for r in older if r.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)]
    stuck = len(older) - len(watcher.inherited)
    if stuck:
        console.print(
            f"  [yellow]note[/]: {stuck} run(s) of an earlier process look in progress ({names}); this instance's run "
            "launcher cannot tell whether their worker is alive: see them in the UI (`pos-lakehouse dev`)"
        )


def process_landing(
    console,
    log_dir: Path,
    specs: list[RetailerSpec],
    only: list[str] | None,
    sensors: Callable[[], list[str]],
    start: Callable[[], None] | None = None,
) -> tuple[int, list[FinishedRun]]:
    """Start the daemon, print each run as it finishes, stop once settled. Returns (runs, failures).

    `only` limits which retailers' news becomes runs (corporate reference data always runs);
    `sensors()` names the code location's sensors (called once the daemon is starting: the two
    loads share the machine's cores instead of queueing): everything is settled when each has ticked
    after the last run ended and nothing is queued or in progress. `start` is called once the daemon
    runs (e.g. to queue a replay run, which this session then waits for like the sensors' runs).
    """
    wanted = [s for s in specs if not only or s.name in only]
    skipped = {s.name: why for s in wanted if (why := source_missing(s))}
    chosen = [s.name for s in wanted if s.name not in skipped]
    env = {"POS_LAKEHOUSE_SENSOR_MAX_INTERVAL_SECONDS": str(RUN_SENSOR_INTERVAL_SECONDS)}
    if only or skipped:
        # Read by the sensors in the daemon's code server: other retailers' news waits for the next daemon.
        env["POS_LAKEHOUSE_ONLY_RETAILERS"] = ",".join(chosen) or ","
    log_dir.mkdir(parents=True, exist_ok=True)
    env.setdefault("POS_LAKEHOUSE_SPARK_LOG", os.environ.get("POS_LAKEHOUSE_SPARK_LOG") or str(log_dir / "spark.log"))
    log = log_dir / "runs.log"
    width = max(40, console.width - 2)
    failures: list[FinishedRun] = []
    runs = 0

    console.print(f"[bold]runs[/] (Dagster instance {os.environ['DAGSTER_HOME']}; inspect them with `pos-lakehouse dev`)")
    console.print(f"[dim]daemon, run and Spark logs: {log_dir}/[/]")
    with dg.DagsterInstance.get() as instance:
        watcher = Watcher(instance, [], since=time.time())
        progress = Progress(console, watcher)
        _inherit(console, instance, watcher)

        def report() -> None:
            nonlocal runs
            for f in watcher.newly_failed_sensors() + watcher.newly_finished():
                if f.run_id:
                    runs += 1
                    progress.done += 1
                if not f.success:
                    failures.append(f)
                _print_finished(console, f, width)

        with running_daemon(log, env) as daemon, progress:
            try:
                watcher.sensors = sensors()
                if start is not None:
                    start()
                while True:
                    try:
                        report()
                        if watcher.settled():
                            report()
                            break
                    except Interrupted:
                        raise
                    except Exception as exc:  # the instance's SQLite file busy with the daemon's writes: next time
                        if "locked" not in str(exc):
                            raise
                    if not daemon.running():
                        raise DaemonFailed(f"Dagster's daemon stopped (exit code {daemon.process.returncode}):\n{_log_tail(log)}")
                    if time.time() - watcher.since > FIRST_TICK_TIMEOUT_SECONDS and not watcher.ticked_at_all():
                        raise DaemonFailed(f"no sensor ticked in {FIRST_TICK_TIMEOUT_SECONDS}s; the daemon's log ends:\n{_log_tail(log)}")
                    time.sleep(1.0)
            except Interrupted as stop:
                # Terminate as the UI does while the code server is still up; what does not end in
                # time is stopped with the daemon's process group and recorded as canceled.
                asked = watcher.cancel_in_flight(timeout=30)
                daemon.stop()
                left = watcher.mark_left_canceled(f"pos-lakehouse run was stopped ({stop}); its processes were ended")
                stop.note = f"{len(set(asked) | set(left))} run(s) in flight canceled, Dagster's daemon and its processes stopped"
                raise
    for retailer, why in sorted(skipped.items()):
        console.print(f"  [yellow]skipped[/] {retailer}: its source is not configured here ({why})")
    return runs, failures
