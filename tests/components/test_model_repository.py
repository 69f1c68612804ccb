"""ModelRepository: the hardened bucket, least-privilege IRSA roles, publication under the digest, Triton's URI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from components import model_repository as mr
from components import s3_publication
from model_pipeline import publish, repository
from model_pipeline.entry import ModelEntry
from offline.harness import DYNAMIC_RESOURCE, RecordedResource, Recording, run_program
from tests._stack_repository import config_with_build_dir, stack_repository
from tests.paths import ROOT

PUBLICATION = "components.s3_publication.S3PublicationProvider"
MNIST = ModelEntry(name="mnist")
RESNET = ModelEntry(name="resnet50", backend="tensorrt")


def _one_of(recording: Recording, type_suffix: str) -> dict[str, Any]:
    (found,) = [r for r in recording.resources if r.type.endswith(type_suffix)]
    return found.inputs


def _policy(recording: Recording, role: str) -> dict[str, Any]:
    return json.loads(recording.one("aws:iam/rolePolicy:RolePolicy", f"models-{role}-s3").inputs["policy"])


def _trust(recording: Recording, role: str) -> dict[str, Any]:
    return json.loads(recording.one("aws:iam/role:Role", f"models-{role}-role").inputs["assumeRolePolicy"])


def _files(recording: Recording) -> RecordedResource:
    return recording.dynamic(PUBLICATION, "models-files")


def _manifest(recording: Recording) -> RecordedResource:
    return recording.dynamic(PUBLICATION, "models-manifest")


def _triton_args(recording: Recording) -> list[str]:
    deployment = recording.one("kubernetes:apps/v1:Deployment", "triton-deployment")
    return list(deployment.inputs["spec"]["template"]["spec"]["containers"][0]["args"])


# --- the local repository ------------------------------------------------------------------------------------


def test_digest_is_the_pipelines_own(stack_repositories: dict[str, Path]) -> None:
    local = mr.load_local_repository(str(stack_repositories["dev"]), [MNIST], "dev")
    verified = repository.verify_repository(stack_repositories["dev"], replay_golden=False)
    assert local.digest == verified.digest
    assert mr.content_digest is repository.content_digest  # one formula for the program and the pipeline
    assert mr.MANIFEST_FILE == repository.MANIFEST_FILE == publish.MANIFEST_FILE


def test_missing_build_is_one_error_naming_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(mr.ModelRepositoryError) as raised:
        mr.load_local_repository(str(tmp_path / "nothing"), [MNIST, RESNET], "dev")
    message = str(raised.value)
    assert "is not built" in message
    assert f"python -m model_pipeline build --stack dev --out {tmp_path / 'nothing'}" in message


def test_file_edited_after_the_build_is_stale(tmp_path: Path) -> None:
    repo = stack_repository(tmp_path, (MNIST,))
    (repo / "mnist" / "config.pbtxt").write_text("max_batch_size: 4\n")
    stale = r"mnist/config.pbtxt changed since the build.*model_pipeline build"
    with pytest.raises(mr.ModelRepositoryError, match=stale):
        mr.load_local_repository(str(repo), [MNIST], "dev")


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("instances", 4, "mnist was built with instances 1 but the stack sets models[mnist].instances to 4"),
        (
            "max_queue_delay_us",
            250,
            "mnist was built with maxQueueDelayUs 100 but the stack sets models[mnist].maxQueueDelayUs to 250",
        ),
        (
            "precision",
            "fp16",
            "mnist was built with precision 'fp32' but the stack sets models[mnist].precision to 'fp16'",
        ),
        (
            "backend",
            "tensorrt",
            "mnist was built with backend 'onnxruntime' but the stack sets models[mnist].backend to 'tensorrt'",
        ),
        (
            "source",
            "models/mnist.onnx",
            "mnist was built with source '' but the stack sets models[mnist].source to 'models/mnist.onnx'",
        ),
    ],
)
def test_a_build_whose_settings_are_not_the_stacks_is_refused_naming_the_setting(
    stack_repositories: dict[str, Path], setting: str, value: Any, problem: str
) -> None:
    """`instances: 4` in the stack used to reach nothing: the build used its own specs and Triton ran one."""
    with pytest.raises(mr.ModelRepositoryError) as raised:
        mr.load_local_repository(
            str(stack_repositories["dev"]), [dataclasses.replace(MNIST, **{setting: value})], "dev"
        )
    assert problem in str(raised.value)
    assert "python -m model_pipeline build --stack dev" in str(raised.value)


def test_repository_of_other_models_is_stale(stack_repositories: dict[str, Path]) -> None:
    with pytest.raises(mr.ModelRepositoryError, match=r"holds models \['mnist'\] but the stack serves"):
        mr.load_local_repository(str(stack_repositories["dev"]), [MNIST, RESNET], "dev")


def test_other_batch_profile_than_configured_is_stale(stack_repositories: dict[str, Path]) -> None:
    wider = ModelEntry(name="mnist", batch_max=16)
    with pytest.raises(
        mr.ModelRepositoryError, match=r"built with batch.max unset but the stack sets .*batch.max to 16"
    ):
        mr.load_local_repository(str(stack_repositories["dev"]), [wider], "dev")


def test_evaluating_the_program_imports_neither_torch_onnx_nor_tensorrt(stack_repositories: dict[str, Path]) -> None:
    code = (
        "import json, sys; from offline.harness import run_program; "
        "run_program('prod', config=json.loads(sys.argv[1])); "
        "print(json.dumps(sorted(m for m in ('torch', 'onnx', 'tensorrt', 'onnxruntime') if m in sys.modules)))"
    )
    config = json.dumps(config_with_build_dir("prod", stack_repositories["prod"]))
    result = subprocess.run([sys.executable, "-c", code, config], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# --- publication and Triton ----------------------------------------------------------------------------------


def test_the_build_is_published_under_its_digest_files_first_and_the_manifest_last(
    stack: Recording, stack_repositories: dict[str, Path]
) -> None:
    digest = stack.outputs["model_repository_digest"]
    build = stack_repositories[stack.stack]
    built = json.loads((build / mr.MANIFEST_FILE).read_text())
    files, manifest = _files(stack), _manifest(stack)
    assert len(stack.dynamic_resources(PUBLICATION)) == 2
    for resource, phase in ((files, s3_publication.FILES_PHASE), (manifest, s3_publication.MANIFEST_PHASE)):
        assert resource.type == DYNAMIC_RESOURCE
        assert resource.inputs["phase"] == phase
        assert (resource.inputs["prefix"], resource.inputs["digest"]) == ("triton", digest)
        assert resource.inputs["files"] == {rel: entry["sha256"] for rel, entry in built["files"].items()}
        assert mr.MANIFEST_FILE not in resource.inputs["files"]
        assert resource.inputs["build_dir"] == str(build)
        assert resource.inputs["region"]
        assert stack.component_of(resource).type == "inference:platform:ModelRepository"  # type: ignore[union-attr]
    assert files.urn in manifest.dependencies


def test_publication_inputs_carry_no_credentials(recordings: dict[str, Recording]) -> None:
    """Credentials come from whoever runs `pulumi up`; inputs (and so the state) hold where, never who."""
    allowed = {"phase", "bucket", "prefix", "digest", "endpoint", "publish_endpoint", "region", "build_dir", "files"}
    for recording in recordings.values():
        for resource in recording.dynamic_resources(PUBLICATION):
            assert set(resource.inputs) <= allowed
            assert resource.secret_paths == ()


def test_triton_serves_exactly_the_published_digest(dev: Recording, prod: Recording) -> None:
    dev_digest, prod_digest = dev.outputs["model_repository_digest"], prod.outputs["model_repository_digest"]
    assert "--model-repository=s3://minio.minio.svc.cluster.local:9000/models/triton/" + dev_digest in _triton_args(dev)
    assert f"--model-repository=s3://acme-inference-models/triton/{prod_digest}" in _triton_args(prod)
    assert prod.outputs["model_repository_uri"] == f"s3://acme-inference-models/triton/{prod_digest}"
    assert prod.outputs["model_bucket"] == "acme-inference-models"


def test_triton_rolls_only_after_the_manifest(stack: Recording) -> None:
    deployment = stack.one("kubernetes:apps/v1:Deployment", "triton-deployment")
    assert _manifest(stack).urn in deployment.dependencies


def test_a_model_change_shows_as_a_new_digest_to_replace_and_a_new_triton_argument(
    tmp_path: Path, dev: Recording
) -> None:
    changed = stack_repository(tmp_path, (MNIST,))
    golden = changed / "mnist" / "golden.npz"
    # A rebuilt model: different content, same layout; the manifest is rewritten by the pipeline's writer.
    manifest = json.loads((changed / "manifest.json").read_text())
    golden.write_bytes(golden.read_bytes() + b"\0")
    manifest["files"]["mnist/golden.npz"] = {"sha256": repository.file_sha256(golden), "size": golden.stat().st_size}
    manifest["digest"] = repository.content_digest(manifest["files"])
    repository.write_manifest(changed, manifest)

    after = run_program("dev", config=config_with_build_dir("dev", changed))

    assert after.outputs["model_repository_digest"] == manifest["digest"] != dev.outputs["model_repository_digest"]
    provider = s3_publication.S3PublicationProvider()
    for name in ("models-files", "models-manifest"):
        before, now = dev.dynamic(PUBLICATION, name).inputs, after.dynamic(PUBLICATION, name).inputs
        assert before["files"]["mnist/golden.npz"] != now["files"]["mnist/golden.npz"]
        assert provider.diff("id", before, now).replaces == ["digest"]  # a new prefix, the old one deleted after
    assert _triton_args(after) != _triton_args(dev)


def test_unchanged_repository_declares_identical_objects_and_triton(
    dev: Recording, stack_repositories: dict[str, Path]
) -> None:
    again = run_program("dev", config=config_with_build_dir("dev", stack_repositories["dev"]))
    published = {r.name: r.inputs for r in again.dynamic_resources(PUBLICATION)}
    assert published == {r.name: r.inputs for r in dev.dynamic_resources(PUBLICATION)}
    provider = s3_publication.S3PublicationProvider()
    assert all(
        provider.diff("id", dev.dynamic(PUBLICATION, name).inputs, inputs).changes is False
        for name, inputs in published.items()
    )
    assert _triton_args(again) == _triton_args(dev)


# --- the bucket (prod creates it; dev uses MinIO's) ----------------------------------------------------------


def test_prod_bucket_is_versioned_encrypted_private_and_expires_replaced_versions(prod: Recording) -> None:
    assert _one_of(prod, ":Bucket")["bucket"] == "acme-inference-models"
    assert _one_of(prod, ":BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
    (rule,) = _one_of(prod, ":BucketServerSideEncryptionConfiguration")["rules"]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    block = _one_of(prod, ":BucketPublicAccessBlock")
    assert all(
        block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    rules = {r["id"]: r for r in _one_of(prod, ":BucketLifecycleConfiguration")["rules"]}
    expiry = rules["expire-replaced-repository-versions"]
    assert expiry["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    assert expiry["filter"]["prefix"] == "triton/"
    assert "days" not in expiry.get("expiration", {}), "served (current) objects must never expire"


BUCKET_TYPES = (
    ":Bucket",
    ":BucketVersioning",
    ":BucketServerSideEncryptionConfiguration",
    ":BucketPublicAccessBlock",
    ":BucketOwnershipControls",
    ":BucketPolicy",
    ":BucketLifecycleConfiguration",
)


def _bucket_resources(recording: Recording) -> list[RecordedResource]:
    return [r for r in recording.resources if r.type.startswith("aws:s3/") and r.type.endswith(BUCKET_TYPES)]


def test_destroy_retains_prods_bucket_with_the_rules_that_expire_what_is_left(prod: Recording) -> None:
    """A versioned bucket keeps deleted objects as noncurrent versions, so destroy could never delete it:
    prod keeps it, and keeps its lifecycle rules too, or the versions would never expire."""
    resources = _bucket_resources(prod)
    assert len(resources) == len(BUCKET_TYPES)
    assert all(r.retain_on_delete for r in resources)
    assert _one_of(prod, ":Bucket")["forceDestroy"] is False


def test_bucket_on_destroy_delete_removes_it_with_every_version(stack_repositories: dict[str, Path]) -> None:
    config = config_with_build_dir("prod", stack_repositories["prod"])
    config["inference-platform:modelRepository"] = {
        **config["inference-platform:modelRepository"],
        "bucketOnDestroy": "delete",
    }
    recording = run_program("prod", config=config)
    assert not any(r.retain_on_delete for r in _bucket_resources(recording))
    assert _one_of(recording, ":Bucket")["forceDestroy"] is True


def test_prod_bucket_refuses_plain_http(prod: Recording) -> None:
    (statement,) = json.loads(_one_of(prod, ":BucketPolicy")["policy"])["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(statement["Resource"]) == {"arn:aws:s3:::acme-inference-models", "arn:aws:s3:::acme-inference-models/*"}


def test_dev_on_minio_declares_no_aws_resource_and_no_aws_provider(dev: Recording) -> None:
    assert [r.type for r in dev.resources if r.type.startswith(("aws:", "pulumi:providers:aws"))] == []
    assert {r.inputs.get("endpoint") for r in dev.dynamic_resources(PUBLICATION)} == {
        "http://minio.minio.svc.cluster.local:9000"
    }


def test_prod_keeps_the_bucket_and_roles_in_pulumi_aws_and_publishes_after_the_bucket(prod: Recording) -> None:
    provider = prod.one("pulumi:providers:aws", "models-aws")
    assert provider.inputs["region"] == "eu-west-1"
    bucket_side = [r for r in prod.resources if r.type.startswith("aws:s3/")]
    assert {r.type.rsplit(":", 1)[-1] for r in bucket_side} == {
        "Bucket",
        "BucketVersioning",
        "BucketServerSideEncryptionConfiguration",
        "BucketPublicAccessBlock",
        "BucketOwnershipControls",
        "BucketPolicy",
        "BucketLifecycleConfiguration",
    }
    assert len(prod.of_type("aws:iam/role:Role")) == 2
    assert all((r.provider or "").startswith(provider.urn + "::") for r in prod.resources if r.type.startswith("aws:"))
    assert {r.urn for r in bucket_side} <= set(_files(prod).dependencies)
    assert "endpoint" not in _files(prod).inputs  # None for AWS: the provider uses AWS S3 in the region


# --- IAM -----------------------------------------------------------------------------------------------------


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


@pytest.mark.parametrize("role", ["triton", "engine-build"])
def test_policies_grant_no_wildcards_and_nothing_beyond_the_prefix(prod: Recording, role: str) -> None:
    for statement in _policy(prod, role)["Statement"]:
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in _actions(statement))
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        for resource in resources:
            assert resource in ("arn:aws:s3:::acme-inference-models/triton/*", "arn:aws:s3:::acme-inference-models")
            if resource == "arn:aws:s3:::acme-inference-models":
                assert _actions(statement) == ["s3:ListBucket"]
                assert statement["Condition"] == {"StringLikeIfExists": {"s3:prefix": ["triton", "triton/*"]}}


def test_triton_may_only_read(prod: Recording) -> None:
    actions = {a for s in _policy(prod, "triton")["Statement"] for a in _actions(s)}
    assert actions == {"s3:GetObject", "s3:ListBucket"}


def test_engine_build_may_also_write_plans(prod: Recording) -> None:
    actions = {a for s in _policy(prod, "engine-build")["Statement"] for a in _actions(s)}
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket"}


@pytest.mark.parametrize(
    ("role", "subject"),
    [
        ("triton", "system:serviceaccount:triton:triton"),
        ("engine-build", "system:serviceaccount:model-build:engine-build"),
    ],
)
def test_trust_names_exactly_one_service_account_through_the_clusters_oidc_provider(
    prod: Recording, role: str, subject: str
) -> None:
    (statement,) = _trust(prod, role)["Statement"]
    issuer = "oidc.eks.eu-west-1.amazonaws.com/id/5C0FFEE5C0FFEE5C0FFEE5C0FFEE5C0F"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{issuer}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {"StringEquals": {f"{issuer}:sub": subject, f"{issuer}:aud": "sts.amazonaws.com"}}


def test_service_accounts_carry_the_roles_they_are_trusted_for(prod: Recording) -> None:
    triton_sa = prod.one("kubernetes:core/v1:ServiceAccount", "triton-sa").inputs["metadata"]
    engine_sa = prod.one("kubernetes:core/v1:ServiceAccount", "models-engines-sa").inputs["metadata"]
    assert (triton_sa["namespace"], triton_sa["name"]) == ("triton", mr.TRITON_SERVICE_ACCOUNT)
    assert (engine_sa["namespace"], engine_sa["name"]) == ("model-build", mr.ENGINE_SERVICE_ACCOUNT)
    assert triton_sa["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/models-triton-role"
    engine_role = "arn:aws:iam::123456789012:role/models-engine-build-role"
    assert engine_sa["annotations"]["eks.amazonaws.com/role-arn"] == engine_role
