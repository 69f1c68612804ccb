"""Start the simulated cluster, run something against it, stop it.

    python -m local_cluster shell [--stack local]        # make cluster: a shell inside the cluster's network
                                                         # namespace; `exit` stops every process it started
    python -m local_cluster run [--stack local] -- CMD   # run CMD against a fresh cluster, then stop it

The harness re-executes itself under ``unshare --net`` first, so the control plane, moto's S3 server, the
Pulumi CLI and its providers all live in a network namespace that has nothing but loopback: no packet can leave.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from local_cluster.control_plane import NAMESPACE_ADDRESSES, ROOT, SERVICE_CIDR, ClusterError, running, stop_namespace
from local_cluster.env import command_environment, prepare_pulumi

CLUSTER_DIR = ROOT / ".cache" / "local-cluster"
PROJECT_NAMESPACE = "inference-platform:"


def stack_config(stack: str) -> dict[str, Any]:
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise ClusterError(f"no stack file {path.name}")
    raw = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return {k.removeprefix(PROJECT_NAMESPACE): v for k, v in raw.items() if k.startswith(PROJECT_NAMESPACE)}


def _claim(directory: Path) -> None:
    """One cluster per checkout: refuse to start over a live one, clear a stale one."""
    pid_file = directory / "harness.pid"
    if pid_file.is_file():
        pid = int(pid_file.read_text() or 0)
        if pid and Path(f"/proc/{pid}").exists():
            raise ClusterError(
                f"a simulated cluster is already running here (pid {pid}); exit its shell or `kill {pid}` first"
            )
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))


def _inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in NAMESPACE_ADDRESSES:
        subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
    # ClusterIPs are routed, not local: only kube-proxy's DNAT to a ready pod makes one answer.
    subprocess.run(["ip", "route", "add", SERVICE_CIDR, "dev", "lo"], check=True)
    # Pods are namespaces of their own behind veth pairs (local_cluster.sandbox): this one routes between them.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    os.environ["LOCAL_CLUSTER_NETNS"] = "1"
    _claim(CLUSTER_DIR)
    try:
        return _serve(args)
    finally:
        # The command's own children (Pulumi's plugins detach into groups of their own), and anything left in a pod.
        stop_namespace(pod_dirs=CLUSTER_DIR / "pods")


def _serve(args: argparse.Namespace) -> int:
    with running(CLUSTER_DIR, stack_config(args.stack)) as cluster:
        env = command_environment(cluster)
        prepare_pulumi(env, args.stack)
        print(
            f"local cluster: {len(cluster.kubectl('get', 'nodes', '-o', 'name').split())} nodes ready, "
            f"kubeconfig {cluster.kubeconfig}, S3 {cluster.s3_endpoint}, stack {args.stack}",
            flush=True,
        )
        if args.command == "shell":
            print(
                "  inside the cluster's network namespace: `pulumi up`, `kubectl get pods -A`; `exit` stops it",
                flush=True,
            )
            return subprocess.call([os.environ.get("SHELL", "/bin/bash")], env=env, cwd=ROOT)
        return subprocess.call(args.argv, env=env, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("shell", "run"))
    parser.add_argument("--stack", default="local")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.argv = command
    if args.command == "run" and not args.argv:
        parser.error("run needs a command after --")
    try:
        if args.inside:
            return _inside(args)
        if shutil.which("unshare") is None:
            raise ClusterError("`unshare` (util-linux) is needed to give the cluster its own network namespace")
        inner = [
            "unshare",
            "--net",
            "--kill-child",
            sys.executable,
            "-m",
            "local_cluster",
            args.command,
            "--stack",
            args.stack,
            "--inside",
            "--",
            *args.argv,
        ]
        return subprocess.call(inner)
    except ClusterError as exc:
        print(f"local cluster: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
