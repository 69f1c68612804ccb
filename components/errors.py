"""The program's own errors: one base, so the language host and tests can tell a stack that cannot be declared as
configured from a bug. Each component names its error after what it checks."""

from __future__ import annotations

import pulumi


class PlatformError(pulumi.RunError):
    """The stack cannot be declared as configured; the message says what to change.

    A ``pulumi.RunError``: the Python language host prints its message alone and fails the run, wherever it is
    raised (the program's body or an ``apply``); any other exception is a bug and keeps its traceback.
    """
