"""Starting and stopping the server processes the local loop starts, whatever stops the runner."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import IO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP all stop the runner the way Ctrl-C does, once: the first raises
    KeyboardInterrupt, later ones are ignored so that the shutdown of the servers is never cut short. A
    supervisor (`timeout 40 make serve`) signals make's whole process group, and make passes the signal on, so
    the runner gets it twice; the second used to abort the cleanup and leave Triton running, parent 1."""

    def first(signum: int, _frame: FrameType | None) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for stop in STOP_SIGNALS:
        signal.signal(stop, first)


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGTERM the child when the runner dies, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def start_server(command: list[str], log: IO[bytes], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server in its own session (so a terminal's Ctrl-C reaches only the runner, which stops it in order)
    that dies with the runner."""
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=die_with_parent()
    )


def stop_process_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM and wait; SIGKILL the whole process group (servers and their children) if it hangs."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
