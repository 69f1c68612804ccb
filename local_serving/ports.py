"""Loopback port checks: fail early with one clear message instead of a server's half-started error."""

from __future__ import annotations

import socket

from local_serving.errors import PortInUseError

LOOPBACK = "127.0.0.1"


def ensure_free(port: int, role: str, flag: str) -> None:
    """Raise PortInUseError when something listens on ``port`` on 127.0.0.1.

    SO_REUSEADDR as the servers themselves bind: connections left in TIME_WAIT by a server that just stopped do
    not hold the port for them, so they must not count here either (a live listener still refuses the bind).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as error:
            raise PortInUseError(
                f"port {port} on {LOOPBACK} ({role}) is already in use ({error.strerror}); "
                f"stop what holds it or choose another with {flag}"
            ) from error


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (for tests and --ports auto)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])
