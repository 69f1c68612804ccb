"""Unit tests for local_serving: wrapper generation, adapter template filling, error messages. No servers."""

from __future__ import annotations

import socket
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from local_serving.errors import LocalServingError, PortInUseError, ServingRepositoryError
from local_serving.load import LoadSettings, matching_rows, workload_for
from local_serving.ports import ensure_free
from local_serving.prometheus import LOCAL_NAMESPACE, LOCAL_POD, ScrapeSettings, scrape_config
from local_serving.rules import adapter_rule, exposed_name, fill_metrics_query
from local_serving.triton import counter_values, explain_failure
from local_serving.workloads import client_shape
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


@pytest.fixture(scope="module")
def brought(tmp_path_factory) -> dict:
    """The brought models (two typed inputs, no batch dimension, a batch-only label), built by the pipeline."""
    from tests.local_serving.brought_models import build_brought_repository

    return {m.name: m for m in discover_models(build_brought_repository(tmp_path_factory.mktemp("brought")))}


def test_a_brought_model_is_driven_with_every_input_at_every_golden_shape(brought):
    import numpy as np

    workload = workload_for(brought["tokens"])
    assert workload.datatypes == {"input_ids": "INT64", "features": "FP32"}
    assert workload.outputs == ["scores", "mask"] and workload.batched
    assert [pool.inputs["input_ids"].shape for pool in workload.pools] == [(1, 2), (4, 4), (8, 8)]
    assert all(pool.reference["mask"].dtype == np.bool_ for pool in workload.pools)
    assert all(0 <= pool.inputs["input_ids"].min() <= pool.inputs["input_ids"].max() <= 9 for pool in workload.pools)


def test_an_output_that_is_only_the_batch_is_expected_in_the_configs_shape(brought):
    workload = workload_for(brought["labeller"])
    assert [pool.reference["label"].shape for pool in workload.pools] == [(1, 1), (4, 1), (8, 1)]


def test_a_model_without_a_batch_dimension_is_sent_whole(brought):
    workload = workload_for(brought["fixed"])
    assert not workload.batched and [pool.inputs["x"].shape for pool in workload.pools] == [(4, 3)]


def test_a_reshaped_tensor_keeps_its_variable_sizes_in_the_clients_shape():
    tensor = mc.ModelOutput(name="tokens", dims=[-1, 1], reshape=mc.ModelTensorReshape(shape=[-1]))
    assert client_shape(tensor, (3, 5), batched=True) == (3, 5, 1)
    assert client_shape(tensor, (5,), batched=False) == (5, 1)
    assert client_shape(mc.ModelOutput(name="plain", dims=[-1]), (3, 5), batched=True) == (3, 5)


def test_a_request_equals_the_reference_only_when_every_output_does():
    import numpy as np

    reference = {"scores": np.zeros((2, 3), np.float32), "label": np.array([[1], [2]])}
    served = {"scores": reference["scores"] + 1e-6, "label": np.array([[1], [3]])}
    assert matching_rows(served, reference, 2).tolist() == [True, False]
    assert matching_rows({**served, "label": np.array([1, 2])}, reference, 2).tolist() == [False, False]
    assert matching_rows({"scores": served["scores"]}, reference, 2).tolist() == [False, False]


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
    types_by_name = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_BOOL": np.bool_, "TYPE_STRING": np.object_}
    module.triton_string_to_numpy = types_by_name.__getitem__
    module.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])
    return module


def _wrapper_for(model: onnx.ModelProto, config: dict, directory: Path, monkeypatch):
    """The generated model.py, initialized for ``model`` as Triton's python backend would, with fake utils."""
    import importlib.util
    import json

    from local_serving.wrappers import TEMPLATES

    (directory / "1").mkdir(parents=True)
    onnx.save(model, directory / "1" / "model.onnx")
    monkeypatch.setitem(__import__("sys").modules, "triton_python_backend_utils", _fake_backend_utils())
    spec = importlib.util.spec_from_file_location("wrapper_under_test", TEMPLATES / "onnx_wrapper.py")
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    instance = wrapper.TritonPythonModel()
    instance.initialize({"model_config": json.dumps(config), "model_repository": str(directory), "model_version": "1"})
    return instance


def _config(max_batch_size: int, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    return {
        "max_batch_size": max_batch_size,
        "input": [{"name": name, "data_type": f"TYPE_{kind}"} for name, kind in inputs.items()],
        "output": [{"name": name, "data_type": f"TYPE_{kind}"} for name, kind in outputs.items()],
    }


def _answers(response) -> dict:
    assert response.error is None, response.error
    return {tensor.name: tensor.as_numpy() for tensor in response.output_tensors}


def test_onnx_wrapper_answers_each_batched_request_with_its_own_rows(tmp_path, monkeypatch):
    import numpy as np
    import onnxruntime as ort

    from local_serving.sample_repository import mnist_onnx

    rng = np.random.default_rng(0)
    model = mnist_onnx(rng.standard_normal((784, 10)).astype(np.float32), rng.standard_normal(10).astype(np.float32))
    instance = _wrapper_for(model, _config(8, {"input": "FP32"}, {"logits": "FP32"}), tmp_path, monkeypatch)

    requests = [{"input": rng.random((size, 1, 28, 28), dtype=np.float32)} for size in (1, 3, 2)]
    responses = instance.execute(requests)

    session = ort.InferenceSession(str(tmp_path / "1" / "model.onnx"))
    for request, response in zip(requests, responses, strict=True):
        (expected,) = session.run(["logits"], request)
        np.testing.assert_allclose(_answers(response)["logits"], expected, rtol=1e-5, atol=1e-6)


class _RecordingSession:
    """An ONNX Runtime session that remembers the input shapes of each run."""

    def __init__(self, session):
        self.session, self.runs = session, []

    def run(self, outputs, feeds):
        self.runs.append({name: array.shape for name, array in feeds.items()})
        return self.session.run(outputs, feeds)


def test_onnx_wrapper_runs_batched_requests_of_different_sequence_lengths_apart(tmp_path, monkeypatch):
    """Several inputs of different types, several outputs: one ONNX Runtime run per shape, never one mixing them."""
    import numpy as np
    import onnxruntime as ort

    from tests.local_serving.brought_models import tokens_onnx

    tokens_onnx(tmp_path / "tokens.onnx")
    model = onnx.load(tmp_path / "tokens.onnx")
    config = _config(8, {"input_ids": "INT64", "features": "FP32"}, {"scores": "FP32", "mask": "BOOL"})
    instance = _wrapper_for(model, config, tmp_path / "tokens", monkeypatch)
    instance.session = recording = _RecordingSession(instance.session)
    rng = np.random.default_rng(1)
    requests = [
        {"input_ids": rng.integers(0, 10, (rows, length)), "features": rng.random((rows, 4), dtype=np.float32)}
        for rows, length in ((1, 2), (2, 8), (1, 2), (3, 4))
    ]

    responses = instance.execute(requests)

    reference = ort.InferenceSession(str(tmp_path / "tokens.onnx"))
    for request, response in zip(requests, responses, strict=True):
        scores, mask = reference.run(["scores", "mask"], request)
        answers = _answers(response)
        np.testing.assert_allclose(answers["scores"], scores, rtol=1e-6)
        assert answers["mask"].dtype == np.bool_ and np.array_equal(answers["mask"], mask)
    assert sorted(run["input_ids"] for run in recording.runs) == [(2, 2), (2, 8), (3, 4)]


def test_onnx_wrapper_without_a_batch_dimension_answers_each_request_as_it_is(tmp_path, monkeypatch):
    import numpy as np

    from tests.local_serving.brought_models import fixed_onnx

    fixed_onnx(tmp_path / "fixed.onnx")
    instance = _wrapper_for(
        onnx.load(tmp_path / "fixed.onnx"), _config(0, {"x": "FP32"}, {"y": "FP32"}), tmp_path / "m", monkeypatch
    )
    requests = [{"x": np.full((4, 3), value, dtype=np.float32)} for value in (1.0, 2.0)]

    first, second = (_answers(response)["y"] for response in instance.execute(requests))

    assert first.shape == (4, 2) and np.allclose(second, 2 * first)


def test_onnx_wrapper_gives_onnx_runtime_strings_for_tritons_bytes(tmp_path, monkeypatch):
    import numpy as np

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    config = _config(4, {"text": "STRING"}, {"same": "STRING"})
    instance = _wrapper_for(model, config, tmp_path, monkeypatch)

    (response,) = instance.execute([{"text": np.array([[b"alpha"], [b"beta"]], dtype=np.object_)}])

    assert _answers(response)["same"].ravel().tolist() == ["alpha", "beta"]


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
