"""The pod runner on the simulated cluster: a Triton pod made by hand becomes Ready only when the real Triton in
it has loaded the repository its args name from the cluster's S3, answers at the pod's own address and through a
Service's ClusterIP (the real kube-proxy) whose name resolves inside the pod (CoreDNS), is restarted when it dies,
and stops (preStop, SIGTERM) when the pod is deleted. No Pulumi here: the platform's own Triton pods are checked in
test_lifecycle.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from local_serving.sample_repository import write_sample_repository
from tests.real_engine._engine import cluster_dir, kube_items, kubectl, pod_ready

NAMESPACE = "pod-runner-test"
BUCKET = "local-models"  # made by the harness (Pulumi.local.yaml modelRepository.uri)
PREFIX = "pod-runner-test/sample"


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, pod: str = "triton-0") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout_s:.0f} s\n{_diagnosis(pod)}")


def _pod(name: str, args: list[str]) -> dict[str, Any]:
    ready = {"path": "/v2/health/ready", "port": "http"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "triton-by-hand"}},
        "spec": {
            "nodeName": "system-1",
            "terminationGracePeriodSeconds": 20,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            "containers": [
                {
                    "name": "triton",
                    "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                    "args": args,
                    "env": [
                        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
                        {"name": "TRITON_AWS_MOUNT_DIRECTORY", "value": "/var/lib/triton/models"},
                    ],
                    "ports": [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}],
                    "startupProbe": {"httpGet": ready, "periodSeconds": 1, "failureThreshold": 120},
                    "readinessProbe": {"httpGet": ready, "periodSeconds": 1},
                    "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 2},
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
                    "volumeMounts": [
                        {"name": "dshm", "mountPath": "/dev/shm"},
                        {"name": "cache", "mountPath": "/var/lib/triton/models"},
                    ],
                }
            ],
            "volumes": [
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {"name": "cache", "emptyDir": {}},
            ],
        },
    }


def _get(name: str) -> dict[str, Any] | None:
    found = [p for p in kube_items("pods", "-n", NAMESPACE) if p["metadata"]["name"] == name]
    return found[0] if found else None


def _diagnosis(name: str) -> str:
    """The pod's status and the end of its container's log, for a failure message."""
    logs = sorted(cluster_dir().glob(f"pods/{NAMESPACE}_{name}_*/triton.log"))
    tail = logs[-1].read_text(errors="replace").splitlines()[-15:] if logs else ["(no container log)"]
    return f"status: {json.dumps((_get(name) or {}).get('status'))}\nlog:\n  " + "\n  ".join(tail)


def _server_pid(name: str) -> int:
    """The tritonserver process of the pod: the one in the pod's network namespace."""
    (directory,) = cluster_dir().glob(f"pods/{NAMESPACE}_{name}_*")
    netns = (directory / "sandbox.netns").read_text()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            in_pod = entry.name.isdigit() and os.readlink(entry / "ns" / "net") == netns
            if in_pod and (entry / "cmdline").read_bytes().split(b"\0")[0].endswith(b"/tritonserver"):
                found.append(int(entry.name))
        except OSError:
            continue  # a process that ended meanwhile, or one not ours to inspect
    assert len(found) == 1, f"{len(found)} tritonserver processes in the pod's namespace"
    return found[0]


def _infer(address: str, images: np.ndarray, port: int = 8000) -> list[float]:
    tensor = {"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}
    body = {"inputs": [tensor]}
    url = f"http://{address}:{port}/v2/models/mnist/infer"
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return list(json.load(response)["outputs"][0]["data"])


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    repository = write_sample_repository(tmp_path_factory.mktemp("sample"))
    s3 = boto3.client("s3", endpoint_url=os.environ["LOCAL_CLUSTER_S3"], region_name="us-east-1")
    for path in repository.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(repository)}")
    kubectl("create", "namespace", NAMESPACE)
    yield repository
    kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=120)


def test_a_triton_pod_is_ready_when_triton_has_loaded_its_repository_and_answers_at_its_address(
    published: Path,
) -> None:
    endpoint = os.environ["LOCAL_CLUSTER_S3"].removeprefix("http://")
    args = ["tritonserver", f"--model-repository=s3://{endpoint}/{BUCKET}/{PREFIX}", "--strict-readiness=true"]
    kubectl("create", "-f", "-", stdin=json.dumps(_pod("triton-0", args)))
    started = time.monotonic()
    pod = wait_for(lambda: (p := _get("triton-0")) and pod_ready(p) and p, 180, "the pod was not Ready")
    ready_s = time.monotonic() - started
    status = pod["status"]
    address = status["podIP"]
    assert status["phase"] == "Running" and status["containerStatuses"][0]["started"]
    with urllib.request.urlopen(f"http://{address}:8000/v2/models/mnist/ready", timeout=5) as response:
        assert response.status == 200
    golden = np.load(published / "mnist" / "golden.npz")
    answer = _infer(address, golden["min.in.input"])  # the verification inputs and outputs of the build
    assert np.allclose(answer, golden["min.out.logits"].ravel(), atol=1e-4)
    print(f"pod runner: Triton pod Ready in {ready_s:.1f} s at {address}")


def _service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "triton", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "triton-by-hand"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def test_a_service_cluster_ip_reaches_the_ready_pod_through_kube_proxy(published: Path) -> None:
    kubectl("create", "-f", "-", stdin=json.dumps(_service()))
    cluster_ip = json.loads(kubectl("get", "service", "triton", "-n", NAMESPACE, "-o", "json"))["spec"]["clusterIP"]
    golden = np.load(published / "mnist" / "golden.npz")

    def answered() -> list[float] | None:
        try:
            return _infer(cluster_ip, golden["min.in.input"], port=80)
        except OSError:  # kube-proxy has not yet programmed the endpoint
            return None

    answer = wait_for(answered, 30, f"the Service's ClusterIP {cluster_ip} did not answer")
    assert np.allclose(answer, golden["min.out.logits"].ravel(), atol=1e-4)


def test_a_pod_resolves_service_names_through_the_clusters_dns() -> None:
    """From inside the container (its mount and network namespaces: the resolv.conf the runner gave it), the
    Service's short name resolves through CoreDNS's kubernetes plugin to its ClusterIP."""
    cluster_ip = json.loads(kubectl("get", "service", "triton", "-n", NAMESPACE, "-o", "json"))["spec"]["clusterIP"]
    inside = ["nsenter", f"--target={_server_pid('triton-0')}", "--mount", "--net", "--"]
    for name in ("triton", f"triton.{NAMESPACE}.svc.cluster.local"):
        result = subprocess.run([*inside, "getent", "hosts", name], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stdout.split()[0] == cluster_ip, (name, result)


def test_a_container_that_dies_is_restarted_and_ready_again() -> None:
    pod = _get("triton-0")
    assert pod is not None
    metrics = f"http://{pod['status']['podIP']}:8002/metrics"
    with urllib.request.urlopen(metrics, timeout=5) as response:
        assert b"nv_inference_request_success" in response.read()
    os.kill(_server_pid("triton-0"), signal.SIGKILL)
    wait_for(lambda: not pod_ready(_get("triton-0")), 30, "the pod stayed Ready after its Triton was killed")
    restarted = wait_for(
        lambda: (
            (p := _get("triton-0")) and pod_ready(p) and p["status"]["containerStatuses"][0]["restartCount"] == 1 and p
        ),
        120,
        "the pod was not restarted",
    )
    assert restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL


def test_a_deleted_pod_stops_its_triton_and_is_removed() -> None:
    pod = _get("triton-0")
    assert pod is not None
    address = pod["status"]["podIP"]
    kubectl("delete", "pod", "triton-0", "-n", NAMESPACE, "--wait=false")
    wait_for(lambda: _get("triton-0") is None, 60, "the deleted pod was not removed")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}:8000/v2/health/live", timeout=3)
    cluster_ip = json.loads(kubectl("get", "service", "triton", "-n", NAMESPACE, "-o", "json"))["spec"]["clusterIP"]
    with pytest.raises(OSError):  # no ready endpoint left: kube-proxy rejects, nothing else answers
        urllib.request.urlopen(f"http://{cluster_ip}/v2/health/live", timeout=3)
