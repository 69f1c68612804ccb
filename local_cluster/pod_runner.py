"""The kubelet of the simulated cluster's real pods: ``python -m local_cluster.pod_runner --kubeconfig FILE --dir DIR``.

For every pod bound to a node whose images it knows (``local_cluster.pods.REAL_IMAGES``) it gives the pod a
network namespace and an address of its own (``local_cluster.sandbox``), the cluster's DNS and API server as a
kubelet does, runs its init containers to completion, then starts each container as a real process
(``local_cluster.containers``), runs the pod's startup, readiness and liveness probes against the pod's address
and writes what they find to the pod's status - Ready only once the program says so. A container of an image it
does not know, beside known ones, is simulated (reported running and ready, as kwok would). A container that exits is
restarted as its restartPolicy says, with the kubelet's back-off; a deleted pod gets its preStop hook, SIGTERM,
its grace period, then SIGKILL, and is removed once its processes are gone. kwok keeps every other pod.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_cluster import containers as ctr
from local_cluster import pods
from local_cluster.kube_api import ApiError, KubeApi, poll_until_terminated
from local_cluster.pki import SERVICE_IP
from local_cluster.sandbox import PodSandbox
from local_serving.processes import start_server

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.5
VOLUME_RETRY_S = 2.0  # a pod waiting for a Secret, ConfigMap or claim looks again this often
VOLUME_REFRESH_S = 5.0  # ConfigMap and Secret volumes follow their objects this often (the kubelet: about a minute)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
NETWORK_FILES = "local-cluster-etc"  # the volume of /etc/resolv.conf and /etc/hosts (no pod volume has this name)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def probe_passes(probe: pods.Probe, address: str) -> bool:
    try:
        if probe.kind == "tcp":
            with socket.create_connection((address, probe.port), timeout=probe.timeout_s):
                return True
        url = f"{'https' if probe.https else 'http'}://{address}:{probe.port}{probe.path}"
        context = ssl._create_unverified_context() if probe.https else None  # the kubelet does not verify either
        with urllib.request.urlopen(url, timeout=probe.timeout_s, context=context) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


class Container:
    """One running (or restarting) container of a pod: its process, probes and status."""

    def __init__(self, run: PodRun, spec: dict[str, Any], init: bool = False) -> None:
        self.run, self.spec, self.init = run, spec, init
        self.program = pods.program_for(spec["image"])
        self.simulated = self.program is None
        self.status = pods.ContainerStatus(spec["name"], spec["image"])
        self.process: subprocess.Popen[bytes] | None = None
        self.startup = self._probe("startupProbe")
        self.readiness = self._probe("readinessProbe")
        self.liveness = self._probe("livenessProbe")
        self.start_at = 0.0

    def _probe(self, kind: str) -> pods.ProbeState | None:
        spec = pods.probe(self.spec.get(kind), self.spec)
        return pods.ProbeState(spec) if spec else None

    def start(self, mounts: list[ctr.Mount], env: dict[str, str]) -> None:
        if self.simulated:
            self.status.state, self.status.reason, self.status.started_at = "running", "", _now()
            self.status.started = self.status.ready = True
            return
        argv = pods.argv(self.spec, self.run.images, sys.executable, env)
        scratch = self.run.directory / "scratch" / self.spec["name"]
        scratch.mkdir(parents=True, exist_ok=True)
        user = ctr.identity(self.run.pod, self.spec, self.run.switch_user)
        working_dir = self.spec.get("workingDir") or "/"
        command = ctr.launch_command(argv, mounts, scratch, user, self.run.sandbox.enter, working_dir)
        if self.program is not None and self.program.module:  # a stand-in of ours, run from the container's work dir
            env = {**env, "PYTHONPATH": str(ROOT)}
        with (self.run.directory / f"{self.spec['name']}.log").open("ab") as log:  # the process keeps its own copy
            owner = ctr.run_as(self.run.pod, self.spec, self.run.switch_user)
            if owner is not None:  # its stdout is its own, as a container's is: /dev/stdout reopens the log
                os.fchown(log.fileno(), *owner)
            self.process = start_server(command, log, env=env)
        now = time.monotonic()
        for state in (self.startup, self.readiness, self.liveness):
            if state is not None:
                state.reset(now)
        self.status.state, self.status.reason, self.status.message = "running", "", ""
        self.status.started_at, self.status.started, self.status.ready = _now(), self.startup is None, False

    def kill(self, grace_s: float) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=max(grace_s, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def pre_stop(self, deadline: float) -> None:
        """The preStop hook within the grace period: a command in the container's mount namespace as its user,
        or an HTTP GET to the pod's address, as the kubelet sends it."""
        hook = (self.spec.get("lifecycle") or {}).get("preStop") or {}
        if not hook or self.process is None or self.process.poll() is not None:
            return
        timeout = max(deadline - time.monotonic(), 0.1)
        if "httpGet" in hook:
            request = pods.probe({"httpGet": hook["httpGet"], "timeoutSeconds": timeout}, self.spec)
            if request is not None:
                probe_passes(request, self.run.address)
            return
        if "exec" not in hook:
            return
        enter = ["nsenter", f"--target={self.process.pid}", "--mount", "--net", "--"]
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            user = ctr.identity(self.run.pod, self.spec, self.run.switch_user)
            subprocess.run([*enter, *user, *hook["exec"]["command"]], timeout=timeout, capture_output=True)

    def tick(self, now: float) -> None:
        """Exit, restart and probes: one step of the kubelet's loop for this container."""
        if self.process is None:
            return
        code = self.process.poll()
        if code is not None:
            self._exited(128 - code if code < 0 else code, now)  # killed by a signal: 128 + its number
            return
        if self.init:
            return  # an init container is done when it exits
        address = self.run.address
        if not self.status.started and self.startup is not None:
            if self.startup.due(now):
                self.startup.record(probe_passes(self.startup.probe, address), now)
                self.status.started = self.startup.passing
                if self.startup.failed:
                    self._restart_now("startup probe failed", now)
            return
        if self.liveness is not None and self.liveness.due(now):
            self.liveness.record(probe_passes(self.liveness.probe, address), now)
            if self.liveness.failed:
                self._restart_now("liveness probe failed", now)
                return
        if self.readiness is None:
            self.status.ready = True
        elif self.readiness.due(now):
            self.readiness.record(probe_passes(self.readiness.probe, address), now)
            self.status.ready = self.readiness.passing

    def _restart_now(self, why: str, now: float) -> None:
        self.kill(float(self.run.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        self._exited(137, now, why)

    def _exited(self, code: int, now: float, why: str = "") -> None:
        self.process = None
        self.status.state, self.status.exit_code, self.status.finished_at = "terminated", code, _now()
        self.status.reason = "Completed" if code == 0 else "Error"
        self.status.message, self.status.ready = why, code == 0 and self.init
        if self._should_restart(code):
            self.status.restart_count += 1
            self.start_at = now + pods.restart_delay(self.status.restart_count)
            self.status.last_state = {"terminated": self.status.document()["state"]["terminated"]}
            self.status.state, self.status.reason = "waiting", "CrashLoopBackOff"

    def _should_restart(self, code: int) -> bool:
        if self.init:  # an init container that succeeded is done; one that failed runs again unless Never
            return code != 0 and self.run.restart_policy != "Never"
        return pods.should_restart(self.run.restart_policy, code)

    @property
    def succeeded(self) -> bool:
        return self.status.state == "terminated" and self.status.exit_code == 0


@dataclass(frozen=True)
class NodeSettings:
    """What every pod of the runner is given: the programs it runs, the cluster's DNS server."""

    images: Path
    dns: str


class PodRun:
    """One of the runner's pods, driven by a thread of its own until its containers are gone."""

    def __init__(
        self, api: KubeApi, pod: dict[str, Any], sandbox: PodSandbox, host_ip: str, directory: Path, node: NodeSettings
    ) -> None:
        self.api, self.pod, self.sandbox, self.host_ip, self.directory = api, pod, sandbox, host_ip, directory
        self.images, self.dns = node.images, node.dns
        self.restart_policy = pod["spec"].get("restartPolicy", "Always")
        self.init_containers = [Container(self, spec, init=True) for spec in pod["spec"].get("initContainers", [])]
        self.containers = [Container(self, spec) for spec in pod["spec"]["containers"]]
        self.start_time = _now()
        self.switch_user = False
        self.stop_requested = threading.Event()
        self.grace_s = 0.0
        self.finished = threading.Event()
        self._sent: str = ""
        self._thread = threading.Thread(target=self._main, name=pod["metadata"]["name"], daemon=True)

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    @property
    def address(self) -> str:
        return self.sandbox.address

    def begin(self) -> PodRun:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def request_stop(self, grace_s: float) -> None:
        if not self.stop_requested.is_set():
            self.grace_s = grace_s
            self.stop_requested.set()

    def _main(self) -> None:
        try:
            self._report()
            self.sandbox.start()
            # Which processes are this pod's: the harness's last sweep (stop_namespace) and tests look here.
            (self.directory / "sandbox.netns").write_text(os.readlink(self.sandbox.netns))
            self.switch_user = self._programs_usable_by_other_users()
            prepared = self._wait_for_volumes_and_env()
        except (pods.ProbeError, pods.ProgramError, OSError, subprocess.CalledProcessError) as error:
            self._refuse(str(error))
            return
        if prepared is not None:
            volumes, environments = prepared
            if self._initialise(volumes, environments):
                self._run(self.containers, volumes, environments)
        self._terminate()

    def _wait_for_volumes_and_env(self) -> tuple[dict[str, ctr.Volume], dict[int, dict[str, str]]] | None:
        """Volumes and env, once every Secret, ConfigMap and claim they name exists (the kubelet waits too);
        None if the pod is deleted first."""
        while not self.stop_requested.is_set():
            try:
                volumes = {**ctr.prepare_volumes(self.api, self.pod, self.directory), **self._network_files()}
                environments = {id(c): self._environment(c.spec) for c in [*self.init_containers, *self.containers]}
            except (ctr.VolumeError, ApiError, KeyError) as error:
                for container in [*self.init_containers, *self.containers]:
                    container.status.message = str(error)
                self._report()
                self.stop_requested.wait(VOLUME_RETRY_S)
                continue
            ctr.make_sub_paths([c.spec for c in [*self.init_containers, *self.containers]], volumes)
            for volume in volumes.values():
                if volume.tmpfs_bytes is not None:
                    self.sandbox.mount_tmpfs(volume.directory, volume.tmpfs_bytes)
            ctr.own_volumes(volumes, self.pod, self.switch_user)
            return volumes, environments
        return None

    def _programs_usable_by_other_users(self) -> bool:
        """Whether the containers can run as the pod's users: not where a program lives under a private home
        (a pyenv under /root); they then keep uid 0, without a single capability."""
        real = [c for c in [*self.init_containers, *self.containers] if not c.simulated]
        programs = {Path(pods.argv(c.spec, self.images, sys.executable)[0]) for c in real}
        usable = all(ctr.usable_by_other_users(program) for program in programs)
        if not usable:
            print(
                f"pod-runner: {self.name}: runs as uid 0 without capabilities: {sorted(map(str, programs))} "
                "cannot be run by other users",
                flush=True,
            )
        return usable

    def _initialise(self, volumes: dict[str, ctr.Volume], environments: dict[int, dict[str, str]]) -> bool:
        """Each init container in turn, to success; False if the pod was stopped or one failed for good."""
        for container in self.init_containers:
            self._run([container], volumes, environments)
            if not container.succeeded:
                return False
        return True

    def _run(
        self, containers: list[Container], volumes: dict[str, ctr.Volume], environments: dict[int, dict[str, str]]
    ) -> None:
        """The kubelet's loop over `containers` until the pod is stopped or none of them will run again."""
        refreshed = time.monotonic()
        while not self.stop_requested.is_set():
            now = time.monotonic()
            if now - refreshed > VOLUME_REFRESH_S:
                with contextlib.suppress(ctr.VolumeError, ApiError):  # a deleted object: the files stay as they were
                    ctr.refresh_volumes(self.api, self.pod, self.directory)
                refreshed = now
            for container in containers:
                if container.process is None and container.status.state != "terminated" and now >= container.start_at:
                    mounts = [*ctr.mounts(container.spec, volumes), *self._network_mounts(volumes)]
                    container.start(mounts, environments[id(container)])
                container.tick(now)
            self._report()
            if all(c.status.state == "terminated" for c in containers):
                return  # init containers done, or a pod that will not run again (restartPolicy Never/OnFailure)
            self.stop_requested.wait(TICK_S)

    def _environment(self, spec: dict[str, Any]) -> dict[str, str]:
        """What a kubelet gives every container (the API server's Service, the pod's hostname), then its own env."""
        given = {
            "PATH": DEFAULT_PATH,
            "HOSTNAME": self.pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": SERVICE_IP,
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        }
        return {**given, **ctr.environment(self.api, self.pod, spec, self.address)}

    def _network_files(self) -> dict[str, ctr.Volume]:
        """/etc/resolv.conf (the cluster's DNS, the pod's search path) and /etc/hosts, as a kubelet writes them."""
        namespace, hostname = self.pod["metadata"]["namespace"], self.pod["metadata"]["name"]
        etc = self.directory / "etc"
        etc.mkdir(exist_ok=True)
        search = f"{namespace}.svc.cluster.local svc.cluster.local cluster.local"
        (etc / "resolv.conf").write_text(f"search {search}\nnameserver {self.dns}\noptions ndots:5\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{self.address}\t{hostname}\n")
        return {NETWORK_FILES: ctr.Volume(etc)}

    @staticmethod
    def _network_mounts(volumes: dict[str, ctr.Volume]) -> list[ctr.Mount]:
        files = volumes[NETWORK_FILES]
        return [ctr.Mount(f"/etc/{name}", files, read_only=True, sub_path=name) for name in ("resolv.conf", "hosts")]

    def _terminate(self) -> None:
        deadline = time.monotonic() + self.grace_s
        self._report(terminating=True)
        # The hooks run side by side, as the kubelet runs them: one may wait for another's (Envoy Gateway's proxy).
        hooks = [threading.Thread(target=c.pre_stop, args=(deadline,), daemon=True) for c in self.containers]
        for hook in hooks:
            hook.start()
        for hook in hooks:
            hook.join(max(deadline - time.monotonic(), 0.1))
        for container in [*self.init_containers, *self.containers]:
            container.kill(deadline - time.monotonic())
        self.sandbox.stop()
        self.finished.set()

    def _refuse(self, message: str) -> None:
        for container in self.containers:
            container.status.reason, container.status.message = "CreateContainerConfigError", message
        self._report()
        print(f"pod-runner: {self.name}: {message}", flush=True)
        self.stop_requested.wait()
        self.sandbox.stop()
        self.finished.set()

    def _report(self, terminating: bool = False) -> None:
        status = pods.pod_status(
            [c.status for c in self.containers],
            init_containers=[c.status for c in self.init_containers],
            pod_ip=self.address,
            host_ip=self.host_ip,
            start_time=self.start_time,
            now=_now(),
            restart_policy=self.restart_policy,
            terminating=terminating,
        )
        meaning = json.dumps({**status, "conditions": [(c["type"], c["status"]) for c in status["conditions"]]})
        if meaning == self._sent:
            return
        with contextlib.suppress(ApiError):  # a pod deleted meanwhile has no status to write
            self.api.patch_status(self.pod["metadata"]["namespace"], self.pod["metadata"]["name"], status)
            self._sent = meaning


class Runner:
    """Lists pods each tick, starts a PodRun for each new pod of its own, stops those deleted or gone."""

    def __init__(self, api: KubeApi, directory: Path, node: NodeSettings) -> None:
        self.api, self.directory, self.node = api, directory, node
        self.addresses = pods.AddressPool()
        self.links = itertools.count()  # names each pod's veth: never reused while the runner lives
        self.runs: dict[str, PodRun] = {}

    def tick(self) -> None:
        listed = self.api.get("/api/v1/pods")["items"]
        node_ips = self._node_ips()
        present = set()
        for pod in listed:
            if not pods.runs_for_real(pod) or not pod["spec"].get("nodeName"):
                continue
            uid = pod["metadata"]["uid"]
            present.add(uid)
            run = self.runs.get(uid)
            if run is None and pod["metadata"].get("deletionTimestamp") is None:
                sandbox = PodSandbox(self.addresses.take(), next(self.links), self._dir(pod) / "sandbox.log")
                host_ip = node_ips.get(pod["spec"]["nodeName"], "")
                run = PodRun(self.api, pod, sandbox, host_ip, self._dir(pod), self.node)
                self.runs[uid] = run.begin()
                print(f"pod-runner: {run.name} at {run.address}", flush=True)
            if pod["metadata"].get("deletionTimestamp") is not None:
                if run is not None:
                    run.request_stop(float(pod["metadata"].get("deletionGracePeriodSeconds", 30)))
                if run is None or run.finished.is_set():
                    with contextlib.suppress(ApiError):
                        self.api.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
        for uid in [uid for uid in self.runs if uid not in present]:
            self.runs[uid].request_stop(0)
        for uid, run in list(self.runs.items()):
            if run.finished.is_set() and uid not in present:
                self.addresses.release(run.address)
                del self.runs[uid]

    def _node_ips(self) -> dict[str, str]:
        found = {}
        for node in self.api.get("/api/v1/nodes")["items"]:
            internal = [a["address"] for a in node.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"]
            found[node["metadata"]["name"]] = internal[0] if internal else ""
        return found

    def _dir(self, pod: dict[str, Any]) -> Path:
        meta = pod["metadata"]
        return self.directory / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    def stop(self) -> None:
        for run in self.runs.values():
            run.request_stop(5)
        for run in self.runs.values():
            run.finished.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cluster.pod_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where each pod's volumes and logs go")
    parser.add_argument("--images", type=Path, required=True, help="the programs built for the images it runs")
    parser.add_argument("--dns", required=True, help="the cluster DNS server's address")
    args = parser.parse_args(argv)
    runner = Runner(KubeApi.from_kubeconfig(args.kubeconfig), args.dir, NodeSettings(args.images, args.dns))
    print(f"pod-runner: runs {', '.join(sorted(pods.REAL_IMAGES))} pods", flush=True)
    try:
        return poll_until_terminated("pod-runner", runner.tick)
    finally:
        runner.stop()


if __name__ == "__main__":
    sys.exit(main())
