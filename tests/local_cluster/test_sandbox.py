"""A pod's network namespace (local_cluster/sandbox.py), for real, inside a network namespace of the test's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.paths import ROOT

# Two pods listen on the same port, each at its own address; the cluster's side reaches both, and a pod reaches
# an address of the cluster's own namespace (where S3 and the API server are); a tmpfs volume is shared by what
# runs in the pod and invisible outside it. Stopping a pod removes its link.
SCRIPT = textwrap.dedent(
    """
    import subprocess, sys, time, urllib.request
    from pathlib import Path
    from local_cluster.sandbox import PodSandbox

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    log = Path(sys.argv[1])
    pods = [PodSandbox(f"10.244.128.{i}", i, log).start() for i in (1, 2)]
    servers = [
        subprocess.Popen(["nsenter", f"--net={pod.netns}", sys.executable, "-m", "http.server", "8000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pod in pods
    ]
    host = subprocess.Popen([sys.executable, "-m", "http.server", "9000", "--bind", "192.0.2.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers(url, netns=None):
        enter = ["nsenter", f"--net={netns}"] if netns else []
        code = "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)"
        for _ in range(50):
            if subprocess.run([*enter, sys.executable, "-c", code, url], capture_output=True).returncode == 0:
                return True
            time.sleep(0.1)
        return False

    print("pod1", answers("http://10.244.128.1:8000/"))
    print("pod2", answers("http://10.244.128.2:8000/"))
    print("pod-to-host", answers("http://192.0.2.1:9000/", pods[0].netns))
    shared = log.parent / "dshm"
    shared.mkdir()
    pods[1].mount_tmpfs(shared, 2**20)
    subprocess.run([*pods[1].enter, "sh", "-c", f"echo one > {shared}/f"], check=True)
    seen = subprocess.run([*pods[1].enter, "cat", f"{shared}/f"], capture_output=True, text=True).stdout.strip()
    print("tmpfs", seen, (shared / "f").exists())
    for process in (*servers, host):
        process.kill()
    pods[0].stop()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    print("links", "vpod1" in links, "vpod2" in links)
    """
)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="network namespaces need root")
def test_pods_have_addresses_and_ports_of_their_own_and_reach_the_clusters_servers(tmp_path: Path) -> None:
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SCRIPT, str(tmp_path / "sandbox.log")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    expected = ["pod1 True", "pod2 True", "pod-to-host True", "tmpfs one False", "links False True"]
    assert result.stdout.split("\n")[:5] == expected
