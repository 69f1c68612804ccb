"""The IRSA policies against the S3 requests the real clients make.

Triton 2.51 (the CPU build from the nvidia-pytriton wheel) loads a published repository from moto's S3 server,
and the engine-build Job (with the TensorRT TEST DOUBLE) joins its engine to one; a proxy on 127.0.0.1 records
every request each sends, and each is evaluated against the policy its role gets with IAM's rules
(tests/components/_s3_access.py). A request the policy would deny is a pod that crash-loops on EKS.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from components.model_repository import builder_policy, reader_policy
from components.settings import ModelRepositorySettings
from local_serving.errors import ToolMissingError
from local_serving.installation import find_triton
from local_serving.ports import free_port
from local_serving.triton import TritonPorts, TritonServer
from local_serving.wrappers import write_serving_repository
from model_pipeline import cli, tensorrt_build
from model_pipeline.derive import derive_spec
from model_pipeline.entry import ModelEntry
from model_pipeline.publish import S3Location, make_s3_client, upload_repository
from model_pipeline.repository import ModelArtifacts, TensorRTStatus, collect_tool_versions, write_repository
from model_pipeline.tensorrt_build import GpuInfo
from tests._pipeline_helpers import (
    golden_for,
    isolate_aws_credentials,
    moto_s3_server,
    tiny_onnx,
    tiny_repository,
    tiny_spec,
)
from tests.components._s3_access import Authorization, RecordingS3Proxy, S3Request, authorization, is_allowed
from tests.fake_tensorrt import make_fake_tensorrt

REGION = "eu-west-1"
PREFIX = "triton"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RecordingS3Proxy]:
    isolate_aws_credentials(monkeypatch, tmp_path)
    with moto_s3_server() as moto, RecordingS3Proxy(moto).running() as recording:
        yield recording


def _denied(policy: dict, requests: list[S3Request]) -> list[str]:
    return [str(r) for r in requests if not is_allowed(policy, authorization(r))]


def _triton_or_skip() -> None:
    try:
        find_triton()
    except ToolMissingError as missing:
        pytest.skip(str(missing))


def test_triton_reads_a_published_repository_with_nothing_but_the_reader_policy(
    proxy: RecordingS3Proxy, tmp_path: Path
) -> None:
    _triton_or_skip()
    bucket = "models-triton"
    location = S3Location(bucket, PREFIX, endpoint_url=proxy.url, region=REGION)
    client = make_s3_client(location)
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    digest = upload_repository(tiny_repository(tmp_path, ("alpha", "beta")), location, client=client).digest
    # The CPU Triton has only the python backend: serve the same models through its ONNX wrappers, in place.
    serving = tmp_path / "serving"
    write_serving_repository(tmp_path / "repo-0", serving)
    for path in (p for p in serving.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{PREFIX}/{digest}/{path.relative_to(serving).as_posix()}")
    proxy.clear()

    settings = ModelRepositorySettings(uri=f"s3://{bucket}/{PREFIX}", endpoint=proxy.url, region=REGION)
    ports = TritonPorts(free_port(), free_port(), free_port())
    with TritonServer(f"{settings.triton_uri}/{digest}", tmp_path / "triton", ports, environment=CREDENTIALS):
        pass  # started means every model loaded from S3

    requests = list(proxy.requests)
    assert S3Request("HEAD", f"/{bucket}", {}) in requests, "Triton opens the repository with HeadBucket"
    assert any(authorization(r).action == "s3:GetObject" for r in requests)
    assert _denied(reader_policy(bucket, PREFIX, REGION), requests) == []


def test_the_engine_build_job_needs_nothing_beyond_the_builder_policy(
    proxy: RecordingS3Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "models-engines"
    onnx_path = tiny_onnx(tmp_path / "work" / "model.onnx", tiny_spec("mnist", (1, 28, 28), 10))
    spec = derive_spec(ModelEntry(name="mnist", backend="tensorrt"), onnx_path)
    golden = golden_for(spec, onnx_path, tmp_path / "work" / "golden.npz")
    pending = TensorRTStatus("pending", reason="built by the engine-build Job in the cluster")
    repo = write_repository(
        tmp_path / "repo", [ModelArtifacts(spec, onnx_path, golden, pending)], collect_tool_versions()
    )
    location = S3Location(bucket, PREFIX, endpoint_url=proxy.url, region=REGION)
    client = make_s3_client(location)
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    digest = upload_repository(repo.path, location, client=client).digest
    fake = make_fake_tensorrt("11.1.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_build, "detect_gpu", lambda: GpuInfo("NVIDIA A10G", "8.6"))
    monkeypatch.setattr(tensorrt_build, "CudaMemory", lambda: fake.memory)
    proxy.clear()

    exit_code = cli.main(
        [
            "build-engine",
            "--repository",
            f"s3://{bucket}/{PREFIX}/{digest}",
            "--model",
            "mnist",
            "--endpoint-url",
            proxy.url,
            "--region",
            REGION,
            "--work-dir",
            str(tmp_path / "job"),
        ]
    )

    assert exit_code == cli.EXIT_OK
    requests = list(proxy.requests)
    assert any(authorization(r).action == "s3:PutObject" for r in requests), "the Job wrote its engine"
    assert _denied(builder_policy(bucket, PREFIX, REGION), requests) == []


def test_head_bucket_carries_no_prefix_so_a_prefix_condition_alone_denies_it() -> None:
    """Why the policies say StringLikeIfExists: the rule the first test checks, stated on its own."""
    arn = "arn:aws:s3:::models"
    only_with_prefix = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": arn,
                "Condition": {"StringLike": {"s3:prefix": ["triton", "triton/*"]}},
            }
        ]
    }
    head_bucket = authorization(S3Request("HEAD", "/models", {}))
    assert head_bucket == Authorization("s3:ListBucket", arn, {})
    assert not is_allowed(only_with_prefix, head_bucket)
    assert is_allowed(reader_policy("models", "triton", "us-east-1"), head_bucket)


@pytest.mark.parametrize(
    "request_, allowed",
    [
        (S3Request("GET", "/models", {"list-type": "2", "prefix": "triton/abc/"}), True),
        (S3Request("GET", "/models", {"list-type": "2", "prefix": "other/"}), False),
        (S3Request("GET", "/models/triton/abc/alpha/config.pbtxt", {}), True),
        (S3Request("GET", "/models/other/secrets.json", {}), False),
        (S3Request("PUT", "/models/triton/abc/alpha/config.pbtxt", {}), False),
        (S3Request("DELETE", "/models/triton/abc/alpha/config.pbtxt", {}), False),
    ],
)
def test_the_reader_still_sees_only_its_prefix(request_: S3Request, allowed: bool) -> None:
    assert is_allowed(reader_policy("models", "triton", "us-east-1"), authorization(request_)) is allowed


def test_the_builder_writes_under_the_prefix_but_deletes_nothing() -> None:
    policy = builder_policy("models", "triton", "us-east-1")
    assert is_allowed(policy, authorization(S3Request("PUT", "/models/triton/abc/alpha/1/model.plan", {})))
    assert not is_allowed(policy, authorization(S3Request("PUT", "/models/other/x", {})))
    assert not is_allowed(policy, authorization(S3Request("DELETE", "/models/triton/abc/alpha/1/model.plan", {})))


def test_proxy_passes_requests_through_unchanged(proxy: RecordingS3Proxy) -> None:
    s3 = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1")
    s3.create_bucket(Bucket="echo")
    s3.put_object(Bucket="echo", Key="k", Body=b"x" * 70_000)
    assert s3.get_object(Bucket="echo", Key="k")["Body"].read() == b"x" * 70_000
    assert [(r.method, r.path) for r in proxy.requests][-2:] == [("PUT", "/echo/k"), ("GET", "/echo/k")]
