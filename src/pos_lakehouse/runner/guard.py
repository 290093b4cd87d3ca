"""`python -m pos_lakehouse.runner.guard PARENT_PID -- COMMAND...`: run COMMAND for as long as the CLI lives.

The CLI starts Dagster's processes in a session of their own (so a terminal's Ctrl-C reaches only
the CLI, which stops them in order). A CLI killed outright (SIGKILL, OOM) cannot stop anything:
this guard, the session's leader, notices that its parent is gone and stops the command as the CLI
would -- SIGINT, then the whole session. SIGINT or SIGTERM to the guard is passed on as SIGINT.
Standard library only: it starts in a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

GRACE_SECONDS = 30.0


def _end_session(child: subprocess.Popen) -> None:
    """SIGINT to the command, up to GRACE_SECONDS, then SIGKILL to everyone left in the session (this guard too)."""
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(os.getpgid(0), signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent, separator, *command = argv
    if separator != "--" or not command:
        print("usage: python -m pos_lakehouse.runner.guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    child = subprocess.Popen(command)

    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # Dagster's processes shut down their children on SIGINT

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while child.poll() is None:
        if os.getppid() != int(parent):  # the CLI is gone (this process was handed to another parent)
            _end_session(child)
        time.sleep(0.5)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
