"""Child process groups and stops: Dagster's processes run in a session of their own, and a signal to
the CLI stops all of them, not only the process that received it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt: not an error, a request to stop
    """SIGINT or SIGTERM reached the CLI: unwind, stopping what was started, and exit 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.note = ""  # what was stopped, for the one line the CLI prints

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` in the main thread, once.

    A second signal while the first one's clean-up runs is ignored: the clean-up has its own time
    limits and ends in SIGKILL, so a second Ctrl-C cannot leave half-stopped processes behind.
    """
    received: list[int] = []

    def handler(signum, frame):
        if received:
            return
        received.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: ask the kernel whether the group has anyone left
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command's closing parenthesis: state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class ProcessGroup:
    """One child command (and everything it starts) in a new session, stopped as a whole.

    The child leads its own process group, so a terminal's Ctrl-C reaches only the CLI, which stops
    the group in order: first the command by SIGINT (Dagster's processes shut their children down on
    it), then whatever is left of the group by SIGTERM, then SIGKILL. The group's leader is a guard
    (`runner/guard.py`) that does the same by itself if the CLI is killed outright.
    """

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path | None = None, cwd: Path | None = None):
        self.command = list(command)
        # The group's leader is a guard that stops the command if this process dies without doing so.
        guarded = [sys.executable, "-m", "pos_lakehouse.runner.guard", str(os.getpid()), "--", *self.command]
        out = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed in stop()
        self._out = out
        self.process = subprocess.Popen(
            guarded,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        self.pgid = self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def alive_members(self) -> bool:
        """Whether any process of the group is left (the leader may be gone and its children not)."""
        return bool(group_members(self.pgid))

    def signal_leader(self, signum: int = signal.SIGINT) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def stop(self, grace: float = 30.0) -> int | None:
        """Stop the group: SIGINT to the leader, up to `grace` seconds, then SIGTERM and SIGKILL to the group."""
        self.signal_leader(signal.SIGINT)
        deadline = time.monotonic() + grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Children the leader did not take down (a run worker, a Spark server) go with the group.
        for signum, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not self.alive_members():
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signum)
            end = time.monotonic() + wait
            while self.alive_members() and time.monotonic() < end:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.1)
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.process.returncode
