"""The serving loop for real: Triton (nvidia-pytriton's tritonserver) and Prometheus on 127.0.0.1.

Rules come from the program's own builders with 1s intervals. Tests run in file order against one stack:
idle first (queue time 0, not NaN), then load (recorded value equals Triton's counters), then the slow model
(alert pending/firing, HPA above minimum), then the answers themselves.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from local_serving.errors import ModelLoadError, ToolMissingError
from local_serving.installation import find_prometheus, find_triton
from local_serving.load import LoadSettings, echo_workload, onnxruntime_outputs, run_load, workload_for
from local_serving.ports import free_port
from local_serving.prometheus import LOCAL_NAMESPACE, LOCAL_POD, ScrapeSettings
from local_serving.report import AutoscalingTarget, build_report, desired_replicas
from local_serving.rules import QUEUE_TIME_POD, QUEUE_TIME_POD_MODEL, adapter_rule, fill_metrics_query
from local_serving.runner import LocalStack, RunSettings
from local_serving.triton import TritonPorts, TritonServer, counter_values, read_metrics
from local_serving.wrappers import discover_models, write_serving_repository
from tests.paths import ROOT

pytestmark = pytest.mark.integration

INTERVAL = "1s"
# Covers a whole 3s load phase plus idle samples on both sides, and is short enough that the MNIST phase
# has left the window while the slow model is loaded (the pod-level average would otherwise dilute it).
WINDOW = "10s"
SLOW_SLEEP_MS = 300.0
POD = {"namespace": LOCAL_NAMESPACE, "pod": LOCAL_POD}


def _require_servers():
    try:
        find_triton()
        find_prometheus()
    except ToolMissingError as error:
        pytest.skip(f"local serving tools missing: {error}")


def _require_rule_builders():
    pytest.importorskip("components.prometheus_rules", reason="components/prometheus_rules.py not present")
    pytest.importorskip("components.autoscaling", reason="components/autoscaling.py not present")


def _fast_alert_settings():
    """The monitoring defaults evaluated every second over the test's window, aimed at the local scrape job."""
    from components import prometheus_rules

    return prometheus_rules.AlertSettings(interval=INTERVAL, window=WINDOW, namespace=LOCAL_NAMESPACE, job="triton")


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    _require_servers()
    from local_serving.sample_repository import write_sample_repository

    return write_sample_repository(tmp_path_factory.mktemp("local-serving") / "repo")


@pytest.fixture(scope="module")
def stack(repository):
    _require_rule_builders()
    settings = RunSettings(
        repository=repository,
        triton_ports=TritonPorts(free_port(), free_port(), free_port()),
        prometheus_port=free_port(),
        scrape=ScrapeSettings(INTERVAL, INTERVAL),
        rule_window=WINDOW,
        alert_settings=_fast_alert_settings(),
        sleeping_models={"slow": SLOW_SLEEP_MS},
    )
    with LocalStack(settings) as running:
        yield running


def _recorded(stack, record, labels):
    return stack.client.query_value(record, {**POD, **labels})


def _wait_for_scrape_of(stack, model, success_count):
    """Block until Prometheus holds a sample with Triton's current success count, then one more evaluation."""
    expr = f'sum(nv_inference_request_success{{model="{model}"}})'
    stack.client.wait_for(
        f"a scrape showing {success_count} successes of {model}",
        lambda: stack.client.query_value(expr) == success_count,
        timeout_s=15,
    )
    time.sleep(2.5)  # two 1s rule evaluations after that scrape


def test_idle_queue_time_is_zero_not_nan(stack):
    value = stack.client.wait_for(
        "the first recorded queue time",
        lambda: _recorded(stack, QUEUE_TIME_POD_MODEL, {"model": "mnist"}) is not None,
        timeout_s=20,
    )
    assert value
    for labels, record in (
        ({"model": "mnist"}, QUEUE_TIME_POD_MODEL),
        ({"model": "slow"}, QUEUE_TIME_POD_MODEL),
        ({}, QUEUE_TIME_POD),
    ):
        recorded = _recorded(stack, record, labels)
        assert recorded is not None and not math.isnan(recorded)
        assert recorded == 0.0


def test_recorded_queue_time_equals_what_tritons_counters_imply(stack):
    before = read_metrics(stack.triton.metrics_url)
    workload = workload_for(stack.source_models[0])
    result = run_load(workload, LoadSettings("grpc", stack.triton.grpc_url, concurrency=4, duration_s=3, batch_size=2))
    after = read_metrics(stack.triton.metrics_url)

    def delta(metric):
        return counter_values(after, metric, "mnist") - counter_values(before, metric, "mnist")

    successes, queued_us = delta("nv_inference_request_success"), delta("nv_inference_queue_duration_us")
    assert successes == result.requests > 0 and queued_us > 0
    # Two samples per request: a rule dividing by nv_inference_count would be off by 2x here.
    assert delta("nv_inference_count") == 2 * successes
    _wait_for_scrape_of(stack, "mnist", counter_values(after, "nv_inference_request_success", "mnist"))
    expected = queued_us / successes
    # increase() extrapolates both counters over the same scrape timestamps, so the ratio is exact up to
    # Prometheus' zero-point clamp, which is identical here (both counters start at 0 on this fresh server).
    assert _recorded(stack, QUEUE_TIME_POD_MODEL, {"model": "mnist"}) == pytest.approx(expected, rel=1e-6)
    assert _recorded(stack, QUEUE_TIME_POD, {}) == pytest.approx(expected, rel=1e-6)


def _queue_alerts(stack):
    return [rule for rule in stack.client.alerting_rules() if "queue" in rule["name"].lower()]


def test_slow_model_sets_off_the_queue_time_alert_and_the_hpa_asks_for_more_replicas(stack):
    assert _queue_alerts(stack), "the platform's alert group has no queue-time alert"
    assert all(rule["state"] == "inactive" for rule in _queue_alerts(stack))
    slow = echo_workload("slow", "input", "output", np.arange(64, dtype=np.float32).reshape(64, 1))
    done = threading.Event()
    loader = threading.Thread(target=run_load, args=(slow, LoadSettings("grpc", stack.triton.grpc_url, 8, 25), done))
    query = fill_metrics_query(adapter_rule(_adapter_rules()), LOCAL_NAMESPACE, [LOCAL_POD])
    target = AutoscalingTarget(target_queue_time_ms=50, min_replicas=1, max_replicas=10)

    def replicas_asked_for():
        value = stack.client.query_value(query, {"pod": LOCAL_POD})
        return desired_replicas(target, value) if value is not None else None

    loader.start()
    try:
        active = stack.client.wait_for(
            "the queue-time alert to go pending or firing",
            lambda: [r for r in _queue_alerts(stack) if r["state"] in ("pending", "firing")],
            timeout_s=20,
        )
        replicas = stack.client.wait_for(
            "the HPA formula to ask for more than the minimum",
            lambda: (replicas_asked_for() or 0) > target.min_replicas and replicas_asked_for(),
            timeout_s=20,
        )
    finally:
        done.set()
        loader.join()
    assert any(alert["labels"].get("model") in ("slow", None) for rule in active for alert in rule["alerts"])
    # 8 clients, one 300 ms execution at a time: each request waits several hundred ms, far above 50 ms.
    assert replicas > target.min_replicas


def _adapter_rules():
    from local_serving.rules import platform_adapter_rules

    return platform_adapter_rules()


def test_served_outputs_equal_onnxruntimes_own_outputs_over_http_and_grpc(stack):
    import tritonclient.grpc as grpc_client
    import tritonclient.http as http_client

    model = stack.source_models[0]
    workload = workload_for(model)
    inputs = workload.pools[0].inputs["input"][:8]
    expected = onnxruntime_outputs(model.onnx_path, {"input": inputs}, ["logits"], batched=True)["logits"]
    for module, url in ((http_client, stack.triton.http_url), (grpc_client, stack.triton.grpc_url)):
        client = module.InferenceServerClient(url)
        request = module.InferInput("input", list(inputs.shape), "FP32")
        request.set_data_from_numpy(inputs)
        served = client.infer("mnist", [request]).as_numpy("logits")
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_load_step_reports_accuracy_latency_and_throughput_and_the_report_every_alert(stack):
    result = run_load(
        workload_for(stack.source_models[0]), LoadSettings("http", stack.triton.http_url, concurrency=2, duration_s=1.5)
    )
    summary = result.summary()
    assert summary["errors"] == 0 and summary["requests"] > 50
    assert summary["accuracy"] > 0.9 and summary["matches_reference"] == 1.0
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    report = build_report(
        stack.client,
        [result],
        ["mnist", "slow"],
        _adapter_rules(),
        AutoscalingTarget(target_queue_time_ms=50, min_replicas=1, max_replicas=10),
    )
    from components import prometheus_rules

    alert_names = {rule["alert"] for rule in prometheus_rules.alert_rule_group(_fast_alert_settings())["rules"]}
    assert {alert["alert"] for alert in report["alerts"]} == alert_names
    assert report["queue_time"]["per_model_us"]["slow"] > report["queue_time"]["per_model_us"]["mnist"]


def test_model_that_fails_to_load_stops_the_runner_with_tritons_error(repository, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(repository, broken)
    onnx_file = next((broken / "mnist").glob("*/model.onnx"))
    onnx_file.write_bytes(b"not an onnx graph")
    serving = tmp_path / "serving"
    write_serving_repository(broken, serving)
    server = TritonServer(serving, tmp_path / "triton", TritonPorts(free_port(), free_port(), free_port()))
    with pytest.raises(ModelLoadError, match=r"model 'mnist': .*INVALID_PROTOBUF"):
        server.start()
    assert server._process is None  # stopped, not left running
    assert discover_models(broken)[0].name == "mnist"


def _processes_with(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose arguments contain ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


def _serve_through_make(repository: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """`make serve` in a session of its own, as a supervisor runs it; returns once both servers are up."""
    http, prometheus = free_port(), free_port()
    flags = f"--http-port {http} --grpc-port {free_port()} --metrics-port {free_port()} --prometheus-port {prometheus}"
    log = tmp_path / "serve.log"
    make = subprocess.Popen(
        ["make", "-s", "serve", f"REPO_DIR={repository}", f"SERVE_ARGS={flags}"],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while "Ctrl-C stops both" not in log.read_text(errors="replace"):
        assert make.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)
    return make, f"--http-port={http}", prometheus


def _gone(marker: str, prometheus_port: int, within_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (
        left := _processes_with(marker) + _processes_with(f"127.0.0.1:{prometheus_port}")
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_supervisor_stopping_make_serve_stops_triton_and_prometheus(repository, tmp_path):
    """`timeout 40 make serve` signals make's whole process group, and make passes SIGTERM on: the runner got it
    twice, the second cut its cleanup short, and Triton stayed behind with parent 1, holding its ports."""
    make, triton_marker, prometheus_port = _serve_through_make(repository, tmp_path)
    os.killpg(make.pid, signal.SIGTERM)  # what timeout(1) does
    make.wait(timeout=60)
    assert _gone(triton_marker, prometheus_port) == []


def test_a_killed_runner_takes_its_servers_with_it(repository, tmp_path):
    """SIGKILL leaves no chance to clean up: the kernel's parent-death signal stops Triton and Prometheus."""
    make, triton_marker, prometheus_port = _serve_through_make(repository, tmp_path)
    os.killpg(make.pid, signal.SIGKILL)
    make.wait(timeout=10)
    assert _gone(triton_marker, prometheus_port) == []
