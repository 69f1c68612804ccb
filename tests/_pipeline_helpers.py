"""Small, fast model repositories for the repository/publish/CLI tests: tiny ONNX graphs built with onnx.helper."""

from __future__ import annotations

import hashlib
import json
import math
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.repository import ModelArtifacts, TensorRTStatus, collect_tool_versions, write_repository
from model_pipeline.specs import Bounds, DynamicBatching, ModelSpec, TensorSpec

ONNX_TYPES = {"FP32": TensorProto.FLOAT, "FP16": TensorProto.FLOAT16, "INT64": TensorProto.INT64}


def tiny_spec(name: str = "tiny", in_dims: tuple[int, ...] = (1, 4, 4), classes: int = 3) -> ModelSpec:
    """An MNIST-shaped spec small enough to run instantly: FP32 [1,4,4] -> logits [3], batch 1/2/4."""
    return ModelSpec(
        name=name,
        inputs=(TensorSpec("input", "FP32", in_dims),),
        outputs=(TensorSpec("logits", "FP32", (classes,)),),
        batch=Bounds(1, 2, 4),
        dynamic_batching=DynamicBatching((2, 4), 50),
    )


def tiny_onnx(
    path: Path,
    spec: ModelSpec,
    *,
    input_name: str | None = None,
    input_dims: tuple[int, ...] | None = None,
    input_type: str = "FP32",
    batch_dim: str | int = "batch",
    seed: int = 0,
) -> Path:
    """A Flatten -> MatMul graph with the spec's tensor names; keyword overrides produce deliberate mismatches."""
    dims = input_dims if input_dims is not None else spec.inputs[0].dims
    out = spec.outputs[0]
    weights = np.random.default_rng(seed).standard_normal((math.prod(dims), out.dims[0])).astype(np.float32)
    name = input_name or spec.inputs[0].name
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [name], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], [out.name]),
        ],
        "tiny",
        [helper.make_tensor_value_info(name, ONNX_TYPES[input_type], [batch_dim, *dims])],
        [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, ["batch", *out.dims])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime 1.31 reads IR <= 10; keep a conservative one
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def golden_for(spec: ModelSpec, onnx_path: Path, path: Path) -> Path:
    """golden.npz as the build writes it: verification inputs and ONNX Runtime's outputs for them."""
    from model_pipeline.verification import reference_cases, verification_inputs, write_golden

    return write_golden(spec.name, reference_cases(spec, onnx_path, verification_inputs(spec)), path)


def tiny_artifacts(work: Path, spec: ModelSpec, seed: int = 0) -> ModelArtifacts:
    """ONNX + golden file for ``spec`` under ``work`` (golden outputs computed by ONNX Runtime)."""
    onnx_path = tiny_onnx(work / spec.name / "model.onnx", spec, seed=seed)
    golden = golden_for(spec, onnx_path, work / spec.name / "golden.npz")
    skipped = TensorRTStatus("skipped", reason="test: no TensorRT")
    return ModelArtifacts(spec, onnx_path, golden, skipped, accuracy=None, weights="random (test)")


def tiny_repository(tmp_path: Path, names: tuple[str, ...] = ("tiny",), seed: int = 0) -> Path:
    """A complete, verified repository with one tiny model per name."""
    work = tmp_path / f"artifacts-{seed}"
    artifacts = [tiny_artifacts(work, tiny_spec(name), seed) for name in names]
    out = tmp_path / f"repo-{seed}"
    write_repository(out, artifacts, collect_tool_versions())
    return out


def isolate_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy keys for moto, and no developer AWS profile or config leaking into a test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata service


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's S3 HTTP server on a free 127.0.0.1 port; yields its endpoint URL and stops it afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def rehash(repo: Path, rel: str) -> None:
    """Make the manifest agree with an edited file, as an attacker or a careless hand-edit would."""
    from model_pipeline.digest import content_digest
    from model_pipeline.repository import write_manifest

    manifest = json.loads((repo / "manifest.json").read_text())
    data = (repo / rel).read_bytes()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest["digest"] = content_digest(manifest["files"])
    write_manifest(repo, manifest)


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A quiet HTTP server on 127.0.0.1 serving ``directory``; yields its base URL and stops it afterwards."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
