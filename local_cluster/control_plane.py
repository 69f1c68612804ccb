"""A Kubernetes control plane with simulated GPU nodes on 127.0.0.1, and the S3-compatible store beside it.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok are the real binaries built by
``python -m toolchain.build``; moto's server stands in for S3. Every process is started by :class:`Cluster`,
dies with it (PR_SET_PDEATHSIG) and is stopped by it; nothing here opens a socket outside loopback, and the
whole cluster runs in a network namespace of its own (see ``local_cluster.__main__``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from local_cluster import nodes, pods
from local_cluster.pki import ClusterPki, create_pki

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".toolchain" / "bin"
SHARE = ROOT / ".toolchain" / "share"
APISERVER_PORT = 6443
ETCD_PORT = 2379
S3_PORT = 9000
KUBE_PROXY_HEALTHZ_PORT = 10256
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
# The cluster's own servers as pods reach them (pods have network namespaces of their own, so not at 127.0.0.1):
# the API server behind the kubernetes Service, S3 and DNS.
HOST_ADDRESS = "192.0.2.1"
INSTANCE_METADATA = "169.254.169.254"  # every node's metadata service: the node role's credentials, as on EC2
NAMESPACE_ADDRESSES = (f"{HOST_ADDRESS}/32", f"{INSTANCE_METADATA}/32")  # local to the cluster's namespace
CONTROL_PLANE = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kwok",
    "coredns",
    "kubectl",
)
IMAGES = ROOT / ".toolchain" / "images"
# EKS's default class, which claims without a class get; local_cluster.provisioner serves its driver's claims.
DEFAULT_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "gp2", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "ebs.csi.aws.com",
    "parameters": {"type": "gp2"},
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
}  # what the pod runner runs for the images it knows
# HAMi schedules GPU pods with its own scheduler name; the simulated cluster runs the real kube-scheduler under
# that name too. HAMi's extender (GPU-memory bin-packing) is not simulated: its resources are ignored by the fit.
HAMI_SCHEDULER = "hami-scheduler"
HAMI_EXTENDER_RESOURCES = ("nvidia.com/gpumem", "nvidia.com/gpumem-percentage", "nvidia.com/gpucores")


class ClusterError(RuntimeError):
    """The simulated cluster cannot start; the message names what to run or what failed."""


def missing_tools() -> list[str]:
    return [tool for tool in CONTROL_PLANE if not (BIN / tool).is_file()]


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed harness takes its servers with it


@dataclass
class Cluster:
    """One simulated cluster in ``directory`` (PKI, etcd data, logs, kubeconfig)."""

    directory: Path
    stack_config: dict[str, Any]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST_ADDRESS}:{S3_PORT}"

    # ---------------------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> None:
        missing = missing_tools()
        if missing:
            raise ClusterError(f"the simulated cluster needs {', '.join(missing)} in {BIN}: run `make toolchain`")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        pki = create_pki(self.directory / "pki")
        self._write_kubeconfigs(pki)
        deadline = time.monotonic() + timeout_s
        self._spawn("etcd", self._etcd_args())
        self._wait_http("etcd", f"http://127.0.0.1:{ETCD_PORT}/health", deadline)
        self._spawn("kube-apiserver", self._apiserver_args(pki))
        self._wait_http("kube-apiserver", f"https://127.0.0.1:{APISERVER_PORT}/readyz", deadline, pki)
        self._spawn("kube-controller-manager", self._controller_manager_args(pki))
        self._spawn("kube-scheduler", self._scheduler_args())
        self._spawn("kwok", self._kwok_args())
        self._spawn("coredns", self._coredns_args())
        self._spawn("pod-runner", self._pod_runner_args(), cwd=ROOT)
        provisioner = [sys.executable, "-m", "local_cluster.provisioner", f"--kubeconfig={self.kubeconfig}"]
        self._spawn("provisioner", [*provisioner, f"--dir={self.directory / 'volumes'}"], cwd=ROOT)
        self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", HOST_ADDRESS, "-p", str(S3_PORT)])
        self._wait_http("s3", f"{self.s3_endpoint}/moto-api/", deadline)
        # Pods that name no credentials (no keys, no IRSA) read S3 as the node's role, through the metadata service.
        self._spawn("instance-metadata", [sys.executable, "-m", "moto.server", "-H", INSTANCE_METADATA, "-p", "80"])
        self._create_nodes(pki, deadline)
        self.kubectl("create", "-f", "-", input=json.dumps(DEFAULT_STORAGE_CLASS))
        self._create_bucket()
        self._spawn("kube-proxy", self._kube_proxy_args())  # after the nodes: it waits for its own to exist
        self._wait_http("kube-proxy", f"http://127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}/healthz", deadline)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    # ---------------------------------------------------------------------------------------------------------
    def _spawn(self, name: str, args: Sequence[str], cwd: Path | None = None) -> None:
        log = (self.directory / "logs" / f"{name}.log").open("ab")
        binary = args[0] if "/" in args[0] else str(BIN / args[0])
        self.processes[name] = subprocess.Popen(
            [binary, *args[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd or self.directory,
            preexec_fn=_die_with_parent,
        )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.directory / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise ClusterError(
                    f"{name} exited with {process.returncode}; last lines of its log:\n  " + "\n  ".join(tail)
                )

    def _wait_http(self, name: str, url: str, deadline: float, pki: ClusterPki | None = None) -> None:
        context = None
        if pki is not None:
            context = ssl.create_default_context(cafile=str(pki.ca.cert))
            context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} did not become ready at {url}; see {self.directory / 'logs'}")
            time.sleep(0.5)

    def _write_kubeconfigs(self, pki: ClusterPki) -> None:
        for name, pair in (
            ("kubeconfig", pki.admin),
            ("controller-manager.kubeconfig", pki.controller_manager),
            ("scheduler.kubeconfig", pki.scheduler),
            ("kube-proxy.kubeconfig", pki.kube_proxy),
            ("kwok.kubeconfig", pki.kwok),
        ):
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "local",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": f"https://127.0.0.1:{APISERVER_PORT}",
                            "certificate-authority": str(pki.ca.cert),
                        },
                    }
                ],
                "users": [
                    {"name": "local", "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)}}
                ],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local"}}],
            }
            (self.directory / name).write_text(yaml.safe_dump(config))

    def _etcd_args(self) -> list[str]:
        url = f"http://127.0.0.1:{ETCD_PORT}"
        return [
            "etcd",
            "--data-dir",
            str(self.directory / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "default=http://127.0.0.1:2380",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ]

    def _apiserver_args(self, pki: ClusterPki) -> list[str]:
        return [
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
            "--bind-address=0.0.0.0",  # every address of the cluster's own network namespace: 127.0.0.1, HOST_ADDRESS
            f"--advertise-address={HOST_ADDRESS}",  # the kubernetes Service's endpoint, what pods reach
            f"--secure-port={APISERVER_PORT}",
            f"--cert-dir={self.directory / 'pki'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_public}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--enable-aggregator-routing=true",
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_args(self, pki: ClusterPki) -> list[str]:
        return [
            "kube-controller-manager",
            f"--kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--secure-port=10257",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={self.directory / 'pki' / 'cluster-ca.key'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--concurrent-gc-syncs=5",
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "leaderElection": {"leaderElect": False},
            "clientConnection": {"kubeconfig": str(self.directory / "scheduler.kubeconfig")},
            "profiles": [
                {"schedulerName": "default-scheduler"},
                {
                    "schedulerName": HAMI_SCHEDULER,
                    "pluginConfig": [
                        {
                            "name": "NodeResourcesFit",
                            "args": {"ignoredResources": list(HAMI_EXTENDER_RESOURCES)},
                        }
                    ],
                },
            ],
        }
        path = self.directory / "scheduler.yaml"
        path.write_text(yaml.safe_dump(config))
        return ["kube-scheduler", f"--config={path}", "--bind-address=127.0.0.1", "--secure-port=10259", "--v=1"]

    def _kube_proxy_args(self) -> list[str]:
        """One kube-proxy for the whole namespace, as on the first system node: the runner's pods share it."""
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.directory / "kube-proxy.kubeconfig")},
            "mode": "nftables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": nodes.plan_for_stack(self.stack_config).system_nodes[0],
            "bindAddress": HOST_ADDRESS,
            "healthzBindAddress": f"127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}",
            "metricsBindAddress": "127.0.0.1:10249",
            "conntrack": {"maxPerCore": 0},  # leave the host's conntrack table size alone
        }
        path = self.directory / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return ["kube-proxy", f"--config={path}", "--v=1"]

    def _kwok_stages(self) -> list[Path]:
        """kwok's stages, its pod stages leaving the pod runner's pods alone."""
        shipped = sorted((SHARE / "kwok-stages").glob("*.yaml"))
        if not shipped:
            raise ClusterError(f"kwok's stage files are missing in {SHARE / 'kwok-stages'}: run `make toolchain`")
        (self.directory / "kwok-stages").mkdir(exist_ok=True)
        stages = []
        for path in shipped:
            stage = yaml.safe_load(path.read_text())
            if stage["spec"]["resourceRef"]["kind"] == "Pod":
                stage = pods.kwok_stage(stage)
            stages.append(self.directory / "kwok-stages" / path.name)
            stages[-1].write_text(yaml.safe_dump(stage))
        return stages

    def _kwok_args(self) -> list[str]:
        stages = self._kwok_stages()
        return [
            "kwok",
            f"--kubeconfig={self.directory / 'kwok.kubeconfig'}",
            f"--manage-nodes-with-annotation-selector={'='.join(nodes.KWOK_ANNOTATION)}",
            # kwok's pods get addresses nothing listens on; the pod runner's pods get the other half of the range.
            f"--cidr={pods.KWOK_POD_CIDR}",
            "--node-ip=192.0.2.10",
            "--node-lease-duration-seconds=40",
            "-v=WARN",
            *(f"--config={s}" for s in stages),
        ]

    def _pod_runner_args(self) -> list[str]:
        runner = [sys.executable, "-m", "local_cluster.pod_runner"]
        places = [f"--kubeconfig={self.kubeconfig}", f"--dir={self.directory / 'pods'}", f"--images={IMAGES}"]
        return [*runner, *places, f"--dns={HOST_ADDRESS}"]

    def _coredns_args(self) -> list[str]:
        """The cluster's DNS: CoreDNS's kubernetes plugin answers Service and pod names under cluster.local;
        nothing else resolves (nothing outside the namespace can be reached anyway)."""
        corefile = self.directory / "Corefile"
        corefile.write_text(
            f".:53 {{\n  bind {HOST_ADDRESS}\n  errors\n"
            f"  kubernetes cluster.local in-addr.arpa ip6.arpa {{\n    kubeconfig {self.kubeconfig}\n"
            "    pods insecure\n    fallthrough in-addr.arpa ip6.arpa\n  }\n}\n"
        )
        return ["coredns", f"-conf={corefile}"]

    def _create_nodes(self, pki: ClusterPki, deadline: float) -> None:
        plan = nodes.plan_for_stack(self.stack_config)
        for manifest in nodes.manifests(plan):
            self.kubectl("create", "-f", "-", input=json.dumps(manifest))
        wanted = len(plan.gpu_nodes) + len(plan.system_nodes)
        while True:
            self._check_alive()
            listed = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
            ready = sum(
                1
                for n in listed
                for c in n.get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True"
            )
            if ready == wanted:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"kwok made {ready} of {wanted} nodes Ready; see {self.directory / 'logs'}")
            time.sleep(0.5)

    def _create_bucket(self) -> None:
        import boto3

        uri = (self.stack_config.get("modelRepository") or {}).get("uri") or "s3://models/triton"
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        client = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            text=True,
            capture_output=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


@contextlib.contextmanager
def running(directory: Path, stack_config: dict[str, Any]) -> Iterator[Cluster]:
    """A started cluster that is always stopped, whatever happens inside the block."""
    cluster = Cluster(directory, stack_config)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)


def stop_namespace(grace_s: float = 10.0, pod_dirs: Path | None = None) -> list[int]:
    """Stop every other process in this network namespace: whatever a command started, however it detached; and
    every process left in a pod's network namespace (each recorded as ``<pod_dirs>/*/sandbox.netns``).

    Only meaningful inside the namespace the harness created, where every process is one of ours.
    """
    spared = {os.getpid(), os.getppid()}
    namespaces = {os.readlink("/proc/self/ns/net")}
    namespaces.update(path.read_text() for path in (pod_dirs.glob("*/sandbox.netns") if pod_dirs else ()))

    def members() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in spared:
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "net") in namespaces:
                        pids.append(int(entry.name))
        return pids

    found = members()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while members() and time.monotonic() < deadline:
            time.sleep(0.2)
    return found
