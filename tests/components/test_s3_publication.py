"""The model repository's publication provider (components/s3_publication.py) against moto's S3 server on 127.0.0.1.

create/diff/read/delete are called directly, as Pulumi's dynamic-provider process calls them; one test runs the
provider in that very process (``python -m pulumi.dynamic``, over gRPC), unpickled from what the program would
put in the state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from components.s3_publication import (
    FILES_PHASE,
    MANIFEST_PHASE,
    PublicationArgs,
    S3PublicationProvider,
)
from model_pipeline.errors import PublishError, RepositoryError
from tests._pipeline_helpers import tiny_repository
from tests.paths import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated_aws")]

PREFIX = "triton/repos"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_repository(tmp_path_factory.mktemp("publication"), ("alpha", "beta"))


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    _s3(s3_endpoint).create_bucket(Bucket=name)
    return name


def _s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def _manifest(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "manifest.json").read_text())


def _args(repo: Path, bucket: str, endpoint: str) -> PublicationArgs:
    manifest = _manifest(repo)
    return PublicationArgs(
        bucket=bucket,
        prefix=PREFIX,
        digest=manifest["digest"],
        endpoint=endpoint,
        region=REGION,
        build_dir=str(repo),
        files={rel: entry["sha256"] for rel, entry in manifest["files"].items()},
    )


def _under_digest(endpoint: str, bucket: str, digest: str) -> list[str]:
    root = f"{PREFIX}/{digest}/"
    listing = _s3(endpoint).list_objects_v2(Bucket=bucket, Prefix=root)
    return sorted(item["Key"][len(root) :] for item in listing.get("Contents", []))


def _engine_job_switches(endpoint: str, bucket: str, digest: str, model: str) -> None:
    """What the engine-build Job writes into the digest prefix: a plan, the switched config, its record."""
    s3, root = _s3(endpoint), f"{PREFIX}/{digest}/{model}"
    s3.put_object(Bucket=bucket, Key=f"{root}/1/model.plan", Body=b"plan", Metadata={"sha256": "p"})
    s3.put_object(
        Bucket=bucket, Key=f"{root}/config.pbtxt", Body=b'platform: "tensorrt_plan"\n', Metadata={"sha256": "switched"}
    )
    s3.put_object(Bucket=bucket, Key=f"{root}/engine.json", Body=b"{}", Metadata={"sha256": "e"})


# --- create --------------------------------------------------------------------------------------------------


def test_first_create_uploads_every_file_and_a_second_sends_zero_bytes(
    repo: Path, bucket: str, s3_endpoint: str
) -> None:
    args, provider, manifest = _args(repo, bucket, s3_endpoint), S3PublicationProvider(), _manifest(repo)
    first = provider.create(args.inputs(FILES_PHASE))
    assert first.outs is not None
    assert first.id == f"s3://{bucket}/{PREFIX}/{args.digest}/"
    assert first.outs["objects_sent"] == len(manifest["files"])
    assert first.outs["bytes_sent"] == sum(entry["size"] for entry in manifest["files"].values())
    assert _under_digest(s3_endpoint, bucket, args.digest) == sorted(manifest["files"])  # no manifest yet

    again = provider.create(args.inputs(FILES_PHASE))
    assert again.outs is not None
    assert (again.outs["objects_sent"], again.outs["bytes_sent"]) == (0, 0)
    assert again.id == first.id


def test_manifest_goes_last_only_once_the_files_are_there(repo: Path, bucket: str, s3_endpoint: str) -> None:
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    with pytest.raises(PublishError, match=r"lacks 6 of its files.*publish the files first"):
        provider.create(args.inputs(MANIFEST_PHASE))
    assert _under_digest(s3_endpoint, bucket, args.digest) == []

    provider.create(args.inputs(FILES_PHASE))
    written = provider.create(args.inputs(MANIFEST_PHASE))
    assert written.outs is not None
    assert written.id == f"s3://{bucket}/{PREFIX}/{args.digest}/manifest.json"
    assert written.outs["bytes_sent"] == (repo / "manifest.json").stat().st_size
    assert written.outs["triton_uri"] == f"s3://{s3_endpoint.removeprefix('http://')}/{bucket}/{PREFIX}/{args.digest}"
    assert "manifest.json" in _under_digest(s3_endpoint, bucket, args.digest)
    again = provider.create(args.inputs(MANIFEST_PHASE))
    assert again.outs is not None and again.outs["bytes_sent"] == 0


def test_a_build_edited_since_it_was_hashed_is_refused_before_any_upload(
    tmp_path: Path, bucket: str, s3_endpoint: str
) -> None:
    edited = tiny_repository(tmp_path)
    args = _args(edited, bucket, s3_endpoint)
    (edited / "tiny" / "config.pbtxt").write_text("max_batch_size: 4\n")
    with pytest.raises(RepositoryError, match="changed since the build"):
        S3PublicationProvider().create(args.inputs(FILES_PHASE))
    assert _under_digest(s3_endpoint, bucket, args.digest) == []


def test_a_rebuilt_directory_is_not_published_under_the_old_digest(repo: Path, bucket: str, s3_endpoint: str) -> None:
    props = {**_args(repo, bucket, s3_endpoint).inputs(FILES_PHASE), "digest": "0" * 64}
    with pytest.raises(PublishError, match="was rebuilt since"):
        S3PublicationProvider().create(props)


def test_a_create_after_the_engine_job_keeps_the_switched_config(repo: Path, bucket: str, s3_endpoint: str) -> None:
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    provider.create(args.inputs(FILES_PHASE))
    _engine_job_switches(s3_endpoint, bucket, args.digest, "alpha")
    again = provider.create(args.inputs(FILES_PHASE))
    assert again.outs is not None and again.outs["objects_sent"] == 0
    body = _s3(s3_endpoint).get_object(Bucket=bucket, Key=f"{PREFIX}/{args.digest}/alpha/config.pbtxt")["Body"]
    assert body.read() == b'platform: "tensorrt_plan"\n'


# --- diff ----------------------------------------------------------------------------------------------------


def test_publishes_through_the_publish_endpoint_and_names_the_store_as_the_cluster_does(
    repo: Path, bucket: str, s3_endpoint: str
) -> None:
    """Dev's MinIO is `minio.minio.svc.cluster.local` to Triton, a name the machine running `pulumi up` cannot
    resolve: the objects go through the publish endpoint, and every output names the cluster's endpoint."""
    in_cluster = "http://minio.minio.svc.cluster.local:9000"
    args = dataclasses.replace(_args(repo, bucket, in_cluster), publish_endpoint=s3_endpoint)
    provider = S3PublicationProvider()
    created = provider.create(args.inputs(FILES_PHASE))
    assert created.outs is not None and created.outs["objects_sent"] == len(_manifest(repo)["files"])
    assert created.outs["triton_uri"] == f"s3://minio.minio.svc.cluster.local:9000/{bucket}/{PREFIX}/{args.digest}"
    assert _under_digest(s3_endpoint, bucket, args.digest) == sorted(_manifest(repo)["files"])
    assert provider.read(created.id, created.outs).id == created.id
    moved = provider.diff(created.id, created.outs, {**created.outs, "publish_endpoint": "http://127.0.0.1:1"})
    assert moved.changes is False, "another route to the same store is the same repository"
    provider.delete(created.id, created.outs)
    assert _under_digest(s3_endpoint, bucket, args.digest) == []


def test_unchanged_inputs_are_no_diff_and_a_new_digest_is_a_replace(repo: Path, s3_endpoint: str) -> None:
    provider = S3PublicationProvider()
    olds = _args(repo, "models", s3_endpoint).inputs(FILES_PHASE)
    same = provider.diff("id", olds, dict(olds))
    assert (same.changes, same.replaces) == (False, [])
    moved = provider.diff("id", olds, {**olds, "region": "eu-west-1", "build_dir": "/elsewhere"})
    assert moved.changes is False, "region and build_dir only say how to reach the same content"
    rebuilt = provider.diff("id", olds, {**olds, "digest": "f" * 64, "files": {"x": "y"}})
    assert (rebuilt.changes, rebuilt.replaces, rebuilt.delete_before_replace) == (True, ["digest"], False)
    for key, value in (("bucket", "other"), ("prefix", "elsewhere"), ("endpoint", None)):
        assert provider.diff("id", olds, {**olds, key: value}).replaces == [key]


def test_check_reports_each_bad_input() -> None:
    result = S3PublicationProvider().check({}, {"phase": "all", "bucket": "Bad_Bucket", "digest": "abc", "files": {}})
    assert sorted(f.property for f in result.failures) == ["bucket", "digest", "files", "phase"]


# --- read (refresh) ------------------------------------------------------------------------------------------


def test_read_after_the_engine_job_rewrote_the_config_reports_no_change(
    repo: Path, bucket: str, s3_endpoint: str
) -> None:
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    files = provider.create(args.inputs(FILES_PHASE))
    _engine_job_switches(s3_endpoint, bucket, args.digest, "alpha")
    manifest = provider.create(args.inputs(MANIFEST_PHASE))
    for created, phase in ((files, FILES_PHASE), (manifest, MANIFEST_PHASE)):
        assert created.outs is not None
        read = provider.read(created.id, {**created.outs, "__provider": "pickled"})
        assert (read.id, read.outs) == (created.id, created.outs)
        assert read.inputs is None, "refresh must not rewrite the inputs either"
        assert provider.diff(created.id, created.outs, args.inputs(phase)).changes is False


def test_read_reports_a_missing_repository_as_gone(repo: Path, bucket: str, s3_endpoint: str) -> None:
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    files = provider.create(args.inputs(FILES_PHASE))
    manifest = provider.create(args.inputs(MANIFEST_PHASE))
    assert files.outs is not None and manifest.outs is not None
    _s3(s3_endpoint).delete_object(Bucket=bucket, Key=f"{PREFIX}/{args.digest}/manifest.json")
    assert provider.read(manifest.id, manifest.outs).id == ""
    assert provider.read(files.id, files.outs).id == files.id
    _s3(s3_endpoint).delete_object(Bucket=bucket, Key=f"{PREFIX}/{args.digest}/beta/golden.npz")
    assert provider.read(files.id, files.outs).id == "", "the next up creates it again, sending what is missing"


# --- delete --------------------------------------------------------------------------------------------------


def test_delete_leaves_no_object_under_the_digest_and_touches_nothing_else(
    repo: Path, bucket: str, s3_endpoint: str
) -> None:
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    other = f"{PREFIX}/{'e' * 64}/alpha/config.pbtxt"
    _s3(s3_endpoint).put_object(Bucket=bucket, Key=other, Body=b"another repository")
    files = provider.create(args.inputs(FILES_PHASE))
    _engine_job_switches(s3_endpoint, bucket, args.digest, "beta")
    manifest = provider.create(args.inputs(MANIFEST_PHASE))
    assert files.outs is not None and manifest.outs is not None

    provider.delete(manifest.id, manifest.outs)  # Pulumi deletes the manifest first (it depends on the rest)
    left = _under_digest(s3_endpoint, bucket, args.digest)
    assert "manifest.json" not in left and "beta/1/model.plan" in left
    provider.delete(files.id, files.outs)
    assert _under_digest(s3_endpoint, bucket, args.digest) == []
    assert _s3(s3_endpoint).get_object(Bucket=bucket, Key=other)["Body"].read() == b"another repository"
    provider.delete(files.id, files.outs)  # already gone: nothing to do, no error


def test_delete_in_a_versioned_bucket_leaves_noncurrent_versions_for_the_lifecycle_rule(
    repo: Path, bucket: str, s3_endpoint: str
) -> None:
    s3 = _s3(s3_endpoint)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    files = provider.create(args.inputs(FILES_PHASE))
    assert files.outs is not None
    provider.delete(files.id, files.outs)
    assert _under_digest(s3_endpoint, bucket, args.digest) == []
    versions = s3.list_object_versions(Bucket=bucket, Prefix=f"{PREFIX}/{args.digest}/")
    assert len(versions.get("Versions", [])) == len(_manifest(repo)["files"])  # noncurrent, expired later
    assert len(versions.get("DeleteMarkers", [])) == len(_manifest(repo)["files"])


# --- credentials ---------------------------------------------------------------------------------------------


def test_credentials_come_only_from_the_environment(
    repo: Path, bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, provider = _args(repo, bucket, s3_endpoint), S3PublicationProvider()
    created = provider.create(args.inputs(FILES_PHASE))
    assert created.outs is not None
    state = json.dumps([args.inputs(FILES_PHASE), created.outs])
    assert "testing" not in state and "AWS_" not in state
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a new process: nothing resolved before
    with pytest.raises(PublishError, match="no usable AWS credentials"):
        provider.create(args.inputs(FILES_PHASE))


# --- in Pulumi's dynamic-provider process ----------------------------------------------------------------------


def _serialized_provider() -> str:
    from pulumi.dynamic.dynamic import serialize_provider

    return str(serialize_provider(S3PublicationProvider()))


def test_the_pickled_provider_is_a_reference_and_runs_with_light_imports(
    repo: Path, bucket: str, s3_endpoint: str
) -> None:
    """Unpickled in a fresh interpreter in the project directory, it publishes without numpy, onnx or the SDKs."""
    serialized = _serialized_provider()
    assert len(serialized) < 200, "the provider is pickled by reference to its module, not by value"
    heavy = ("numpy", "onnx", "onnxruntime", "tritonclient", "tqdm", "pulumi_aws", "pulumi_kubernetes", "torch")
    code = (
        "import base64, json, sys, dill; "
        "provider = dill.loads(base64.b64decode(sys.argv[1])); "
        "result = provider.create(json.loads(sys.argv[2])); "
        f"heavy = {heavy!r}; "
        "print(json.dumps({'sent': result.outs['objects_sent'], "
        "'heavy': sorted(m for m in heavy if m in sys.modules)}))"
    )
    props = json.dumps(_args(repo, bucket, s3_endpoint).inputs(FILES_PHASE))
    result = subprocess.run(
        [sys.executable, "-c", code, serialized, props],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"sent": len(_manifest(repo)["files"]), "heavy": []}


def test_pulumis_dynamic_provider_process_creates_and_deletes(repo: Path, bucket: str, s3_endpoint: str) -> None:
    """``python -m pulumi.dynamic`` (what pulumi-resource-pulumi-python runs), spoken to over gRPC on 127.0.0.1."""
    import grpc
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

    props = {**_args(repo, bucket, s3_endpoint).inputs(FILES_PHASE), "__provider": _serialized_provider()}
    props = {k: v for k, v in props.items() if v is not None}
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.dynamic"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().decode().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            struct = asyncio.run(rpc.serialize_properties(props, {}))
            urn = "urn:pulumi:dev::inference-platform::pulumi-python:dynamic:Resource::models-files"
            created = stub.Create(provider_pb2.CreateRequest(urn=urn, properties=struct), timeout=60)
            outs = rpc.deserialize_properties(created.properties)
            assert created.id == f"s3://{bucket}/{PREFIX}/{props['digest']}/"
            assert outs["objects_sent"] == len(_manifest(repo)["files"])
            assert _under_digest(s3_endpoint, bucket, props["digest"]) == sorted(_manifest(repo)["files"])
            stub.Delete(provider_pb2.DeleteRequest(id=created.id, urn=urn, properties=created.properties), timeout=60)
        assert _under_digest(s3_endpoint, bucket, props["digest"]) == []
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_publishers_names_for_the_jobs_files_are_the_jobs_own() -> None:
    from model_pipeline import engine_job, publish, triton_config

    assert publish.ENGINE_RECORD_FILE == engine_job.ENGINE_RECORD_FILE
    assert publish.CONFIG_FILE == triton_config.CONFIG_FILE


def test_a_bucket_that_is_gone_reads_as_gone_and_deletes_as_done(repo: Path, s3_endpoint: str) -> None:
    props = _args(repo, f"gone-{uuid.uuid4().hex[:8]}", s3_endpoint).inputs(FILES_PHASE)
    provider = S3PublicationProvider()
    assert provider.read("id", props).id == ""
    provider.delete("id", props)
