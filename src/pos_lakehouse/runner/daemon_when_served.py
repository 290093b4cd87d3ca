"""`python -m pos_lakehouse.runner.daemon_when_served SOCKET -- ARGS...`: `dagster-daemon ARGS...` once the
code server on SOCKET answers.

The daemon reads its workspace (the code server's snapshot) once at start and then once a minute:
started before its code server answers, its sensors would not tick for that minute. Started only
after it answers, its own start-up (importing Dagster) would queue behind the code server's instead
of overlapping it. So this process imports the daemon's command first, waits for the code server,
and then runs Dagster's own `dagster-daemon` command in place.
"""

from __future__ import annotations

import sys
import time

WAIT_SECONDS = 600.0


def main(argv: list[str]) -> int:
    socket, separator, *args = argv
    if separator != "--" or not args:
        print("usage: python -m pos_lakehouse.runner.daemon_when_served SOCKET -- DAEMON_ARGS...", file=sys.stderr)
        return 2
    from dagster._daemon.cli import main as daemon_main
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(socket=socket)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            client.ping("")
            break
        except Exception:  # not listening yet (it listens once the code location is loaded)
            if time.monotonic() > deadline:
                print(f"the code server on {socket} did not answer within {WAIT_SECONDS:.0f}s", file=sys.stderr)
                return 1
            time.sleep(0.1)
    sys.argv = ["dagster-daemon", *args]
    daemon_main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
