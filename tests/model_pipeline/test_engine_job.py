"""``python -m model_pipeline build-engine`` against moto's S3 server on 127.0.0.1 and the TensorRT TEST DOUBLE.

tests/fake_tensorrt.py is NOT TensorRT: these tests prove what the Job downloads, how it reacts to a plan that
passes or fails the golden check, and what it writes back into the published repository, in which form.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model_pipeline import cli, tensorrt_build
from model_pipeline.onnx_export import write_golden
from model_pipeline.publish import S3Location, make_s3_client, upload_repository
from model_pipeline.repository import ModelArtifacts, TensorRTStatus, collect_tool_versions, write_repository
from model_pipeline.specs import DEFAULT_SPECS
from model_pipeline.tensorrt_build import GpuInfo
from model_pipeline.triton_config import parse_config
from tests._pipeline_helpers import tiny_onnx
from tests.fake_tensorrt import PLAN_MARKER, make_fake_tensorrt
from tests.paths import ROOT

pytestmark = pytest.mark.tensorrt_double
MNIST = DEFAULT_SPECS["mnist"]
H100 = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


@pytest.fixture
def published(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """An MNIST-shaped repository (ONNX Runtime config, TensorRT pending) published to a fresh bucket."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    onnx_path = tiny_onnx(tmp_path / "work" / "model.onnx", MNIST)
    golden = write_golden(MNIST, onnx_path, tmp_path / "work" / "golden.npz")
    pending = TensorRTStatus("pending", reason="built by the engine-build Job in the cluster")
    repo = write_repository(
        tmp_path / "repo", [ModelArtifacts(MNIST, onnx_path, golden, pending)], collect_tool_versions()
    )
    bucket = f"engines-{tmp_path.name.lower().replace('_', '-')[-40:]}".strip("-")
    location = S3Location(bucket, "models", endpoint_url=s3_endpoint, region="us-east-1")
    client = make_s3_client(location)
    client.create_bucket(Bucket=bucket)
    result = upload_repository(repo.path, location, client=client)
    return f"s3://{bucket}/models/{result.digest}", client


def _install(monkeypatch: pytest.MonkeyPatch, version: str = "11.1.0.106", offset: float = 0.0) -> Any:
    fake = make_fake_tensorrt(version)
    fake.state.output_offset = offset
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_build, "detect_gpu", lambda: H100)
    monkeypatch.setattr(tensorrt_build, "CudaMemory", lambda: fake.memory)
    return fake


def _run(uri: str, endpoint: str, work: Path, *extra: str) -> int:
    return cli.main(
        [
            "build-engine",
            "--repository",
            uri,
            "--model",
            "mnist",
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "--work-dir",
            str(work),
            *extra,
        ]
    )


def _read(client: Any, uri: str, relative: str) -> bytes:
    bucket, root = uri.removeprefix("s3://").split("/", 1)
    return bytes(client.get_object(Bucket=bucket, Key=f"{root}/{relative}")["Body"].read())


def _exists(client: Any, uri: str, relative: str) -> bool:
    bucket, root = uri.removeprefix("s3://").split("/", 1)
    return "Contents" in client.list_objects_v2(Bucket=bucket, Prefix=f"{root}/{relative}")


def test_verified_engine_and_tensorrt_config_land_in_the_same_digest_prefix(
    published: tuple[str, Any], s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, client = published
    before = parse_config(_read(client, uri, "mnist/config.pbtxt").decode())
    fake = _install(monkeypatch)

    assert _run(uri, s3_endpoint, tmp_path / "job", "--profile", "1,4,8") == cli.EXIT_OK

    plan = json.loads(_read(client, uri, "mnist/1/model.plan"))
    assert plan["marker"] == PLAN_MARKER
    after = parse_config(_read(client, uri, "mnist/config.pbtxt").decode())
    assert (before.platform, after.platform) == ("onnxruntime_onnx", "tensorrt_plan")
    after.platform = before.platform
    assert after == before  # only the platform changed: tensors, batching, instances are the published ones
    record = json.loads(_read(client, uri, "mnist/engine.json"))
    assert record["tensorrt_version"] == "11.1.0.106" and record["compute_capability"] == "9.0"
    assert record["profile"] == [1, 4, 8] and set(record["max_abs_diff"]) == {"1", "8"}
    assert fake.state.executions, "the plan was run on the golden inputs before it was uploaded"


def test_plan_that_misses_the_golden_outputs_fails_the_job_and_leaves_the_onnx_repository(
    published: tuple[str, Any],
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, client = published
    _install(monkeypatch, offset=1.0)

    assert _run(uri, s3_endpoint, tmp_path / "job") == cli.EXIT_REJECTED

    assert "differs from the golden outputs" in capsys.readouterr().err
    assert not _exists(client, uri, "mnist/1/model.plan")
    assert not _exists(client, uri, "mnist/engine.json")
    assert parse_config(_read(client, uri, "mnist/config.pbtxt").decode()).platform == "onnxruntime_onnx"


def test_tensorrt_other_than_the_triton_images_is_refused_before_any_upload(
    published: tuple[str, Any],
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, client = published
    _install(monkeypatch, version="10.14.1.48")

    assert _run(uri, s3_endpoint, tmp_path / "job") == cli.EXIT_REJECTED

    assert "exact version that built it" in capsys.readouterr().err
    assert not _exists(client, uri, "mnist/1/model.plan")


def test_rerun_for_the_same_tensorrt_and_gpu_sends_nothing(
    published: tuple[str, Any],
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri, _ = published
    fake = _install(monkeypatch)
    assert _run(uri, s3_endpoint, tmp_path / "first") == cli.EXIT_OK
    builds = fake.state.build_calls

    assert _run(uri, s3_endpoint, tmp_path / "second") == cli.EXIT_OK

    assert fake.state.build_calls == builds
    assert "already built" in capsys.readouterr().out


def test_without_tensorrt_the_job_fails_with_the_reason(
    published: tuple[str, Any],
    s3_endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, _ = published
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError, as on this machine

    assert _run(uri, s3_endpoint, tmp_path / "job") == cli.EXIT_REJECTED

    assert "tensorrt not importable" in capsys.readouterr().err


def test_repository_that_is_not_an_s3_digest_prefix_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build-engine", "--repository", "/local/path", "--model", "mnist"]) == cli.EXIT_FAILED
    assert "must be s3://BUCKET/PREFIX/DIGEST" in capsys.readouterr().err


def test_job_code_path_imports_neither_torch_nor_tensorrt() -> None:
    """The TensorRT container has no torch; tensorrt itself is only imported once the build starts."""
    code = (
        "import sys, model_pipeline.cli, model_pipeline.engine_job, model_pipeline.tensorrt_build, "
        "model_pipeline.repository, model_pipeline.publish; "
        "print(sorted(m for m in ('torch', 'tensorrt') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
