"""The whole platform through the real Pulumi CLI and kubernetes provider on the simulated cluster, in order:
preview, up, a no-op preview, a model change, an up killed half-way and its recovery, destroy. Each step is
checked against the live API server."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest

from components.autoscaling import QUEUE_TIME_METRIC
from components.load_balancer import PROXY_SERVICE
from components.prometheus_rules import LATENCY_COUNTERS, per_request, record_name
from components.settings import LoadBalancerSettings
from components.triton_cluster import HTTP_PORT
from tests.paths import ROOT
from tests.real_engine._engine import (
    BUILD_DIR,
    STACK,
    SUMMARY,
    build_models,
    cluster_scoped_names,
    kube_items,
    kubectl,
    log_path,
    pod_ready,
    pulumi,
    state_resources,
    tail,
)
from tests.real_engine._load import Load, requests_served

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
MIN_REPLICAS, MAX_REPLICAS = 2, 3  # Pulumi.local.yaml autoscaling.minReplicas and maxReplicas
# What the loop's load should fire (Pulumi.local.yaml's monitoring.alerts make them fire within seconds).
LOAD_ALERTS = ("TritonQueueTimeAboveSlo", "TritonHpaAtMaxReplicas")
ALERT_WINDOW = "1m"  # Pulumi.local.yaml monitoring.alertWindow
QUEUE_RULE = record_name("pod", "queue")  # what the adapter publishes to the HPA
# Requests through the gateway: enough concurrent clients that least-request has more than one pod to choose.
GATEWAY_CLIENTS, GATEWAY_S = 6, 10
# The bounded load of the autoscaling loop: enough concurrent clients to queue requests on two CPU Tritons.
LOAD_CLIENTS, LOAD_S = 24, 150


@pytest.fixture(scope="module")
def before_up() -> dict[str, set[str]]:
    build_models(epochs=1)
    return cluster_scoped_names()


def wait_for(condition: Callable[[], bool], timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def triton_deployment() -> dict:
    return json.loads(kubectl("get", "deployment", "triton", "-n", "triton", "-o", "json"))


def served_digest() -> str:
    args = triton_deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
    repository = next(a for a in args if a.startswith("--model-repository="))
    return repository.rsplit("/", 1)[-1]


def test_preview(before_up: dict[str, set[str]]) -> None:
    result, seconds = pulumi("preview", "preview")
    assert result.returncode == 0, tail(result)
    assert "to create" in result.stdout
    SUMMARY["preview_s"] = round(seconds)


def test_up_converges(before_up: dict[str, set[str]]) -> None:
    result, seconds = pulumi("up", "up", "--yes", "--skip-preview")
    assert result.returncode == 0, tail(result)
    resources = state_resources()
    SUMMARY.update(up_s=round(seconds), resources=len(resources))

    releases = [r for r in resources if r["type"] == HELM_RELEASE]
    assert len(releases) >= 5
    for release in releases:
        status = release["outputs"]["status"]
        stored = kube_items("secrets", "-n", status["namespace"], "-l", f"owner=helm,name={status['name']}")
        assert any(s["metadata"]["labels"].get("status") == "deployed" for s in stored), status["name"]

    # The Deployment leaves replicas to the HPA, which scales the first pod up to minReplicas right after.
    available = wait_for(lambda: triton_deployment()["status"].get("availableReplicas", 0) >= MIN_REPLICAS)
    assert available, f"Triton never had {MIN_REPLICAS} available replicas: {triton_deployment()['status']}"
    nodes = kube_items("nodes")
    assert all(n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake" for n in nodes), (
        "a Node the harness did not create (a phantom from a patch by name)"
    )
    pods = kube_items("pods", "-n", "triton", "-l", "app.kubernetes.io/name=triton")
    assert pods and all(p["spec"].get("nodeName", "").startswith("gpu-node-") for p in pods)

    (plugin,) = [d for d in kube_items("daemonsets", "-n", "hami-system") if "device-plugin" in d["metadata"]["name"]]
    gpu_nodes = [n for n in kube_items("nodes") if n["metadata"]["name"].startswith("gpu-node-")]
    assert plugin["status"]["numberReady"] == plugin["status"]["desiredNumberScheduled"] == len(gpu_nodes), (
        f"HAMi's device plugin runs on {plugin['status']['numberReady']} of {len(gpu_nodes)} GPU nodes"
    )

    # HAMi's scheduler is a control-plane service: it tolerates no GPU taint and runs on the system nodes.
    schedulers = [p for p in kube_items("pods", "-n", "hami-system") if "scheduler" in p["metadata"]["name"]]
    assert schedulers and all(p["spec"].get("nodeName", "").startswith("system-") for p in schedulers)

    jobs = kube_items("jobs", "-n", "model-build")
    assert jobs and all(
        any(c["type"] == "Complete" and c["status"] == "True" for c in j["status"].get("conditions", [])) for j in jobs
    )

    (hpa,) = kube_items("hpa", "-n", "triton")
    metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert "triton_queue_time_per_request_us" in metrics

    for kind, namespace in (
        ("gateways.gateway.networking.k8s.io", "envoy-gateway-system"),
        ("httproutes.gateway.networking.k8s.io", "triton"),
        ("grpcroutes.gateway.networking.k8s.io", "triton"),
        ("backendtrafficpolicies.gateway.envoyproxy.io", "triton"),
        ("podmonitors.monitoring.coreos.com", "monitoring"),
        ("prometheusrules.monitoring.coreos.com", "monitoring"),
    ):
        assert kube_items(kind, "-n", namespace), f"no {kind} in {namespace}"


def _device_plugin_nodes() -> tuple[int, int]:
    (plugin,) = [d for d in kube_items("daemonsets", "-n", "hami-system") if "device-plugin" in d["metadata"]["name"]]
    return plugin["status"].get("desiredNumberScheduled", 0), plugin["status"].get("numberReady", 0)


def _infer(url: str, inputs: np.ndarray) -> np.ndarray:
    tensor = {"name": "input", "shape": list(inputs.shape), "datatype": "FP32", "data": inputs.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return np.asarray(json.load(response)["outputs"][0]["data"])


def test_triton_pods_serve_the_published_model_through_the_service() -> None:
    """Ready means the real Triton in each pod loaded the digest from S3; the Service's ClusterIP (kube-proxy)
    answers with the model's own outputs."""
    pods = [p for p in kube_items("pods", "-n", "triton", "-l", "app.kubernetes.io/name=triton") if pod_ready(p)]
    assert len(pods) >= MIN_REPLICAS
    ready_s = [_seconds_to_ready(p) for p in pods]
    service = json.loads(kubectl("get", "service", "triton", "-n", "triton", "-o", "json"))["spec"]
    port = next(p["port"] for p in service["ports"] if p["name"] == "http")
    golden = np.load(ROOT / BUILD_DIR / "mnist" / "golden.npz")
    targets = {f"{service['clusterIP']}:{port}": "the Service"}
    targets.update({f"{p['status']['podIP']}:{HTTP_PORT}": p["metadata"]["name"] for p in pods})
    for target, who in targets.items():
        answer = _infer(f"http://{target}/v2/models/mnist/infer", golden["min.in.input"])
        assert np.allclose(answer, golden["min.out.logits"].ravel(), atol=1e-4), who
    SUMMARY.update(triton_pods=len(pods), triton_ready_s=round(max(ready_s)))


def test_http_and_grpc_through_the_gateway_reach_triton_spread_over_every_pod() -> None:
    """Envoy Gateway's real controller programmed a real Envoy from our Gateway, routes and traffic policies:
    HTTP and gRPC inference through the gateway's Service answers with the model's outputs, and the least-request
    policy spreads the requests over every Triton pod (counted by each Triton, not by the gateway)."""
    import tritonclient.grpc as grpcclient

    (service,) = [s for s in kube_items("services", "-A") if s["metadata"]["name"] == PROXY_SERVICE]
    address, listeners = service["spec"]["clusterIP"], LoadBalancerSettings()  # the local stack's ports are these
    assert {p["port"] for p in service["spec"]["ports"]} == {listeners.http_port, listeners.grpc_port}
    http_port, grpc_port = listeners.http_port, listeners.grpc_port
    golden = np.load(ROOT / BUILD_DIR / "mnist" / "golden.npz")
    url = f"http://{address}:{http_port}/v2/models/mnist/infer"

    def answers() -> bool:
        try:
            return bool(np.allclose(_infer(url, golden["min.in.input"]), golden["min.out.logits"].ravel(), atol=1e-4))
        except OSError:  # the proxy pod is not ready or not yet programmed
            return False

    assert wait_for(answers, 240), f"no answer through the gateway at {url}"
    client = grpcclient.InferenceServerClient(f"{address}:{grpc_port}")
    tensor = grpcclient.InferInput("input", list(golden["min.in.input"].shape), "FP32")
    tensor.set_data_from_numpy(golden["min.in.input"].astype(np.float32))
    logits = client.infer("mnist", [tensor]).as_numpy("logits")
    assert np.allclose(logits.ravel(), golden["min.out.logits"].ravel(), atol=1e-4), "gRPC through the gateway"

    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in _triton_pods() if pod_ready(p)}

    def served_through_gateway(seconds: float) -> tuple[Load, dict[str, float]]:
        before = {name: requests_served(ip) for name, ip in pods.items()}
        load = Load(url, golden["min.in.input"], GATEWAY_CLIENTS, seconds).start()
        load.wait()
        return load, {name: requests_served(ip) - before[name] for name, ip in pods.items()}

    # A pod that became Ready a moment ago joins Envoy's rotation once its active health checks pass, then ramps up
    # over the slow-start window: wait until every pod takes requests, then measure the spread.
    started = time.monotonic()
    assert wait_for(lambda: min(served_through_gateway(2)[1].values()) > 0, 120), "a Triton pod never got a request"
    in_rotation_s = round(time.monotonic() - started)
    load, served = served_through_gateway(GATEWAY_S)
    assert load.failed == 0, f"{load.failed} of {load.sent + load.failed} requests through the gateway failed"
    assert min(served.values()) >= 0.25 * sum(served.values()) / len(served), f"not spread over every pod: {served}"
    spread = "/".join(f"{n:.0f}" for n in served.values())
    SUMMARY["gateway"] = (
        f"HTTP and gRPC ok, every pod in rotation after {in_rotation_s} s, {load.sent} requests spread {spread}"
    )


def test_kube_state_metrics_runs_for_real_and_reports_the_triton_deployment_and_hpa() -> None:
    """The chart's kube-state-metrics pod runs the real program (in-cluster config through the kubernetes
    Service's ClusterIP, its service-account token projected): what the HPA alerts are computed from."""
    (pod,) = kube_items("pods", "-A", "-l", "app.kubernetes.io/name=kube-state-metrics")
    assert wait_for(lambda: pod_ready(kubectl_json("pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"])))
    address = kubectl_json("pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"])["status"]["podIP"]
    available = triton_deployment()["status"]["availableReplicas"]
    expected = {
        f'kube_deployment_status_replicas_available{{namespace="triton",deployment="triton"}} {available}',
        'kube_horizontalpodautoscaler_spec_max_replicas{namespace="triton",horizontalpodautoscaler="triton"} 3',
    }

    def reported() -> bool:
        with urllib.request.urlopen(f"http://{address}:8080/metrics", timeout=10) as response:
            return expected <= set(response.read().decode().splitlines())

    assert wait_for(reported, 60), f"kube-state-metrics at {address} did not report {expected}"


def prometheus_query(path: str) -> dict:
    """The real Prometheus's HTTP API, through its Service's ClusterIP (kube-proxy)."""
    (service,) = [
        s for s in kube_items("services", "-n", "monitoring") if s["metadata"]["name"].endswith("-prometheus")
    ]
    url = f"http://{service['spec']['clusterIP']}:9090{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response)["data"])


def test_prometheus_scrapes_every_triton_pod_and_records_queue_time_per_pod() -> None:
    """The real operator rendered Prometheus's configuration from our PodMonitor and PrometheusRule: the real
    Prometheus has every Triton pod as a target, up, and the recording rule the adapter reads, per pod."""
    triton = {p["metadata"]["name"] for p in kube_items("pods", "-n", "triton", "-l", "app.kubernetes.io/name=triton")}

    def scraped() -> set[str]:
        targets = prometheus_query("/api/v1/targets?state=active")["activeTargets"]
        return {t["labels"].get("pod", "") for t in targets if t["health"] == "up" and "triton" in t["scrapePool"]}

    assert wait_for(lambda: triton <= scraped(), 180), f"Triton pods {triton}, scraped up: {scraped()}"
    query = urllib.parse.quote(f"{QUEUE_RULE}{{namespace='triton'}}")

    def recorded() -> set[str]:
        return {r["metric"]["pod"] for r in prometheus_query(f"/api/v1/query?query={query}")["result"]}

    assert wait_for(lambda: triton <= recorded(), 120), f"{QUEUE_RULE} for {recorded()}, not every pod of {triton}"


def test_the_adapter_publishes_queue_time_per_pod_and_the_hpa_reads_it() -> None:
    """prometheus-adapter (real, behind its APIService) serves the recorded queue time per Triton pod on the
    custom metrics API; the real HPA controller reads it into the HPA's status."""
    triton = {p["metadata"]["name"] for p in kube_items("pods", "-n", "triton", "-l", "app.kubernetes.io/name=triton")}
    path = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/triton/pods/*/{QUEUE_TIME_METRIC}"

    def published() -> set[str]:
        try:
            items = json.loads(kubectl("get", "--raw", path))["items"]
        except AssertionError:  # the APIService is not available yet
            return set()
        return {item["describedObject"]["name"] for item in items}

    assert wait_for(lambda: triton <= published(), 180), f"the custom metrics API has {published()}, not {triton}"

    def read_by_hpa() -> bool:
        (hpa,) = kube_items("hpa", "-n", "triton")
        current = hpa.get("status", {}).get("currentMetrics") or []
        return any(m.get("pods", {}).get("metric", {}).get("name") == QUEUE_TIME_METRIC for m in current)

    assert wait_for(read_by_hpa, 120), f"the HPA never read {QUEUE_TIME_METRIC}: {kube_items('hpa', '-n', 'triton')}"
    SUMMARY["custom_metrics"] = "ok"


def _recorded_queue_time_us() -> dict[str, float]:
    query = urllib.parse.quote(f"{QUEUE_RULE}{{namespace='triton'}}")
    results = prometheus_query(f"/api/v1/query?query={query}")["result"]
    return {r["metric"]["pod"]: float(r["value"][1]) for r in results}


def _triton_pods() -> list[dict]:
    return kube_items("pods", "-n", "triton", "-l", "app.kubernetes.io/name=triton")


def test_load_scales_triton_out_through_the_whole_loop_and_back_in_when_it_stops() -> None:
    """Seed 001's loop, for real: a bounded load raises Triton's queue time, Prometheus records it, the adapter
    publishes it, the HPA adds replicas, kwok binds the new pods, the runner brings up Triton in them and they
    serve part of the load (their own request counters), and the alerts of an overloaded, maxed-out Triton fire;
    once the load stops, the HPA scales back in."""
    spec = json.loads(kubectl("get", "service", "triton", "-n", "triton", "-o", "json"))["spec"]
    golden = np.load(ROOT / BUILD_DIR / "mnist" / "golden.npz")
    url = f"http://{spec['clusterIP']}:{HTTP_PORT}/v2/models/mnist/infer"

    # From idle: the earlier tests' few requests have left the rule's window, the HPA is back at its minimum and
    # the alerts they may have fired have resolved, so what happens below is this load's doing and nothing else.
    def idle() -> bool:
        at_minimum = int(triton_deployment()["spec"].get("replicas", 0)) == MIN_REPLICAS
        queue_empty = max(_recorded_queue_time_us().values(), default=0.0) == 0.0
        return at_minimum and queue_empty and not _firing_alerts() & set(LOAD_ALERTS)

    assert wait_for(idle, 300), f"Triton never idle before the load: {_recorded_queue_time_us()}, {_firing_alerts()}"
    before = set(p["metadata"]["name"] for p in _triton_pods())
    idle_queue_us = max(_recorded_queue_time_us().values(), default=0.0)
    load = Load(url, golden["min.in.input"], LOAD_CLIENTS, LOAD_S).start()
    started, timeline, peak_queue_us, peak_model_us, replicas = time.monotonic(), {}, 0.0, 0.0, MIN_REPLICAS
    while time.monotonic() - started < LOAD_S:
        elapsed = round(time.monotonic() - started)
        peak_queue_us = max([peak_queue_us, *_recorded_queue_time_us().values()])
        replicas = max(replicas, int(triton_deployment()["spec"].get("replicas", 0)))
        if replicas > MIN_REPLICAS:
            timeline.setdefault("scale_up_s", elapsed)
        added = [p for p in _triton_pods() if p["metadata"]["name"] not in before and pod_ready(p)]
        if any(requests_served(p["status"]["podIP"]) > 0 for p in added):
            timeline.setdefault("traffic_s", elapsed)
        for alert in _firing_alerts() & set(LOAD_ALERTS):
            timeline.setdefault(alert, elapsed)
        peak_model_us = max([peak_model_us, *_model_queue_time_us()])
        time.sleep(3)
    load.wait()
    assert "scale_up_s" in timeline, f"no scale-up in {LOAD_S} s: peak queue {peak_queue_us:.0f} µs per request"
    assert "traffic_s" in timeline, f"the added pods never served a request: {timeline}"
    assert replicas == MAX_REPLICAS, f"the load scaled Triton to {replicas} replicas, not to {MAX_REPLICAS}"
    missing = set(LOAD_ALERTS) - timeline.keys()
    assert not missing, f"not firing under load: {missing} (queue time per request of the model: {peak_model_us} µs)"
    assert load.failed <= load.sent * 0.01, f"{load.failed} of {load.sent + load.failed} requests failed"
    stopped = time.monotonic()
    scaled_in = wait_for(lambda: int(triton_deployment()["spec"].get("replicas", 0)) == MIN_REPLICAS, 420)
    assert scaled_in, f"still {triton_deployment()['spec'].get('replicas')} replicas 7 min after the load stopped"
    timeline["scale_down_s"] = round(time.monotonic() - stopped)
    SUMMARY["autoscaling"] = (
        f"scale-up {timeline['scale_up_s']} s after load start, new pods serving at {timeline['traffic_s']} s, "
        f"{replicas} replicas, back to {MIN_REPLICAS} {timeline['scale_down_s']} s after load stop; queue time "
        f"{idle_queue_us / 1000:.1f} -> {peak_queue_us / 1000:.1f} ms per request (the model over all pods: "
        f"{peak_model_us / 1000:.2f} ms); {load.sent} requests; "
        + ", ".join(f"{alert} firing at {timeline[alert]} s" for alert in LOAD_ALERTS)
    )


def _model_queue_time_us() -> list[float]:
    """The queue time per request TritonQueueTimeAboveSlo compares with the SLO: per model, over every pod."""
    query = urllib.parse.quote(per_request(LATENCY_COUNTERS["queue"], ("namespace", "model"), ALERT_WINDOW))
    return [float(r["value"][1]) for r in prometheus_query(f"/api/v1/query?query={query}")["result"]]


def _firing_alerts() -> set[str]:
    """Names of the alerts the real Prometheus has firing for Triton's namespace."""
    alerts = prometheus_query("/api/v1/alerts")["alerts"]
    return {
        a["labels"]["alertname"] for a in alerts if a["state"] == "firing" and a["labels"].get("namespace") == "triton"
    }


def kubectl_json(kind: str, name: str, *args: str) -> dict:
    return json.loads(kubectl("get", kind, name, *args, "-o", "json"))


def _seconds_to_ready(pod: dict) -> float:
    """From the pod's creation to its Ready condition: scheduling, S3 read, Triton loading the models."""
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    created = datetime.datetime.fromisoformat(pod["metadata"]["creationTimestamp"])
    return (datetime.datetime.fromisoformat(ready["lastTransitionTime"]) - created).total_seconds()


def test_a_gpu_node_that_joins_later_gets_hamis_device_plugin() -> None:
    """GPU nodes are selected by their node-group label, not named: a node that joins after `up` (a replacement,
    a scale-out) runs HAMi's device plugin without anyone labelling it, and no Node was ever created by us."""
    import yaml

    from local_cluster.nodes import manifests, plan_for_stack

    config = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())["config"]
    plan = plan_for_stack({k.split(":", 1)[1]: v for k, v in config.items()}, gpu_node_count=3)
    joining = next(n for n in manifests(plan) if n["metadata"]["name"] == "gpu-node-3")
    before = _device_plugin_nodes()
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=json.dumps(joining),
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        assert wait_for(lambda: _device_plugin_nodes() == (before[0] + 1, before[1] + 1)), _device_plugin_nodes()
    finally:
        kubectl("delete", "node", "gpu-node-3", "--wait=true", timeout=120)
    assert wait_for(lambda: _device_plugin_nodes() == before), _device_plugin_nodes()


def test_noop_preview() -> None:
    result, seconds = pulumi("noop-preview", "preview", "--expect-no-changes", "--diff")
    assert result.returncode == 0, tail(result)
    SUMMARY["noop_s"] = round(seconds)


def test_refresh_changes_nothing() -> None:
    """`pulumi up --refresh` must not find drift in what the platform deployed (nor in the published repository,
    whose objects under the digest - the engine Job's too - have one owner: components/s3_publication.py)."""
    result, _ = pulumi("refresh", "refresh", "--yes", "--expect-no-changes")
    assert result.returncode == 0, tail(result)
    noop, _ = pulumi("refresh-noop", "preview", "--expect-no-changes", "--diff")
    assert noop.returncode == 0, tail(noop)


HAND_EDITS = {  # what an operator does during an incident, with kubectl's own field manager
    "autoscaling-hpa": ("hpa", "triton", '{"spec":{"maxReplicas":7}}', "{.spec.maxReplicas}"),
    "triton-deployment": (
        "deployment",
        "triton",
        '{"spec":{"template":{"spec":{"containers":[{"name":"triton","image":"nvcr.io/nvidia/tritonserver:26.06-py3"}]}}}}',
        "{.spec.template.spec.containers[0].image}",
    ),
    "triton-ingress": ("networkpolicy", "triton-ingress", '{"spec":{"ingress":[]}}', "{.spec.ingress}"),
}


def _live(kind: str, name: str, path: str) -> str:
    return kubectl("get", kind, name, "-n", "triton", "-o", f"jsonpath={path}")


def test_hand_edits_show_as_drift_and_up_restores_the_declared_state() -> None:
    """Server-side apply used to stop on kubectl's field manager (`conflict with "kubectl-patch"`) and leave the
    edit in place; the platform's objects are applied with force (components/kube.py), so its state wins."""
    declared = {name: _live(kind, obj, path) for name, (kind, obj, _, path) in HAND_EDITS.items()}
    for kind, obj, patch, _ in HAND_EDITS.values():
        kubectl("patch", kind, obj, "-n", "triton", "--type", "strategic", "-p", patch)
    assert all(_live(k, o, p) != declared[n] for n, (k, o, _, p) in HAND_EDITS.items())
    # Triton's pods are real: the edited image rolls them for a while. A refresh during that rollout would find
    # the Service and Deployment still converging (an update of its own), so the drift is previewed once it ends.
    kubectl("rollout", "status", "deployment/triton", "-n", "triton", "--timeout=300s", timeout=320)
    drift, _ = pulumi("drift-preview", "preview", "--refresh", "--diff")
    assert drift.returncode == 0, tail(drift)
    assert f"~ {len(HAND_EDITS)} to update" in drift.stdout, tail(drift, 80)
    for name in HAND_EDITS:  # each edited object is among the updates, by its URN
        assert f"::{name}]" in drift.stdout, tail(drift, 80)
    restore, _ = pulumi("drift-up", "up", "--refresh", "--yes", "--skip-preview")
    assert restore.returncode == 0, tail(restore)
    assert {name: _live(kind, obj, path) for name, (kind, obj, _, path) in HAND_EDITS.items()} == declared
    noop, _ = pulumi("drift-noop", "preview", "--expect-no-changes", "--diff")
    assert noop.returncode == 0, tail(noop)
    SUMMARY["drift"] = f"{len(HAND_EDITS)} hand edits restored"


def test_model_change_rolls_without_losing_capacity() -> None:
    old = served_digest()
    new = build_models(epochs=2)
    assert new != old
    ready: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            ready.append(int(triton_deployment()["status"].get("readyReplicas", 0)))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result, seconds = pulumi("model-change", "up", "--yes", "--skip-preview")
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, tail(result)
    assert served_digest() == new
    assert min(ready) >= MIN_REPLICAS, f"ready replicas fell to {min(ready)} during the rollout"
    SUMMARY.update(rollout="ok", rollout_s=round(seconds), min_ready=min(ready))


def test_killed_up_recovers() -> None:
    """README Troubleshooting, 'An interrupted pulumi up': cancel (drops the dead run's lock), refresh clearing
    pending creates, then up."""
    build_models(epochs=3)
    log = log_path("killed-up").open("w")
    process = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview", "--stack", STACK, "--non-interactive"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while "creating" not in log_path("killed-up").read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    cancel, _ = pulumi("recover-cancel", "cancel", "--yes")
    assert cancel.returncode == 0, tail(cancel)
    refresh, _ = pulumi("recover-refresh", "refresh", "--yes", "--clear-pending-creates")
    assert refresh.returncode == 0, tail(refresh)
    up, _ = pulumi("recover-up", "up", "--yes", "--skip-preview")
    assert up.returncode == 0, tail(up)
    noop, _ = pulumi("recover-noop", "preview", "--expect-no-changes", "--diff")
    assert noop.returncode == 0, tail(noop)
    SUMMARY["recovery"] = "ok"


def _build(stack: str, out: str) -> None:
    build = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "model_pipeline",
            "build",
            "--stack",
            stack,
            "--out",
            out,
            "--epochs",
            "1",
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-2000:]


def _aimed_at_the_simulated_cluster(stack: str, tmp_path, build_dir: str) -> str:
    """A copy of the stack's file whose cluster and sources are the local ones, for a stack of the cluster's
    backend. `stack init` writes its salt into Pulumi.<stack>.yaml: the copy keeps it, the file is restored."""
    import yaml

    original = (ROOT / f"Pulumi.{stack}.yaml").read_bytes()
    try:
        subprocess.run(["pulumi", "stack", "init", stack, "--non-interactive"], cwd=ROOT, capture_output=True)
        document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    finally:
        (ROOT / f"Pulumi.{stack}.yaml").write_bytes(original)
    local = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]
    config = document["config"]
    for key in ("inference-platform:kubernetes", "inference-platform:sources"):
        config[key] = local[key]
    repository = config.setdefault("inference-platform:modelRepository", {})
    repository["buildDir"] = build_dir
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def _preview_elsewhere(stack: str, tmp_path) -> subprocess.CompletedProcess[str]:
    """`pulumi preview` of another stack's file, with that stack's models built, aimed at the simulated cluster."""
    models = str(tmp_path / f"{stack}-models")
    _build(stack, models)
    config_file = _aimed_at_the_simulated_cluster(stack, tmp_path, models)
    command = ["pulumi", "preview", "--stack", stack, "--non-interactive", "--config-file", config_file]
    result = subprocess.run(command, cwd=ROOT, text=True, capture_output=True, timeout=900)
    log_path(f"preview-{stack}").write_text(result.stdout + result.stderr)
    return result


def test_dev_previews_on_the_real_engine(tmp_path) -> None:
    """dev declares nothing of pulumi-aws (publication is a dynamic provider): its whole preview runs."""
    result = _preview_elsewhere("dev", tmp_path)
    assert result.returncode == 0, tail(result)
    SUMMARY["dev_preview"] = "ok"


def test_prod_previews_as_far_as_the_aws_plugin_allows(tmp_path) -> None:
    """prod's bucket and IRSA roles need pulumi-aws, whose plugin cannot be built here: the preview must stop at
    exactly that, and nothing else."""
    result = _preview_elsewhere("prod", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no resource plugin 'pulumi-resource-aws' found" in output, tail(result)
    # The engine then shuts the program down (a RunError traceback may follow); none of the program's own errors
    # (printed as their message alone: components/errors.py).
    own = ("invalid stack configuration", "is not built (no manifest.json)", "is stale:", "ModelRepositoryError")
    assert not any(e in output for e in own), tail(result)
    SUMMARY["prod_preview"] = "stops at the aws plugin"


def test_destroy_leaves_nothing(before_up: dict[str, set[str]]) -> None:
    """Not even the charts' CRDs: Helm never deletes a crds/ folder, so Pulumi owns those (chart_crds.py)."""
    result, seconds = pulumi("destroy", "destroy", "--yes")
    assert result.returncode == 0, tail(result)
    new = {kind: sorted(names - before_up[kind]) for kind, names in cluster_scoped_names().items()}
    left = {kind: names for kind, names in new.items() if names}
    helm = kube_items("secrets", "-A", "-l", "owner=helm")
    SUMMARY.update(destroy_s=round(seconds), left=sum(len(n) for n in left.values()) + len(helm))
    assert not left and not helm, f"left behind: {left}, helm records {[s['metadata']['name'] for s in helm]}"
