"""Unit tests for local_serving: wrapper generation, adapter template filling, error messages. No servers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from local_serving.errors import LocalServingError, PortInUseError, ServingRepositoryError
from local_serving.load import LoadSettings
from local_serving.ports import ensure_free
from local_serving.prometheus import LOCAL_NAMESPACE, LOCAL_POD, ScrapeSettings, scrape_config
from local_serving.rules import adapter_rule, exposed_name, fill_metrics_query
from local_serving.triton import counter_values, explain_failure
from local_serving.wrappers import (
    UNBATCHED_SUFFIX,
    discover_models,
    read_config,
    wrapper_config,
    write_serving_repository,
)

PIPELINE_CONFIG = """
name: "mnist"
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "input" data_type: TYPE_FP32 dims: [1, 28, 28] }
output { name: "logits" data_type: TYPE_FP32 dims: [10] }
instance_group { count: 2 kind: KIND_GPU }
dynamic_batching { preferred_batch_size: [4, 8] max_queue_delay_microseconds: 100 }
optimization { execution_accelerators { gpu_execution_accelerator { name: "tensorrt" } } }
"""

ADAPTER_RULES = {
    "default": False,
    "custom": [
        {
            "seriesQuery": 'pod:triton_queue_time_us:per_request{namespace!="",pod!=""}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": "^pod:triton_queue_time_us:per_request$", "as": "triton_queue_time_per_request_us"},
            "metricsQuery": "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        }
    ],
}


def _repository(tmp_path: Path, config_text: str = PIPELINE_CONFIG, with_onnx: bool = True) -> Path:
    model_dir = tmp_path / "repo" / "mnist"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config_text)
    if with_onnx:
        (model_dir / "1" / "model.onnx").write_bytes(b"onnx bytes")
    return tmp_path / "repo"


def test_wrapper_config_keeps_name_tensors_batch_size_and_dynamic_batching():
    source = text_format.Parse(PIPELINE_CONFIG, mc.ModelConfig())
    wrapped = wrapper_config(source, "mnist")
    assert wrapped.name == "mnist"
    assert wrapped.backend == "python" and wrapped.platform == ""
    assert list(wrapped.input) == list(source.input) and list(wrapped.output) == list(source.output)
    assert wrapped.max_batch_size == 8
    assert list(wrapped.dynamic_batching.preferred_batch_size) == [4, 8]
    assert wrapped.dynamic_batching.max_queue_delay_microseconds == 100


def test_wrapper_config_runs_the_instances_on_cpu_and_drops_gpu_accelerators():
    wrapped = wrapper_config(text_format.Parse(PIPELINE_CONFIG, mc.ModelConfig()), "mnist")
    assert [(g.kind, g.count) for g in wrapped.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    assert not wrapped.HasField("optimization")


def test_serving_repository_links_the_same_onnx_and_adds_an_unbatched_variant(tmp_path):
    repository = _repository(tmp_path)
    served = write_serving_repository(repository, tmp_path / "serve", unbatched_variants=True)
    assert served == ["mnist", "mnist" + UNBATCHED_SUFFIX]
    onnx_link = tmp_path / "serve" / "mnist" / "1" / "model.onnx"
    assert onnx_link.resolve() == (repository / "mnist" / "1" / "model.onnx").resolve()
    assert (tmp_path / "serve" / "mnist" / "1" / "model.py").read_text().startswith('"""Triton python-backend')
    unbatched = read_config(tmp_path / "serve" / ("mnist" + UNBATCHED_SUFFIX) / "config.pbtxt")
    assert unbatched.name == "mnist" + UNBATCHED_SUFFIX
    assert not unbatched.HasField("dynamic_batching") and unbatched.max_batch_size == 8


def test_missing_repository_names_the_path_and_how_to_build_it(tmp_path):
    with pytest.raises(ServingRepositoryError, match=r"does-not-exist does not exist; build it"):
        discover_models(tmp_path / "does-not-exist")


def test_model_without_onnx_is_rejected_by_name(tmp_path):
    with pytest.raises(ServingRepositoryError, match=r"mnist has no <version>/model.onnx"):
        discover_models(_repository(tmp_path, with_onnx=False))


def test_config_that_triton_cannot_parse_is_rejected_with_the_file(tmp_path):
    with pytest.raises(ServingRepositoryError, match=r"config.pbtxt is not a valid Triton model config"):
        discover_models(_repository(tmp_path, PIPELINE_CONFIG.replace("preferred_batch_size", "preferred_sizes")))


def test_busy_port_is_reported_with_its_role_and_flag():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} on 127.0.0.1 \(Triton HTTP\).*--http-port"):
            ensure_free(port, "Triton HTTP", "--http-port")


def test_model_load_failure_shows_tritons_own_error_not_the_cpu_only_noise():
    log = "\n".join(
        [
            'E1123 14:47:06.239322 1 server.cc:241] "CudaDriverHelper has not been initialized."',
            "E1123 14:47:07.040826 1 model_lifecycle.cc:642] \"failed to load 'mnist' version 1: Internal: "
            'INVALID_PROTOBUF : Load model failed:Protobuf parsing failed.\\n\\nAt:\\n  model.py(27): initialize\\n"',
            "error: creating server: Internal - failed to load all models",
        ]
    )
    message = explain_failure(log)
    assert message.startswith("model 'mnist': Internal: INVALID_PROTOBUF")
    assert "CudaDriverHelper" not in message


def test_adapter_query_is_filled_as_the_adapter_fills_a_pods_metric():
    rule = adapter_rule(ADAPTER_RULES)
    query = fill_metrics_query(rule, "local", ["triton-0", "triton-1"])
    assert query == 'max(pod:triton_queue_time_us:per_request{namespace="local",pod=~"triton-0|triton-1"}) by (pod)'


def test_adapter_rule_lookup_says_what_is_exposed_when_the_metric_is_missing():
    with pytest.raises(LocalServingError, match=r"expose \['triton_queue_time_per_request_us'\], not other"):
        adapter_rule(ADAPTER_RULES, "other")


def test_unknown_template_field_is_an_error_not_left_in_the_query():
    rule = {**ADAPTER_RULES["custom"][0], "metricsQuery": "sum(<<.Series>>{<<.LabelValuesByName>>})"}
    with pytest.raises(LocalServingError, match=r"LabelValuesByName"):
        fill_metrics_query(rule, "local", ["p"])


@pytest.mark.parametrize(
    ("naming", "expected"),
    [
        ({"matches": "^(.*)_total$"}, "requests"),
        ({"matches": "^(.*)_total$", "as": "${1}_per_second"}, "requests_per_second"),
        ({}, "requests_total"),
    ],
)
def test_exposed_metric_name_follows_the_adapter_naming_rules(naming, expected):
    assert exposed_name({"name": naming}, "requests_total") == expected


def test_scrape_config_targets_loopback_with_the_pod_labels_the_rules_group_by():
    config = scrape_config(18002, ScrapeSettings("1s", "1s"), ["/tmp/rules.yml"])
    job = config["scrape_configs"][0]
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:18002"], "labels": {"namespace": LOCAL_NAMESPACE, "pod": LOCAL_POD}}
    ]
    assert config["global"]["evaluation_interval"] == "1s" and config["rule_files"] == ["/tmp/rules.yml"]


def test_counter_values_sum_one_models_series_only():
    text = (
        'nv_inference_queue_duration_us{model="mnist",version="1"} 120\n'
        'nv_inference_queue_duration_us{model="mnist",version="2"} 30\n'
        'nv_inference_queue_duration_us{model="mnist_big",version="1"} 999\n'
    )
    assert counter_values(text, "nv_inference_queue_duration_us", "mnist") == 150


def test_load_settings_reject_unbounded_or_meaningless_runs():
    with pytest.raises(LocalServingError, match=r"protocol 'udp'.*concurrency \(0\).*duration \(0s\)"):
        LoadSettings(protocol="udp", concurrency=0, duration_s=0).validate()


class _FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class _FakeResponse:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors or [], error


def _fake_backend_utils():
    import types

    import numpy as np

    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _FakeTensor
    module.InferenceResponse = _FakeResponse
    module.TritonError = str
    module.triton_string_to_numpy = {"TYPE_FP32": np.float32}.__getitem__
    module.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])
    return module


def test_onnx_wrapper_answers_each_batched_request_with_its_own_rows(tmp_path, monkeypatch):
    import importlib.util
    import json

    import numpy as np
    import onnx
    import onnxruntime as ort

    from local_serving.sample_repository import mnist_onnx
    from local_serving.wrappers import TEMPLATES

    rng = np.random.default_rng(0)
    model = mnist_onnx(rng.standard_normal((784, 10)).astype(np.float32), rng.standard_normal(10).astype(np.float32))
    (tmp_path / "1").mkdir()
    onnx.save(model, tmp_path / "1" / "model.onnx")
    monkeypatch.setitem(__import__("sys").modules, "triton_python_backend_utils", _fake_backend_utils())
    spec = importlib.util.spec_from_file_location("wrapper_under_test", TEMPLATES / "onnx_wrapper.py")
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    config = {
        "max_batch_size": 8,
        "input": [{"name": "input", "data_type": "TYPE_FP32"}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32"}],
    }
    instance = wrapper.TritonPythonModel()
    instance.initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"})

    requests = [{"input": rng.random((size, 1, 28, 28), dtype=np.float32)} for size in (1, 3, 2)]
    responses = instance.execute(requests)

    session = ort.InferenceSession(str(tmp_path / "1" / "model.onnx"))
    for request, response in zip(requests, responses, strict=True):
        assert response.error is None
        (expected,) = session.run(["logits"], request)
        np.testing.assert_allclose(response.output_tensors[0].as_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_port_left_in_time_wait_is_free_but_a_listener_is_not() -> None:
    """`make serve` right after a clean stop: the server's closed connections sit in TIME_WAIT for a minute."""
    from local_serving.errors import PortInUseError
    from local_serving.ports import free_port

    port = free_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    with pytest.raises(PortInUseError, match=f"port {port}"):
        ensure_free(port, "Triton HTTP", "--http-port")
    accepted.close()  # the server closes first: its side of the connection enters TIME_WAIT
    client.close()
    server.close()
    ensure_free(port, "Triton HTTP", "--http-port")
