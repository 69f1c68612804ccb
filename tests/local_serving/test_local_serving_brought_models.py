"""Brought models on the real Triton: typed inputs, several outputs, no batch dimension, a batch-only label, and a
dynamic sequence axis under the dynamic batcher (tests/local_serving/brought_models.py builds them)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from local_serving.errors import ToolMissingError
from local_serving.installation import find_prometheus, find_triton
from local_serving.load import LoadSettings, run_load, workload_for
from local_serving.ports import free_port
from local_serving.triton import TritonPorts, TritonServer, counter_values, read_metrics
from local_serving.wrappers import discover_models, write_serving_repository
from tests.local_serving.brought_models import MODELS, build_brought_repository
from tests.paths import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    try:
        find_triton()
        find_prometheus()
    except ToolMissingError as error:
        pytest.skip(f"local serving tools missing: {error}")
    return build_brought_repository(tmp_path_factory.mktemp("brought"))


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    work = tmp_path_factory.mktemp("brought-serving")
    write_serving_repository(repository, work / "serving")
    with TritonServer(work / "serving", work / "triton", TritonPorts(free_port(), free_port(), free_port())) as server:
        yield server


def _demo(repository, report):
    ports = [f"--{name}-port={free_port()}" for name in ("http", "grpc", "metrics", "prometheus")]
    command = [sys.executable, "-m", "local_serving", "demo", f"--repository={repository}", *ports]
    command += ["--duration=0.5", "--concurrency=4", "--scrape-interval=1s", "--rule-window=10s"]
    command += ["--target-queue-time-ms=50", "--min-replicas=1", "--max-replicas=2", f"--out={report}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_the_demo_drives_every_model_with_its_golden_inputs_and_every_answer_equals_onnx_runtime(repository, tmp_path):
    demo = _demo(repository, tmp_path / "report.json")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = {line.split(":")[0].strip(): line for line in demo.stdout.splitlines() if " over " in line}
    for model in MODELS:
        for protocol in ("http", "grpc"):
            line = lines[f"{model} over {protocol}"]
            assert " 0 errors)" in line and line.endswith("equal to ONNX Runtime 100.00%"), line
    loads = json.loads((tmp_path / "report.json").read_text())["load"]
    assert all(load["requests"] > 0 and load["matches_reference"] == 1.0 for load in loads)


def test_an_output_that_is_only_the_batch_reaches_the_client_in_the_configs_shape(triton):
    """config.pbtxt declares the label [1] with reshape []: the model answers [N], the client gets [N, 1]."""
    import tritonclient.grpc as grpc_client
    import tritonclient.http as http_client

    features = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    for module, url in ((http_client, triton.http_url), (grpc_client, triton.grpc_url)):
        request = module.InferInput("x", list(features.shape), "FP32")
        request.set_data_from_numpy(features)
        label = module.InferenceServerClient(url).infer("labeller", [request]).as_numpy("label")
        assert label.shape == (5, 1) and label.dtype == np.int64
        assert np.array_equal(label[:, 0], features.argmax(axis=1))


def test_requests_of_different_sequence_lengths_are_batched_and_each_answered_right(triton, repository):
    model = next(m for m in discover_models(repository) if m.name == "tokens")
    workload = workload_for(model)
    before = read_metrics(triton.metrics_url)
    result = run_load(workload, LoadSettings("grpc", triton.grpc_url, concurrency=8, duration_s=1.5, batch_size=2))
    after = read_metrics(triton.metrics_url)

    def delta(metric):
        return counter_values(after, metric, "tokens") - counter_values(before, metric, "tokens")

    summary = result.summary()
    assert summary["errors"] == 0 and summary["matches_reference"] == 1.0, summary["first_errors"]
    assert delta("nv_inference_request_success") == result.requests > 0
    # Fewer executions than requests: the dynamic batcher did combine requests, while sequence lengths varied.
    assert delta("nv_inference_exec_count") < result.requests
