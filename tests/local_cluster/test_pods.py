"""Which pods the runner takes from kwok, and the status it writes for them (local_cluster/pods.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from local_cluster import pods


def _pod(*images: str) -> dict:
    return {"spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}}


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("nvcr.io/nvidia/tritonserver:25.01-py3", "tritonserver"),
        ("registry.internal:5000/mirror/tritonserver@sha256:abc", "tritonserver"),
        ("tritonserver", "tritonserver"),
        ("quay.io/prometheus/prometheus:v3.5.0", "prometheus"),
    ],
)
def test_image_name_is_the_repository_without_registry_tag_or_digest(image: str, name: str) -> None:
    assert pods.image_name(image) == name


def test_a_pod_with_a_triton_container_is_the_runners_and_others_stay_kwoks() -> None:
    assert pods.runs_for_real(_pod("nvcr.io/nvidia/tritonserver:25.01-py3"))
    assert not pods.runs_for_real(_pod("nvcr.io/nvidia/k8s-device-plugin:v0.17.0"))
    assert not pods.runs_for_real(_pod("example.com/not-tritonserver-really:1"))


def test_kwoks_pod_stages_exclude_exactly_the_runners_pods() -> None:
    """The exclusion is kwok's jq; check its regex against the same images as runs_for_real."""
    import re

    stage = pods.kwok_stage({"spec": {"resourceRef": {"kind": "Pod"}, "selector": {"matchExpressions": [{"k": 1}]}}})
    expressions = stage["spec"]["selector"]["matchExpressions"]
    assert expressions[0] == {"k": 1} and expressions[1]["operator"] == "DoesNotExist"
    pattern = re.search(r'test\("(.*)"\)', expressions[1]["key"]).group(1)  # type: ignore[union-attr]
    images = (
        "nvcr.io/nvidia/tritonserver:25.01-py3",
        "tritonserver",
        "m/tritonserver@sha256:1",
        "a/b:2",
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
        "quay.io/prometheus/alertmanager:v0.34.0",
        "example.com/kube-state-metrics-exporter:1",
    )
    for image in images:
        assert bool(re.search(pattern, image)) == pods.runs_for_real(_pod(image)), image


def test_a_known_image_runs_its_own_program_with_the_containers_command_and_args(tmp_path: Path) -> None:
    metrics = {"name": "m", "image": "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"}
    # The chart gives args only: the image's ENTRYPOINT (/kube-state-metrics) runs them, here the binary built.
    assert pods.argv({**metrics, "args": ["--port=8080"]}, tmp_path, "py") == [
        str(tmp_path / "kube-state-metrics"),
        "--port=8080",
    ]
    command = {**metrics, "command": ["/kube-state-metrics"], "args": ["--port=8080"]}
    assert pods.argv(command, tmp_path, "py") == [str(tmp_path / "kube-state-metrics"), "--port=8080"]
    triton = {"name": "t", "image": "nvcr.io/nvidia/tritonserver:25.01-py3", "command": ["tritonserver"]}
    assert pods.argv(triton, tmp_path, "py") == ["py", "-m", "local_cluster.triton_pod", "tritonserver"]
    with pytest.raises(pods.ProgramError, match="runs '/bin/sh'"):
        pods.argv({**metrics, "command": ["/bin/sh", "-c", "x"]}, tmp_path, "py")


def test_command_and_args_expand_env_references_as_the_kubelet_does(tmp_path: Path) -> None:
    """Envoy Gateway's proxy names itself with `--service-node $(ENVOY_POD_NAME)`."""
    envoy = {
        "name": "envoy",
        "image": "docker.io/envoyproxy/envoy:distroless-v1.39.0",
        "command": ["envoy"],
        "args": ["--service-node", "$(ENVOY_POD_NAME)", "--keep", "$(UNDEFINED)", "--literal", "$$(ENVOY_POD_NAME)"],
    }
    env = {"ENVOY_POD_NAME": "envoy-abc"}
    assert pods.argv(envoy, tmp_path, "py", env)[1:] == [
        "--service-node",
        "envoy-abc",
        "--keep",
        "$(UNDEFINED)",
        "--literal",
        "$(ENVOY_POD_NAME)",
    ]
    gateway = {"name": "c", "image": "docker.io/envoyproxy/gateway:v1.9.0", "args": ["server"]}
    assert pods.argv(gateway, tmp_path, "py") == [str(tmp_path / "envoy-gateway"), "server"]
    assert pods.expand("a$b $$ $(X)$(Y)", {"X": "1"}) == "a$b $ 1$(Y)"


def test_init_containers_hold_the_pod_pending_until_each_has_succeeded() -> None:
    main = pods.ContainerStatus("main", "i")
    init = pods.ContainerStatus("init", "i", state="running", reason="")
    status = pods.pod_status([main], init_containers=[init], pod_ip="a", host_ip="b", start_time="t0", now="t1")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == "Pending" and conditions["Initialized"] == "False"
    assert status["initContainerStatuses"][0]["state"] == {"running": {"startedAt": None}}
    init.state, init.exit_code = "terminated", 0
    main.state, main.ready = "running", True
    status = pods.pod_status([main], init_containers=[init], pod_ip="a", host_ip="b", start_time="t0", now="t1")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == "Running" and conditions["Initialized"] == conditions["Ready"] == "True"


def test_runner_addresses_never_overlap_kwoks_and_are_reused() -> None:
    pool = pods.AddressPool()
    first, second = pool.take(), pool.take()
    kwok = ipaddress.ip_network(pods.KWOK_POD_CIDR)
    assert first != second and all(ipaddress.ip_address(a) not in kwok for a in (first, second))
    pool.release(first)
    assert pool.take() == first


def test_named_probe_ports_resolve_and_exec_probes_are_refused() -> None:
    container = {"name": "triton", "ports": [{"name": "http", "containerPort": 8000}]}
    ready = pods.probe({"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5}, container)
    assert ready == pods.Probe("http", 8000, "/v2/health/ready", period_s=5.0)
    assert pods.probe(None, container) is None
    with pytest.raises(pods.ProbeError, match="no port named 'grpc'"):
        pods.probe({"tcpSocket": {"port": "grpc"}}, container)
    with pytest.raises(pods.ProbeError, match="only httpGet and tcpSocket"):
        pods.probe({"exec": {"command": ["true"]}}, container)


def test_a_probe_passes_after_its_success_threshold_and_fails_after_its_failure_threshold() -> None:
    state = pods.ProbeState(pods.Probe("http", 1, success_threshold=2, failure_threshold=3, period_s=5))
    state.record(True, 0)
    assert not state.passing and state.next_at == 5
    state.record(True, 5)
    assert state.passing
    state.record(False, 10)
    state.record(False, 15)
    assert state.passing and not state.failed
    state.record(False, 20)
    assert not state.passing and state.failed


def _container(state: str, ready: bool = False, exit_code: int | None = None, restarts: int = 0):
    status = pods.ContainerStatus("triton", "tritonserver:1", state=state, ready=ready, restart_count=restarts)
    status.exit_code = exit_code
    return status


def test_the_pod_is_ready_only_when_every_container_is_and_never_while_terminating() -> None:
    def ready(containers, terminating=False):
        status = pods.pod_status(
            containers, pod_ip="10.244.128.1", host_ip="192.0.2.10", start_time="t0", now="t1", terminating=terminating
        )
        return {c["type"]: c["status"] for c in status["conditions"]}["Ready"]

    assert ready([_container("running", ready=True)]) == "True"
    assert ready([_container("running", ready=True), _container("running")]) == "False"
    assert ready([_container("running", ready=True)], terminating=True) == "False"


@pytest.mark.parametrize(
    ("policy", "exit_code", "phase"),
    [("Always", 0, "Running"), ("OnFailure", 0, "Succeeded"), ("OnFailure", 1, "Running"), ("Never", 2, "Failed")],
)
def test_phase_follows_the_restart_policy(policy: str, exit_code: int, phase: str) -> None:
    assert pods.phase([_container("terminated", exit_code=exit_code)], policy) == phase


def test_a_container_not_yet_started_leaves_the_pod_pending() -> None:
    assert pods.phase([_container("waiting")], "Always") == "Pending"
    assert pods.phase([_container("waiting", restarts=1)], "Always") == "Running"


def test_restarts_back_off_as_the_kubelet_does() -> None:
    assert [pods.restart_delay(n) for n in (1, 2, 3, 10)] == [10, 20, 40, 300]
