"""Ctrl-C and SIGTERM stop everything the CLI started: `run` cancels the run in flight (CANCELED,
not FAILURE) and exits 130; `dev` exits 143 and leaves no process and no port behind.

Both drive the real command in a subprocess (as a person at a terminal does) against a copy of the
defs folder, on their own Dagster instance and data root. Every process the
command starts inherits its DAGSTER_HOME, which no other process on the machine has: that is how
the tests find what was left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from conftest import DEFS_DIR, PROJECT_ROOT
from ports import free_port, listening

DEFS = DEFS_DIR
CLI = [sys.executable, "-m", "pos_lakehouse.cli"]

pytestmark = pytest.mark.slow


def _defs_copy(tmp_path: Path) -> Path:
    """A copy of the project's defs folder: the code location the commands load is the test's own."""
    root = tmp_path / "defs"
    shutil.copytree(DEFS, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _env(tmp_path: Path, data_root: Path, defs: Path, monkeypatch) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POS_LAKEHOUSE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), POS_LAKEHOUSE_DATA=str(data_root), POS_LAKEHOUSE_DEFS_DIR=str(defs))
    # The instance's SQLite files are created (and migrated) here, before the command and this test
    # both open them: two processes creating a fresh instance at once can race on its schema.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get():
        pass
    return env


def _left_behind(home: str) -> list[str]:
    """Command lines of live processes started with this DAGSTER_HOME (the CLI's children and theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and f"DAGSTER_HOME={home}".encode() in environ:
            found.append(f"{entry.name}: {command[:200]}")
    return found


def _wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended (rc {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


def _runs(home: str, **filters) -> list[dg.DagsterRun]:
    os.environ["DAGSTER_HOME"] = home
    with dg.DagsterInstance.get() as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(**filters)))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds left-over processes through /proc")
def test_sigint_to_run_cancels_the_run_in_flight_and_exits_130(data_root, tmp_path, monkeypatch):
    from pos_lakehouse.demo.generator import write_marche_fr

    write_marche_fr(
        data_root / "landing" / "marche_fr", tmp_path / "expected", days=20, start=date.today() - timedelta(days=21), n_products=40
    )
    env = _env(tmp_path, data_root, _defs_copy(tmp_path), monkeypatch)
    home = env["DAGSTER_HOME"]
    proc = subprocess.Popen(
        [*CLI, "run", "--retailer", "marche_fr"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_until(
            lambda: _runs(home, tags={"pos_lakehouse/ingest": "marche_fr"}, statuses=[dg.DagsterRunStatus.STARTED]),
            600,
            "marche_fr's delivery run started",
            proc,
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    (ingest,) = _runs(home, tags={"pos_lakehouse/ingest": "marche_fr"})
    assert ingest.status == dg.DagsterRunStatus.CANCELED, (ingest.status, err[-3000:])
    assert not _runs(home, statuses=[dg.DagsterRunStatus.FAILURE]), err[-3000:]
    assert not [r for r in _runs(home) if not r.is_finished], [(r.run_id, r.status) for r in _runs(home)]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("stopped by SIGINT:") and "canceled" in lines[-1], err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not _left_behind(home), _left_behind(home)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds left-over processes through /proc")
def test_sigterm_to_dev_stops_every_process_and_frees_the_port(data_root, tmp_path, monkeypatch):
    env = _env(tmp_path, data_root, _defs_copy(tmp_path), monkeypatch)
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "dev", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: listening(port), 600, f"the UI listened on port {port}", proc)
        assert len(_left_behind(env["DAGSTER_HOME"])) >= 3  # the wrapper, dg dev, webserver, daemon, code server ...
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert [line for line in err.splitlines() if line.strip()][-1].startswith("stopped by SIGTERM:")
    assert not _left_behind(env["DAGSTER_HOME"])
    assert not listening(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free for the next `dev`


def test_a_run_created_but_not_yet_queued_is_canceled_at_once(instance):
    """A stop right after a sensor created a run (not yet submitted to the queue): no worker will ever
    end it, so the stop marks it CANCELED itself instead of waiting for a worker until its timeout."""
    from pos_lakehouse.runner.watch import Watcher

    since = time.time() - 1
    run = instance.create_run_for_job(dg.GraphDefinition(name="nothing").to_job(), status=dg.DagsterRunStatus.NOT_STARTED)
    # Without a worker to end it, a run only asked to terminate would still be CANCELING after this.
    asked = Watcher(instance, [], since=since).cancel_in_flight(timeout=5)
    assert asked == [run.run_id]
    stored = instance.get_run_by_id(run.run_id)
    assert stored is not None and stored.status == dg.DagsterRunStatus.CANCELED
