"""Dagster's own daemon on the project's instance, started headless for `pos-lakehouse run`, with a
code server of its own.

The daemon reads the code location from a gRPC code server this module starts (`dagster api grpc`,
the same module under the same location name as `dg dev` loads), so the runs it launches carry the
same origin as those of `dg dev`: they show on their job's page and in the timeline, and re-execute
from the UI. A daemon given the module itself would start that server and replace it every minute,
loading every definition again while the runs work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from pos_lakehouse.runner.processes import ProcessGroup
from pos_lakehouse.settings import checkout_root

MODULE = "pos_lakehouse.definitions"
# What `dg dev` names the project's code location (the project's name in pyproject.toml); runs
# are listed on a job's page by this name, so `run` and an installed `dev` use it too.
LOCATION_NAME = "pos_lakehouse"
# `run` caps every sensor's interval at this, so it sees everything settled seconds after the last
# run, not after the catch-up sensor's 5 minutes. The daemon's sensor loop comes round every 5 s and
# a sensor is due once its interval has passed since its last tick *started* (a little after the
# loop's start): an interval of 5 s is missed by that margin and ticks every other loop (10 s),
# anything shorter ticks on every loop.
RUN_SENSOR_INTERVAL_SECONDS = 1


def working_directory() -> str | None:
    """As `dg dev`: the checkout's `src/` is the code location's working directory (none for a wheel)."""
    checkout = checkout_root()
    return str(checkout / "src") if checkout is not None else None


def write_workspace(folder: Path, socket: Path | None = None) -> Path:
    """A workspace file loading the package's code location under the name `dg dev` gives it: from
    the code server on `socket`, or (none given) from a code server the reader starts itself."""
    if socket is not None:
        source = {"grpc_server": {"socket": str(socket), "location_name": LOCATION_NAME}}
    else:
        entry: dict[str, str] = {"module_name": MODULE, "location_name": LOCATION_NAME}
        if (directory := working_directory()) is not None:
            entry["working_directory"] = directory
        source = {"python_module": entry}
    path = folder / "workspace.yaml"
    path.write_text(yaml.safe_dump({"load_from": [source]}))
    return path


def code_server_command(socket: Path) -> list[str]:
    """`dagster api grpc` serving the package's code location on `socket` (a load error is served, not fatal,
    as the daemon's own code server does)."""
    command = [*_executable("dagster"), "api", "grpc", "--module-name", MODULE, "--location-name", LOCATION_NAME]
    if (directory := working_directory()) is not None:
        command += ["--working-directory", directory]
    return [*command, "--socket", str(socket), "--lazy-load-user-code", "--log-level", "warning"]


def _executable(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", "dagster._daemon" if name == "dagster-daemon" else "dagster"]


@contextlib.contextmanager
def running_daemon(log: Path, env: Mapping[str, str]) -> Iterator[ProcessGroup]:
    """`dagster-daemon run` on the instance in `$DAGSTER_HOME` and its code server, their output (and
    the run workers') appended to `log`; both stopped with everything they started when the block ends."""
    with tempfile.TemporaryDirectory(prefix="pos_lakehouse_workspace_") as folder:
        socket = Path(folder) / "code.sock"
        workspace = write_workspace(Path(folder), socket)
        environment = {**os.environ, **env}
        server = ProcessGroup(code_server_command(socket), env=environment, log=log)
        try:
            # Started at once: it imports Dagster while the code server loads the definitions.
            daemon_args = ["run", "-w", str(workspace), "--log-level", "warning"]
            command = [sys.executable, "-m", "pos_lakehouse.runner.daemon_when_served", str(socket), "--", *daemon_args]
            daemon = ProcessGroup(command, env=environment, log=log)
            try:
                yield daemon
            finally:
                daemon.stop()
        finally:
            server.stop()
