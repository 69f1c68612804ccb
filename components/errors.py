"""The program's own errors: one base, so `__main__` and tests can tell a stack that cannot be declared as
configured from a bug. Each component names its error after what it checks."""

from __future__ import annotations


class PlatformError(Exception):
    """The stack cannot be declared as configured; the message says what to change."""
