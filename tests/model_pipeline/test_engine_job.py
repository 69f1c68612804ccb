"""``python -m model_pipeline build-engine`` against moto's S3 server on 127.0.0.1 and the TensorRT TEST DOUBLE.

tests/fake_tensorrt.py is NOT TensorRT: these tests prove what the Job downloads, which spec it derives from the
published ONNX and its flags, how it reacts to a plan that passes or misses the golden check, and what it writes
back into the published repository, in which form and order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model_pipeline import cli, tensorrt_build
from model_pipeline.publish import S3Location, make_s3_client, upload_repository
from model_pipeline.repository import ModelArtifacts, TensorRTStatus, collect_tool_versions, write_repository
from model_pipeline.specs import ModelSpec
from model_pipeline.tensorrt_build import GpuInfo
from model_pipeline.triton_config import parse_config
from tests._engine_models import fixed_onnx, mlp_onnx, tensorrt_spec, token_onnx, token_spec
from tests._pipeline_helpers import golden_for
from tests.fake_tensorrt import PLAN_MARKER, make_fake_tensorrt
from tests.paths import ROOT

pytestmark = pytest.mark.tensorrt_double
H100 = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
TOKEN_FLAGS = ("--profile", "1,2,4", "--axis", "sequence=2,8,16")
Publish = Callable[[ModelSpec, Path], str]


@pytest.fixture
def publish(tmp_path: Path, s3_endpoint: str, isolated_aws: None) -> Publish:
    """Publishes one model (ONNX Runtime config, TensorRT pending) to a fresh bucket; returns the digest URI."""

    def publish(spec: ModelSpec, onnx_path: Path) -> str:
        golden = golden_for(spec, onnx_path, onnx_path.with_name("golden.npz"))
        pending = TensorRTStatus("pending", reason="built by the engine-build Job in the cluster")
        artifacts = ModelArtifacts(spec, onnx_path, golden, pending)
        repo = write_repository(tmp_path / "repo", [artifacts], collect_tool_versions())
        bucket = f"engines-{tmp_path.name.lower().replace('_', '-')[-40:]}".strip("-")
        location = S3Location(bucket, "models", endpoint_url=s3_endpoint, region="us-east-1")
        client = make_s3_client(location)
        client.create_bucket(Bucket=bucket)
        return f"s3://{bucket}/models/{upload_repository(repo.path, location, client=client).digest}"

    return publish


@pytest.fixture
def client(s3_endpoint: str, isolated_aws: None) -> Any:
    return make_s3_client(S3Location("any", "", endpoint_url=s3_endpoint, region="us-east-1"))


@pytest.fixture
def mnist(tmp_path: Path, publish: Publish) -> str:
    """An MNIST-shaped model, batch 1/4/8, published."""
    onnx_path = mlp_onnx(tmp_path / "mnist" / "model.onnx")
    return publish(tensorrt_spec(onnx_path, "mnist"), onnx_path)


@pytest.fixture
def encoder(tmp_path: Path, publish: Publish) -> str:
    """A token model (INT64 ids and mask, dynamic batch and sequence, two outputs), published."""
    onnx_path = token_onnx(tmp_path / "encoder" / "model.onnx")
    return publish(token_spec(onnx_path), onnx_path)


def _install(monkeypatch: pytest.MonkeyPatch, version: str = "11.1.0.106", offset: float = 0.0) -> Any:
    fake = make_fake_tensorrt(version)
    fake.state.output_offset = offset
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_build, "detect_gpu", lambda: H100)
    monkeypatch.setattr(tensorrt_build, "CudaMemory", lambda: fake.memory)
    return fake


def _run(uri: str, endpoint: str, work: Path, *extra: str, model: str = "mnist") -> int:
    return cli.main(
        [
            "build-engine",
            "--repository",
            uri,
            "--model",
            model,
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


def _config(client: Any, uri: str, model: str) -> Any:
    return parse_config(_read(client, uri, f"{model}/config.pbtxt").decode())


def _record(client: Any, uri: str, model: str) -> dict[str, Any]:
    return dict(json.loads(_read(client, uri, f"{model}/engine.json")))


# --- a built engine ------------------------------------------------------------------------------------------


def test_verified_engine_and_tensorrt_config_land_in_the_same_digest_prefix(
    mnist: str, client: Any, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _config(client, mnist, "mnist")
    fake = _install(monkeypatch)

    assert _run(mnist, s3_endpoint, tmp_path / "job", "--profile", "1,4,8") == cli.EXIT_OK

    assert json.loads(_read(client, mnist, "mnist/1/model.plan"))["marker"] == PLAN_MARKER
    after = _config(client, mnist, "mnist")
    assert (before.platform, after.platform) == ("onnxruntime_onnx", "tensorrt_plan")
    after.platform = before.platform
    assert after == before  # only the platform changed: tensors, batching, instances are the published ones
    record = _record(client, mnist, "mnist")
    assert record["tensorrt_version"] == "11.1.0.106" and record["compute_capability"] == "9.0"
    assert (record["profile"], record["axes"]) == ([1, 4, 8], {})
    assert record["shapes"] == {"input": {"min": [1, 1, 28, 28], "opt": [4, 1, 28, 28], "max": [8, 1, 28, 28]}}
    assert set(record["differences"]) == {"logits"}
    assert fake.state.executions, "the plan was run on the golden inputs before it was uploaded"


def test_plan_config_and_record_are_uploaded_in_that_order(
    mnist: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(monkeypatch)

    assert _run(mnist, s3_endpoint, tmp_path / "job") == cli.EXIT_OK

    uploaded = [
        line.rsplit("/", 2)[-2:] for line in capsys.readouterr().out.splitlines() if line.startswith("uploaded")
    ]
    assert uploaded == [["1", "model.plan"], ["mnist", "config.pbtxt"], ["mnist", "engine.json"]]


def test_token_model_profile_covers_batch_and_sequence_and_records_each_output(
    encoder: str,
    client: Any,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = _install(monkeypatch)

    assert _run(encoder, s3_endpoint, tmp_path / "job", *TOKEN_FLAGS, model="encoder") == cli.EXIT_OK

    expected = ((1, 2), (2, 8), (4, 16))
    assert fake.state.profile_shapes() == {"input_ids": expected, "attention_mask": expected}
    record = _record(client, encoder, "encoder")
    assert (record["profile"], record["axes"]) == ([1, 2, 4], {"sequence": [2, 8, 16]})
    shapes = {"min": [1, 2], "opt": [2, 8], "max": [4, 16]}
    assert record["shapes"] == {"input_ids": shapes, "attention_mask": shapes}
    assert set(record["differences"]) == {"pooled", "scores"}
    assert all(set(d) == {"max_abs", "max_rel"} for d in record["differences"].values())
    assert _config(client, encoder, "encoder").platform == "tensorrt_plan"
    out = capsys.readouterr().out
    assert "(fp16, batch [1, 2, 4], sequence [2, 8, 16])" in out and "pooled max abs" in out and "scores" in out


def test_model_without_batch_dim_builds_with_a_profile_without_batch(
    tmp_path: Path,
    publish: Publish,
    client: Any,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    onnx_path = fixed_onnx(tmp_path / "fixed" / "model.onnx")
    uri = publish(tensorrt_spec(onnx_path, "fixed"), onnx_path)
    fake = _install(monkeypatch)

    assert _run(uri, s3_endpoint, tmp_path / "job", model="fixed") == cli.EXIT_OK

    assert fake.state.profile_shapes() == {"image": ((3, 8), (3, 8), (3, 8))}
    record = _record(client, uri, "fixed")
    assert record["profile"] is None and record["shapes"] == {"image": {"min": [3, 8], "opt": [3, 8], "max": [3, 8]}}
    config = _config(client, uri, "fixed")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 0)


# --- refused engines -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "flags"),
    [(1.0, ()), (0.01, ("--tolerance", "0.001,0"))],
    ids=["default-tolerance", "entry-tolerance"],
)
def test_engine_that_misses_the_tolerance_fails_the_job_and_leaves_the_onnx_repository(
    encoder: str,
    client: Any,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    offset: float,
    flags: tuple[str, ...],
) -> None:
    _install(monkeypatch, offset=offset)

    assert _run(encoder, s3_endpoint, tmp_path / "job", *TOKEN_FLAGS, *flags, model="encoder") == cli.EXIT_REJECTED

    assert "the TensorRT engine differs from ONNX Runtime" in capsys.readouterr().err
    assert not _exists(client, encoder, "encoder/1/model.plan")
    assert not _exists(client, encoder, "encoder/engine.json")
    assert _config(client, encoder, "encoder").platform == "onnxruntime_onnx"


def test_tensorrt_other_than_the_triton_images_is_refused_before_any_upload(
    mnist: str,
    client: Any,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _install(monkeypatch, version="10.14.1.48")

    assert _run(mnist, s3_endpoint, tmp_path / "job") == cli.EXIT_REJECTED

    assert "exact version that built it" in capsys.readouterr().err
    assert not _exists(client, mnist, "mnist/1/model.plan")


def test_rerun_for_the_same_tensorrt_and_gpu_sends_nothing(
    mnist: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _install(monkeypatch)
    assert _run(mnist, s3_endpoint, tmp_path / "first") == cli.EXIT_OK
    builds = fake.state.build_calls

    assert _run(mnist, s3_endpoint, tmp_path / "second") == cli.EXIT_OK

    assert fake.state.build_calls == builds
    assert "already built" in capsys.readouterr().out


def test_without_tensorrt_the_job_fails_with_the_reason(
    mnist: str, s3_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError, as on this machine

    assert _run(mnist, s3_endpoint, tmp_path / "job") == cli.EXIT_REJECTED

    assert "tensorrt not importable" in capsys.readouterr().err


# --- what the flags and the published model must agree on ---------------------------------------------------


def test_token_model_without_sequence_bounds_is_one_clear_error(
    encoder: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _install(monkeypatch)

    assert _run(encoder, s3_endpoint, tmp_path / "job", "--profile", "1,2,4", model="encoder") == cli.EXIT_FAILED

    assert "needs {min, opt, max} for the dynamic axes ['sequence']" in capsys.readouterr().err
    assert fake.state.build_calls == 0


def test_axis_the_model_does_not_have_is_one_clear_error(
    mnist: str, s3_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(mnist, s3_endpoint, tmp_path / "job", "--axis", "tokens=1,2,3") == cli.EXIT_FAILED

    assert "axes.tokens names an axis the model does not have" in capsys.readouterr().err


def test_model_the_repository_does_not_hold_is_one_clear_error(
    mnist: str, s3_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(mnist, s3_endpoint, tmp_path / "job", model="bert") == cli.EXIT_FAILED

    assert "model 'bert' is not in the published repository; it holds ['mnist']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--profile", "1,2"), "--profile '1,2' must be three sizes MIN,OPT,MAX"),
        (("--profile", "4,2,1"), "--profile '4,2,1' must satisfy 1 <= MIN <= OPT <= MAX"),
        (("--profile", "0,1,2"), "--profile '0,1,2' must satisfy 1 <= MIN <= OPT <= MAX"),
        (("--axis", "sequence"), "--axis 'sequence' must be NAME=MIN,OPT,MAX"),
        (("--axis", "=1,2,3"), "--axis '=1,2,3' must be NAME=MIN,OPT,MAX"),
        (("--axis", "sequence=1,x,3"), "--axis sequence '1,x,3' must be three sizes"),
        (("--axis", "s=1,2,3", "--axis", "s=1,2,4"), "--axis 's' is given more than once"),
        (("--tolerance", "0.1"), "--tolerance '0.1' must be two numbers ATOL,RTOL >= 0"),
        (("--tolerance", "a,b"), "--tolerance 'a,b' must be two numbers"),
        (("--tolerance=-1,0",), "--tolerance '-1,0' must be two numbers"),
        (("--tolerance", "nan,0"), "--tolerance 'nan,0' must be two numbers"),
    ],
)
def test_malformed_flag_is_one_error_line(
    flags: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build-engine", "--repository", "s3://bucket/models/digest", "--model", "m", *flags]

    assert cli.main(argv) == cli.EXIT_FAILED

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


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
