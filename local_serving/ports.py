"""Loopback port checks: fail early with one clear message instead of a server's half-started error."""

from __future__ import annotations

import socket

from local_serving.errors import PortInUseError

LOOPBACK = "127.0.0.1"


def ensure_free(port: int, role: str, flag: str) -> None:
    """Raise PortInUseError when ``port`` on 127.0.0.1 cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
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
