"""Loopback ports for the servers tests start (PostgreSQL, Azurite, the UI, a code server)."""

from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    """A loopback port free right now (the OS picks it; bound, then released for the server to take).
    Also a port nothing listens on, for a source that must be unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False
