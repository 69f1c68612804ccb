"""A pod's sandbox: its network, as a CNI plugin gives it (a network namespace with the pod's IP on ``eth0``), and
a mount namespace where its Memory emptyDirs are tmpfs mounts that every container of the pod shares.

Every container of the pod joins both (``nsenter --net --mount``, then a mount namespace of its own), so they
share ``localhost``, ports and in-memory volumes as on a node, and two pods can listen on the same port. One end
of a veth pair is the pod's ``eth0`` (the pod's address, a default route through ``GATEWAY``); the other stays in
the cluster's namespace with a route to the pod's address, so the runner's probes, kube-proxy's DNAT and every
other pod reach it. The namespaces are held by a ``sleep`` process (the pause container); killing it removes
them, the pair and the tmpfs mounts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from local_serving.processes import start_server

GATEWAY = "169.254.1.1"  # every pod's next hop: the cluster's end of its veth pair (as Calico does)


def _ip(*args: str, inside: int | None = None) -> None:
    enter = ["nsenter", f"--target={inside}", "--net", "--"] if inside else []
    subprocess.run([*enter, "ip", *args], check=True, capture_output=True, text=True)


class PodSandbox:
    """The network namespace of one pod, at ``address``; ``index`` names its veth (unique among live pods)."""

    def __init__(self, address: str, index: int, log: Path) -> None:
        self.address, self.host_link, self.log = address, f"vpod{index}", log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        assert self.process is not None
        return f"/proc/{self.process.pid}/ns/net"

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a program in the pod's namespaces."""
        assert self.process is not None
        pid = self.process.pid
        return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt", "--"]

    def mount_tmpfs(self, directory: Path, size_bytes: int) -> None:
        """A Memory emptyDir: a tmpfs on ``directory``, seen by the pod's containers only."""
        assert self.process is not None
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=1777", "tmpfs", str(directory)]
        subprocess.run(["nsenter", f"--target={self.process.pid}", "--mount", "--", *mount], check=True)

    def start(self) -> PodSandbox:
        with self.log.open("ab") as log:
            pause = ["unshare", "--net", "--mount", "--propagation", "private", "--", "sleep", "infinity"]
            self.process = start_server(pause, log)
        pid = self.process.pid
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            if time.monotonic() > deadline:
                raise OSError("the pod's network namespace did not appear within 5 s")
            time.sleep(0.01)  # unshare has not yet made it
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
        _ip("addr", "add", f"{GATEWAY}/32", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("route", "add", f"{self.address}/32", "dev", self.host_link)
        _ip("link", "set", "lo", "up", inside=pid)
        _ip("addr", "add", f"{self.address}/32", "dev", "eth0", inside=pid)
        _ip("link", "set", "eth0", "up", inside=pid)
        _ip("route", "add", GATEWAY, "dev", "eth0", inside=pid)
        _ip("route", "add", "default", "via", GATEWAY, "dev", "eth0", inside=pid)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.host_link)  # gone with the namespace already, unless the kernel is slow
