"""S3 publication against a real S3 HTTP endpoint (moto's server on 127.0.0.1): immutable, resumable, clear errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError

from model_pipeline.errors import ModelValidationError, PublishError, RepositoryError
from model_pipeline.publish import S3Location, list_published, make_s3_client, upload_repository
from tests._pipeline_helpers import (
    free_port,
    rehash,
    tiny_onnx,
    tiny_repository,
    tiny_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated_aws")]


@pytest.fixture
def location(s3_endpoint: str) -> S3Location:
    """A fresh bucket per test, so tests never see each other's objects."""
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3Location(bucket, "triton/repos", endpoint_url=s3_endpoint, region="us-east-1")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("publish"), ("alpha", "beta"))


def _manifest(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "manifest.json").read_text())


def _keys(location: S3Location) -> list[str]:
    s3 = make_s3_client(location)
    listing = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


class RecordingClient:
    """The real client, recording each object write in order; optionally failing the Nth file upload."""

    def __init__(self, real: Any, fail_on_upload: int | None = None) -> None:
        self.real = real
        self.fail_on_upload = fail_on_upload
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def upload_file(self, **kwargs: Any) -> None:
        if self.fail_on_upload is not None and len(self.writes) + 1 == self.fail_on_upload:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1 (connection dropped by the test)")
        self.writes.append(kwargs["Key"])
        self.real.upload_file(**kwargs)

    def put_object(self, **kwargs: Any) -> Any:
        self.writes.append(kwargs["Key"])
        return self.real.put_object(**kwargs)


def test_upload_writes_the_repository_under_its_digest(repo: Path, location: S3Location) -> None:
    result = upload_repository(repo, location)
    manifest = _manifest(repo)
    digest = manifest["digest"]
    expected = sorted(f"triton/repos/{digest}/{rel}" for rel in [*manifest["files"], "manifest.json"])
    assert _keys(location) == expected
    assert result.uri == f"s3://{location.bucket}/triton/repos/{digest}"
    assert (
        result.bytes_sent
        == sum(e["size"] for e in manifest["files"].values()) + (repo / "manifest.json").stat().st_size
    )


def test_uploaded_objects_carry_their_sha256_and_content(repo: Path, location: S3Location) -> None:
    upload_repository(repo, location)
    manifest = _manifest(repo)
    s3 = make_s3_client(location)
    key = location.key(manifest["digest"], "alpha/1/model.onnx")
    head = s3.head_object(Bucket=location.bucket, Key=key)
    assert head["Metadata"]["sha256"] == manifest["files"]["alpha/1/model.onnx"]["sha256"]
    body = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
    assert body == (repo / "alpha/1/model.onnx").read_bytes()


def test_manifest_is_written_last_and_configs_after_models(repo: Path, location: S3Location) -> None:
    client = RecordingClient(make_s3_client(location))
    upload_repository(repo, location, client=client)
    names = [key.split("/", 3)[3] for key in client.writes]
    assert names[-1] == "manifest.json"
    last_model_file = max(names.index(n) for n in names if n.endswith("model.onnx"))
    first_config = min(names.index(n) for n in names if n.endswith("config.pbtxt"))
    assert last_model_file < first_config


def test_second_upload_of_an_unchanged_repository_sends_zero_bytes(repo: Path, location: S3Location) -> None:
    upload_repository(repo, location)
    client = RecordingClient(make_s3_client(location))
    again = upload_repository(repo, location, client=client)
    assert again.already_published
    assert again.bytes_sent == 0
    assert client.writes == []


def test_interrupted_upload_leaves_no_manifest_and_no_visible_version(repo: Path, location: S3Location) -> None:
    client = RecordingClient(make_s3_client(location), fail_on_upload=3)
    with pytest.raises(PublishError, match="cannot reach the S3 endpoint"):
        upload_repository(repo, location, client=client)
    digest = _manifest(repo)["digest"]
    assert location.key(digest, "manifest.json") not in _keys(location)
    assert len(_keys(location)) == 2  # the two files sent before the failure
    assert list_published(location) == []


def test_resumed_upload_sends_only_what_is_missing(repo: Path, location: S3Location) -> None:
    with pytest.raises(PublishError):
        upload_repository(repo, location, client=RecordingClient(make_s3_client(location), fail_on_upload=3))
    resumed = upload_repository(repo, location)
    manifest = _manifest(repo)
    assert len(resumed.skipped) == 2
    sent = sum(manifest["files"][rel]["size"] for rel in resumed.uploaded if rel != "manifest.json")
    assert resumed.bytes_sent == sent + (repo / "manifest.json").stat().st_size
    assert list_published(location) == [manifest["digest"]]


def test_object_with_a_different_sha256_is_sent_again(repo: Path, location: S3Location) -> None:
    digest = _manifest(repo)["digest"]
    key = location.key(digest, "alpha/config.pbtxt")
    make_s3_client(location).put_object(Bucket=location.bucket, Key=key, Body=b"truncated", Metadata={"sha256": "0"})
    result = upload_repository(repo, location)
    assert "alpha/config.pbtxt" in result.uploaded
    body = make_s3_client(location).get_object(Bucket=location.bucket, Key=key)["Body"].read()
    assert body == (repo / "alpha/config.pbtxt").read_bytes()


def test_published_manifest_is_never_overwritten(repo: Path, location: S3Location) -> None:
    digest = _manifest(repo)["digest"]
    key = location.key(digest, "manifest.json")
    make_s3_client(location).put_object(Bucket=location.bucket, Key=key, Body=b'{"first": true}')
    result = upload_repository(repo, location)
    assert result.already_published
    assert make_s3_client(location).get_object(Bucket=location.bucket, Key=key)["Body"].read() == b'{"first": true}'


class ManifestBlindClient(RecordingClient):
    """Pretends the manifest is absent on HEAD: another uploader finished between our check and our write."""

    def head_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith("manifest.json"):
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return self.real.head_object(**kwargs)


def test_concurrent_publisher_cannot_overwrite_the_manifest(repo: Path, location: S3Location) -> None:
    digest = _manifest(repo)["digest"]
    key = location.key(digest, "manifest.json")
    make_s3_client(location).put_object(Bucket=location.bucket, Key=key, Body=b'{"winner": "other"}')
    result = upload_repository(repo, location, client=ManifestBlindClient(make_s3_client(location)))
    assert result.already_published
    body = make_s3_client(location).get_object(Bucket=location.bucket, Key=key)["Body"].read()
    assert body == b'{"winner": "other"}'


def test_repository_whose_onnx_does_not_match_its_config_never_reaches_s3(tmp_path: Path, location: S3Location) -> None:
    broken = tiny_repository(tmp_path)
    tiny_onnx(broken / "tiny/1/model.onnx", tiny_spec(), input_name="x")
    with pytest.raises(RepositoryError, match="changed since the build"):
        upload_repository(broken, location)
    assert _keys(location) == []


def test_mismatched_config_is_refused_even_when_the_manifest_was_rehashed(tmp_path: Path, location: S3Location) -> None:

    broken = tiny_repository(tmp_path)
    tiny_onnx(broken / "tiny/1/model.onnx", tiny_spec(), input_name="x")
    rehash(broken, "tiny/1/model.onnx")
    with pytest.raises(ModelValidationError, match=r"config.pbtxt input 'input'"):
        upload_repository(broken, location)
    assert _keys(location) == []


def test_missing_bucket_is_one_clear_error(repo: Path, s3_endpoint: str) -> None:
    absent = S3Location("no-such-bucket", "x", endpoint_url=s3_endpoint)
    with pytest.raises(PublishError, match=f"bucket 'no-such-bucket' does not exist at {s3_endpoint}"):
        upload_repository(repo, absent)


def test_unreachable_endpoint_is_one_clear_error(repo: Path) -> None:
    nowhere = S3Location("models", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(PublishError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:"):
        upload_repository(repo, nowhere, client=make_s3_client(nowhere, connect_timeout_s=1, max_attempts=1))


def test_wrong_credentials_are_one_clear_error(repo: Path, location: S3Location, s3_endpoint: str) -> None:
    # From now on moto checks every request's access key against its IAM store; "testing" is not in it.
    previous = requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=b"0", timeout=5).json()
    try:
        with pytest.raises(PublishError, match=f"access denied to bucket '{location.bucket}'.*wrong credentials"):
            upload_repository(repo, location)
    finally:
        restore = previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode()
        requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=restore, timeout=5)
    assert _keys(location) == []


def test_triton_uri_names_the_custom_endpoint_as_triton_expects() -> None:
    minio = S3Location("models", "/prod/", endpoint_url="http://minio.storage:9000")
    assert minio.triton_uri("abc") == "s3://minio.storage:9000/models/prod/abc"
    tls = S3Location("models", "prod", endpoint_url="https://s3.example.com")
    assert tls.triton_uri("abc") == "s3://https://s3.example.com:443/models/prod/abc"
    assert S3Location("models", "prod").triton_uri("abc") == "s3://models/prod/abc"


@pytest.mark.parametrize("bucket", ["Models", "ab", "my_bucket", "-models"])
def test_invalid_bucket_names_are_rejected_before_any_request(bucket: str) -> None:
    with pytest.raises(PublishError, match=f"bucket name '{bucket}' is invalid"):
        S3Location(bucket)
