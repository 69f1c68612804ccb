"""Which pods the simulated cluster runs as real processes, and what a kubelet reports for them.

kwok plays the kubelet of every node: it marks pods Running and Ready at once and never starts a container. Pods
with a container whose image the pod runner knows (``REAL_IMAGES``) are left to the runner instead
(``kwok_stage``): it starts the real program, runs the pod's own probes and reports what they find. Everything
here is pure: the runner (``local_cluster.pod_runner``) does the I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any


@dataclass(frozen=True)
class Program:
    """What the runner starts for an image: the image's own program, built into ``.toolchain/images`` and run
    with the container's command and args as the image's ENTRYPOINT would be; or a module standing in for it."""

    binary: str = ""
    entrypoint: str = ""  # the image's ENTRYPOINT: what runs when the container names no command
    module: str = ""


# Image repository name (the last path element, without tag or digest) -> what the runner starts.
REAL_IMAGES: Mapping[str, Program] = {
    "tritonserver": Program(module="local_cluster.triton_pod"),
    "kube-webhook-certgen": Program(module="local_cluster.webhook_certgen"),
    "kube-state-metrics": Program("kube-state-metrics", "/kube-state-metrics"),
    "prometheus-operator": Program("operator", "/bin/operator"),
    "prometheus": Program("prometheus", "/bin/prometheus"),
    "prometheus-config-reloader": Program("prometheus-config-reloader", "/bin/prometheus-config-reloader"),
    "prometheus-adapter": Program("adapter", "/adapter"),
    "gateway": Program("envoy-gateway", "/usr/local/bin/envoy-gateway"),  # Envoy Gateway: controller, certgen, ...
    "envoy": Program("envoy", "/usr/local/bin/envoy"),  # ... and the proxy it deploys
}
KWOK_POD_CIDR = "10.244.0.0/17"  # the addresses kwok hands its simulated pods
RUNNER_POD_CIDR = "10.244.128.0/17"  # the runner's pods: local addresses of the namespace, bound for real
KUBELET_BACKOFF_S = (10.0, 300.0)  # CrashLoopBackOff: first delay, cap (doubling), as the kubelet


def image_name(image: str) -> str:
    """``nvcr.io/nvidia/tritonserver:25.01-py3`` and ``mirror/tritonserver@sha256:...`` -> ``tritonserver``."""
    return image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]


def program_for(image: str) -> Program | None:
    """What runs in place of the image, or None for an image the runner does not know."""
    return REAL_IMAGES.get(image_name(image))


class ProgramError(ValueError):
    """A container of a known image that runs something other than the image's program (a shell, a script)."""


_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion of command, args and env values: a defined variable is replaced, an
    undefined reference is left as written, and ``$$`` escapes a ``$``."""
    return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def argv(container: Mapping[str, Any], images: Path, python: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The command line the runner starts for a container of a known image, ``$(VAR)`` expanded from ``env``."""
    program = program_for(container["image"])
    if program is None:
        raise ProgramError(f"container {container['name']}: image {container['image']} is not one the runner knows")
    given = [expand(word, env or {}) for word in (*container.get("command", []), *container.get("args", []))]
    if program.module:
        return [python, "-m", program.module, *given]
    words = given if container.get("command") else [program.entrypoint, *given]
    if PurePosixPath(words[0]).name not in {program.binary, PurePosixPath(program.entrypoint).name}:
        raise ProgramError(f"container {container['name']} runs {words[0]!r}, not the program of {container['image']}")
    return [str(images / program.binary), *words[1:]]


def runs_for_real(pod: Mapping[str, Any]) -> bool:
    """A pod belongs to the runner when any of its containers has an image the runner knows."""
    return any(program_for(c.get("image", "")) for c in pod.get("spec", {}).get("containers", []))


def kwok_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """A kwok pod stage that leaves the runner's pods alone (the same test as ``runs_for_real``, in kwok's jq)."""
    names = "|".join(sorted(REAL_IMAGES))
    exclusion = {
        "key": f'.spec.containers.[] | select(.image | test("(^|/)({names})([:@]|$)")) | .name',
        "operator": "DoesNotExist",
    }
    selector = stage["spec"].setdefault("selector", {})
    selector["matchExpressions"] = [*selector.get("matchExpressions", []), exclusion]
    return stage


class AddressPool:
    """Pod IPs for the runner's pods, from a range kwok does not use; released when a pod is gone."""

    def __init__(self, cidr: str = RUNNER_POD_CIDR) -> None:
        self._free: Iterator[ipaddress.IPv4Address] = ipaddress.IPv4Network(cidr).hosts()
        self._released: list[str] = []

    def take(self) -> str:
        return self._released.pop(0) if self._released else str(next(self._free))

    def release(self, address: str) -> None:
        self._released.append(address)


# ---------------------------------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True)
class Probe:
    """One of a container's probes, its port resolved: an HTTP GET or a TCP connect to the pod's address."""

    kind: str  # "http" | "tcp"
    port: int
    path: str = "/"
    https: bool = False  # an HTTPS GET, its certificate not verified (as the kubelet does)
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


class ProbeError(ValueError):
    """A probe the runner cannot run (exec, gRPC) or whose port the container does not name."""


def _port(value: int | str, container: Mapping[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports", []):
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ProbeError(f"container {container['name']} has no port named {value!r}")


def probe(spec: Mapping[str, Any] | None, container: Mapping[str, Any]) -> Probe | None:
    """The runnable form of a probe spec, or None when the container has none."""
    if not spec:
        return None
    https = False
    if "httpGet" in spec:
        kind, port, path = "http", spec["httpGet"]["port"], spec["httpGet"].get("path", "/")
        https = spec["httpGet"].get("scheme", "HTTP").upper() == "HTTPS"
    elif "tcpSocket" in spec:
        kind, port, path = "tcp", spec["tcpSocket"]["port"], "/"
    else:
        raise ProbeError(
            f"container {container['name']}: only httpGet and tcpSocket probes run here, not {sorted(spec)}"
        )
    return Probe(
        kind,
        _port(port, container),
        path,
        https,
        initial_delay_s=float(spec.get("initialDelaySeconds", 0)),
        period_s=float(spec.get("periodSeconds", 10)),
        timeout_s=float(spec.get("timeoutSeconds", 1)),
        success_threshold=int(spec.get("successThreshold", 1)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
    )


@dataclass
class ProbeState:
    """Consecutive results of one probe, and whether its threshold has been crossed."""

    probe: Probe
    passing: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    def reset(self, now: float) -> None:
        """A (re)started container: no results yet, the first probe after the initial delay."""
        self.passing, self.successes, self.failures = False, 0, 0
        self.next_at = now + self.probe.initial_delay_s

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float) -> None:
        self.next_at = now + self.probe.period_s
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.probe.success_threshold:
                self.passing = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.probe.failure_threshold:
                self.passing = False

    @property
    def failed(self) -> bool:
        """For startup and liveness probes: the failure threshold is reached, the container must restart."""
        return self.failures >= self.probe.failure_threshold


# ---------------------------------------------------------------------------------------------------------------
# Status


@dataclass
class ContainerStatus:
    """What the runner knows of one container, in the API's terms."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started: bool = False
    ready: bool = False
    restart_count: int = 0
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    last_state: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": self.reason,
                    "startedAt": self.started_at,
                    "finishedAt": self.finished_at,
                    **({"message": self.message} if self.message else {}),
                }
            }
        else:
            state = {"waiting": {"reason": self.reason, **({"message": self.message} if self.message else {})}}
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state,
        }


def _condition(kind: str, value: bool, now: str, reason: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if value else "False",
        "lastTransitionTime": now,
        "reason": reason if reason and not value else None,  # None: a status patch removes the old reason
    }


def phase(containers: list[ContainerStatus], restart_policy: str) -> str:
    """Running while any container runs or will run again; Succeeded or Failed once every one has stopped for good."""
    stopped = [
        c for c in containers if c.state == "terminated" and not should_restart(restart_policy, c.exit_code or 0)
    ]
    if containers and len(stopped) == len(containers):
        return "Succeeded" if all(c.exit_code == 0 for c in stopped) else "Failed"
    if any(c.state != "waiting" or c.restart_count for c in containers):
        return "Running"
    return "Pending"


def pod_status(
    containers: list[ContainerStatus],
    *,
    pod_ip: str,
    host_ip: str,
    start_time: str,
    now: str,
    restart_policy: str = "Always",
    terminating: bool = False,
    init_containers: list[ContainerStatus] | None = None,
) -> dict[str, Any]:
    """The pod's status as a kubelet writes it: phase, addresses, conditions and every container's state."""
    init_containers = init_containers or []
    initialised = all(c.state == "terminated" and c.exit_code == 0 for c in init_containers)
    ready = bool(containers) and all(c.ready for c in containers) and initialised and not terminating
    reason = "" if ready else "ContainersNotReady"
    init_failed = any(
        c.state == "terminated" and c.exit_code != 0 and restart_policy == "Never" for c in init_containers
    )
    return {
        "phase": "Failed" if init_failed else phase(containers, restart_policy) if initialised else "Pending",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", True, start_time),
            _condition("Initialized", initialised, now, "ContainersNotInitialized"),
            _condition("ContainersReady", ready, now, reason),
            _condition("Ready", ready, now, reason),
            _condition("PodScheduled", True, start_time),
        ],
        **({"initContainerStatuses": [c.document() for c in init_containers]} if init_containers else {}),
        "containerStatuses": [c.document() for c in containers],
    }


def restart_delay(restarts: int) -> float:
    first, cap = KUBELET_BACKOFF_S
    return float(min(first * 2 ** max(restarts - 1, 0), cap))


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)
