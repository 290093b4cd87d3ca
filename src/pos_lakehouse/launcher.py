"""The run launcher of a one-machine deployment: each run in its own `dagster api execute_run` process,
told whose run it is so it loads only what that run needs.

Dagster's default launcher asks the code server to start the run in a spawned child, which
reloads the whole code location (every retailer's components) before running one retailer's
delivery. This launcher starts the same worker Dagster's Docker and Kubernetes launchers start
(`dagster api execute_run`, from the run's own code origin) as a local process, with
`POS_LAKEHOUSE_RUN_RETAILER` naming the retailer of a retailer's run (its `retailer` tag, see
`sensors.targets`): `definitions.defs()` then builds that retailer's component, the resources and
the gold layer only (see `definitions.retailer_definitions`). A run of the serving views alone (the
automation's run after every gold change) is told so by `POS_LAKEHOUSE_RUN_SERVING` and builds the
views and the resources only (`definitions.serving_definitions`). Other runs load everything.

Run monitoring works as with the default launcher: the worker's pid is kept on the run
(`pos_lakehouse/worker`), its health is whether that process still lives, and termination is
the interrupt the code server would send (the worker marks the run Canceled).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from pos_lakehouse.sensors.targets import retailer_of

RUN_RETAILER_ENV = "POS_LAKEHOUSE_RUN_RETAILER"
RUN_SERVING_ENV = "POS_LAKEHOUSE_RUN_SERVING"
WORKER_TAG = "pos_lakehouse/worker"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid from the worker), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def serving_only(run: dg.DagsterRun) -> bool:
    """Whether the run selects serving assets only (the serving views)."""
    keys = run.asset_selection
    return bool(keys) and all(k.path[0] == "serving" for k in keys or ())


def worker_env(run: dg.DagsterRun) -> dict[str, str]:
    """The launcher's environment for the run's worker, saying which part of the code location it builds."""
    env = {k: v for k, v in os.environ.items() if k not in (RUN_RETAILER_ENV, RUN_SERVING_ENV)}
    retailer = retailer_of(run)
    if retailer:
        env[RUN_RETAILER_ENV] = retailer
    elif serving_only(run):
        env[RUN_SERVING_ENV] = "1"
    return env


class JobProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a local `dagster api execute_run` process that loads only its job's definitions."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._workers: dict[str, subprocess.Popen] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict) -> JobProcessRunLauncher:
        return cls(inst_data=inst_data)

    def _reap(self) -> None:
        # Finished workers are waited for, so none lingers as a zombie in the daemon.
        for run_id, proc in list(self._workers.items()):
            if proc.poll() is not None:
                del self._workers[run_id]

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            raise dg.DagsterInvariantViolationError(f"run {run.run_id} has no code origin: it cannot be launched in a process")
        self._reap()
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()).get_command_args()
        # The code location's own interpreter (`-m dagster`), not whichever `dagster` is first on PATH.
        command = [origin.executable_path or sys.executable, "-m", "dagster", *args[-3:]]
        env = worker_env(run)
        # In the daemon's process group: whoever stops the daemon (`pos-lakehouse run`/`dev` on
        # Ctrl-C or SIGTERM) stops its runs with it, and they end Canceled.
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        self._workers[run.run_id] = proc
        identity = f"{socket.gethostname()}:{proc.pid}:{_process_start(proc.pid) or '?'}"
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: identity})
        self._instance.report_engine_event(
            f"Launched run worker process (pid {proc.pid}) loading "
            + (
                f"only retailer {env[RUN_RETAILER_ENV]}'s definitions."
                if RUN_RETAILER_ENV in env
                else "only the serving views' definitions."
                if RUN_SERVING_ENV in env
                else "the whole code location."
            ),
            run,
            cls=self.__class__,
        )

    def _worker(self, run: dg.DagsterRun) -> tuple[int, str] | None:
        identity = run.tags.get(WORKER_TAG)
        if not identity:
            return None
        host, pid, started = identity.rsplit(":", 2)
        if host != socket.gethostname():
            return None
        return int(pid), started

    def _alive(self, run: dg.DagsterRun) -> bool | None:
        proc = self._workers.get(run.run_id)
        if proc is not None:
            return proc.poll() is None
        worker = self._worker(run)
        if worker is None:
            return None
        pid, started = worker
        now = _process_start(pid)
        return now is not None and (started == "?" or now == started)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        self._reap()
        alive = self._alive(run)
        if alive is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no worker process recorded on this machine")
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, "the run worker process is gone (killed or crashed)")

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        worker = self._worker(run)
        if worker is None or not self._alive(run):
            return False
        # The interrupt the code server sends its run child on cancel: the worker stops its step
        # and marks the run Canceled.
        try:
            os.kill(worker[0], signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def dispose(self) -> None:
        self._reap()
