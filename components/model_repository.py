"""ModelRepository: the built model repository published to S3 under its digest, before Triton rolls to it.

The pipeline's output directory (``python -m model_pipeline build``) is checked against its manifest and the
stack's models while the program is evaluated - with hashlib and json only, never torch, onnx or tensorrt - and
published to ``<prefix>/<digest>/`` by a dynamic resource running the pipeline's own publisher
(:mod:`components.s3_publication`), so ``pulumi preview`` shows a model change as a replaced publication and a new
Triton argument. Engines for ``backend: tensorrt`` models are built in the cluster by
:class:`~components.engine_build.EngineBuild` after the files are there; ``manifest.json`` goes last, after the
engines, and Triton's repository URI is derived from it: Triton only rolls to a complete, verified repository.
On AWS the bucket can be created hardened and IRSA roles scoped to the prefix (pulumi-aws); an S3-compatible
store (MinIO) is used as it is, and such a stack declares no pulumi-aws resource at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from components.engine_build import SERVICE_ACCOUNT as ENGINE_SERVICE_ACCOUNT
from components.engine_build import EngineBuild, EngineBuildArgs, EngineModel
from components.errors import PlatformError
from components.gpu_stack import GpuPlacement
from components.kube import after
from components.s3_publication import FILES_PHASE, MANIFEST_PHASE, PublicationArgs, RepositoryPublication
from components.settings import ModelRepositorySettings
from model_pipeline.digest import MANIFEST_FILE, content_digest, file_sha256, list_files
from model_pipeline.entry import ModelEntry, record_differences
from model_pipeline.sources import is_s3_uri

ROOT = Path(__file__).resolve().parents[1]
TRITON_SERVICE_ACCOUNT = "triton"  # the ServiceAccount TritonCluster creates


class ModelRepositoryError(PlatformError, ValueError):
    """The local model repository cannot be published as it is (missing, stale, or built for other models)."""


@dataclass(frozen=True)
class RepositoryAccess:
    """How Triton reaches the published repository: what ModelRepository hands TritonCluster as it is."""

    uri: pulumi.Input[str]  # Triton's --model-repository: the digest prefix, known once its manifest is uploaded
    region: str  # the bucket's (AWS_DEFAULT_REGION)
    models: tuple[str, ...] = ()  # the models it holds, which Triton loads
    endpoint: str | None = None  # an S3-compatible store's, as the cluster reaches it; None for AWS S3
    role_arn: pulumi.Input[str] | None = None  # IRSA: the created role, or the one the stack names
    access_key_id: pulumi.Input[str] | None = None  # static keys: S3-compatible stores only
    secret_access_key: pulumi.Input[str] | None = None
    ready: Sequence[pulumi.Resource] = ()  # the publication (and engine builds) Triton must wait for


@dataclass(frozen=True)
class LocalRepository:
    """A built repository on disk whose files match its manifest."""

    path: Path
    digest: str
    files: Mapping[str, str]  # relative path -> sha256, manifest.json excluded
    models: Mapping[str, Mapping[str, Any]]  # the manifest's per-model entries


# --------------------------------------------------------------------------------------------------------------
# The local repository: hashed and checked with the standard library only.


def build_command(stack: str, build_dir: str) -> str:
    """The command that (re)builds the repository this stack serves: the stack's models, with its settings."""
    return f"python -m model_pipeline build --stack {stack} --out {build_dir}"


def _entry_problems(name: str, built: Mapping[str, Any], entry: ModelEntry, root: Path) -> list[str]:
    """Each key of the stack's entry whose value in the build differs, and a brought file changed since."""
    recorded = built.get("entry")
    if not isinstance(recorded, dict):
        return [f"{name} was built by an older pipeline that recorded no stack entry"]
    problems = [
        f"{name} was built with {key} {_shown(old)} but the stack sets models[{name}].{key} to {_shown(new)}"
        for key, old, new in record_differences(recorded, entry.record())
    ]
    if _local_source_changed(entry, built, root):
        problems.append(f"{name}: {entry.source} changed since the build")
    return problems


def _local_source_changed(entry: ModelEntry, built: Mapping[str, Any], root: Path) -> bool:
    """A brought file in the project differs from the one built (an s3:// source is the builder's to check)."""
    local = root / entry.source
    if not entry.source or is_s3_uri(entry.source) or not local.is_file():
        return False
    return file_sha256(local) != built.get("source_sha256")


def _shown(value: Any) -> str:
    return "unset" if value is None else repr(value)


def _problems(root: Path, manifest: Mapping[str, Any], models: Sequence[ModelEntry], project: Path) -> list[str]:
    entries = manifest.get("files", {})
    recorded = {rel: str(entry.get("sha256")) for rel, entry in entries.items()}
    on_disk = list_files(root)
    problems = [f"{rel} is missing" for rel in sorted(set(recorded) - set(on_disk))]
    problems += [f"{rel} is not in {MANIFEST_FILE}" for rel in sorted(set(on_disk) - set(recorded))]
    problems += [
        f"{rel} changed since the build"
        for rel in sorted(set(recorded) & set(on_disk))
        if file_sha256(root / rel) != recorded[rel]
    ]
    if not problems and content_digest(entries) != manifest.get("digest"):
        problems.append(f"the digest in {MANIFEST_FILE} does not match its files")
    built = manifest.get("models", {})
    wanted = {m.name: m for m in models}
    if sorted(built) != sorted(wanted):
        problems.append(f"it holds models {sorted(built)} but the stack serves {sorted(wanted)}")
    for name in sorted(set(built) & set(wanted)):
        problems += _entry_problems(name, built[name], wanted[name], project)
    return problems


def load_local_repository(
    build_dir: str, models: Sequence[ModelEntry], stack: str, root: Path = ROOT
) -> LocalRepository:
    """The built repository at ``build_dir``, or ONE ModelRepositoryError saying what is wrong and what to run."""
    path = Path(build_dir) if Path(build_dir).is_absolute() else root / build_dir
    rebuild = f"run `{build_command(stack, build_dir)}` and try again"
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelRepositoryError(f"model repository {path} is not built (no {MANIFEST_FILE}); {rebuild}") from None
    except (OSError, ValueError) as exc:
        raise ModelRepositoryError(
            f"model repository {path}: {MANIFEST_FILE} is unreadable ({exc}); {rebuild}"
        ) from None
    problems = _problems(path, manifest, models, root)
    if problems:
        raise ModelRepositoryError(f"model repository {path} is stale: {'; '.join(problems)}; {rebuild}")
    files = {rel: str(entry["sha256"]) for rel, entry in manifest["files"].items()}
    return LocalRepository(path, str(manifest["digest"]), files, dict(manifest["models"]))


def engine_models(local: LocalRepository, models: Sequence[ModelEntry]) -> tuple[EngineModel, ...]:
    """Models the stack wants on TensorRT whose published repository does not already carry a plan, with the
    profile and tolerance the build derived (the manifest, checked against the stack's entries)."""
    return tuple(
        _engine_model(m.name, local.models[m.name])
        for m in models
        if m.backend == "tensorrt" and local.models[m.name].get("platform") != "tensorrt_plan"
    )


def _engine_model(name: str, built: Mapping[str, Any]) -> EngineModel:
    profile, tolerance = built.get("profile"), built.get("tolerance") or {}
    return EngineModel(
        name,
        str(built["precision"]),
        tuple(profile) if profile else None,
        tuple((axis, tuple(bounds)) for axis, bounds in sorted((built.get("axes") or {}).items())),
        (float(tolerance["atol"]), float(tolerance["rtol"])) if tolerance else None,
    )


# --------------------------------------------------------------------------------------------------------------
# IAM and bucket policies: pure JSON documents.


def partition(region: str) -> str:
    """The AWS partition of a region (ARNs differ in China and GovCloud)."""
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def bucket_arn(bucket: str, region: str) -> str:
    return f"arn:{partition(region)}:s3:::{bucket}"


def _objects_under(bucket: str, prefix: str, region: str) -> str:
    return f"{bucket_arn(bucket, region)}/{prefix}/*" if prefix else f"{bucket_arn(bucket, region)}/*"


def _list_prefix(bucket: str, prefix: str, region: str) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "ListTheRepositoryPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn(bucket, region),
    }
    if prefix:
        # Triton opens the repository with HeadBucket, which S3 authorises as s3:ListBucket and which carries
        # no s3:prefix: a plain StringLike would deny it and Triton would exit. IfExists lets a request without
        # a prefix through (HeadBucket, and a listing of the whole bucket, which IAM cannot tell apart) and
        # still denies a listing of any other prefix.
        statement["Condition"] = {"StringLikeIfExists": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    return statement


def reader_policy(bucket: str, prefix: str, region: str) -> dict[str, Any]:
    """Triton: read objects under the prefix and list that prefix; nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTheRepository",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": _objects_under(bucket, prefix, region),
            },
            _list_prefix(bucket, prefix, region),
        ],
    }


def builder_policy(bucket: str, prefix: str, region: str) -> dict[str, Any]:
    """The engine-build Job: Triton's read access plus writing (and aborting multipart uploads of) plans."""
    objects = _objects_under(bucket, prefix, region)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadAndWriteTheRepository",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": objects,
            },
            _list_prefix(bucket, prefix, region),
        ],
    }


def irsa_trust_policy(
    oidc_provider_arn: str, oidc_provider_url: str, namespace: str, service_account: str
) -> dict[str, Any]:
    """Only this ServiceAccount's projected token, issued for STS, may assume the role."""
    issuer = oidc_provider_url.removeprefix("https://")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                        f"{issuer}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def tls_only_policy(bucket: str, region: str) -> dict[str, Any]:
    """Refuse every request that does not come over TLS."""
    arn = bucket_arn(bucket, region)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def lifecycle_rules(prefix: str, expire_after_days: int) -> list[dict[str, Any]]:
    """Replaced repository versions (noncurrent objects) expire; served ones never do."""
    scope = {"prefix": f"{prefix}/" if prefix else ""}
    return [
        {
            "id": "expire-replaced-repository-versions",
            "status": "Enabled",
            "filter": scope,
            "noncurrent_version_expiration": {"noncurrent_days": expire_after_days},
            "expiration": {"expired_object_delete_marker": True},
        },
        {
            "id": "abort-incomplete-uploads",
            "status": "Enabled",
            "filter": scope,
            "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
        },
    ]


# --------------------------------------------------------------------------------------------------------------
# The component


@dataclass(frozen=True)
class ModelRepositoryArgs:
    """Inputs of :class:`ModelRepository`."""

    settings: ModelRepositorySettings
    models: tuple[ModelEntry, ...]
    triton_namespace: str
    triton_image: str
    placement: GpuPlacement
    wait_for: Sequence[pulumi.Resource] = field(default_factory=tuple)  # e.g. the GPU stack, for engine builds


class ModelRepository(pulumi.ComponentResource):
    """The S3 bucket (created or existing), IRSA roles, the published repository and its TensorRT engines."""

    bucket: pulumi.Output[str]
    digest: str
    repository_uri: pulumi.Output[str]  # Triton's --model-repository, known once manifest.json is uploaded
    access: RepositoryAccess  # everything TritonCluster needs to read it
    triton_role_arn: pulumi.Input[str] | None
    ready: list[pulumi.Resource]  # what Triton must wait for

    def __init__(self, name: str, args: ModelRepositoryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:ModelRepository", name, None, opts)
        s = args.settings
        local = load_local_repository(s.build_dir, args.models, pulumi.get_stack())
        self.digest = local.digest
        child = pulumi.ResourceOptions(parent=self)

        # pulumi-aws only where AWS itself is managed (the config refuses both with an S3-compatible endpoint):
        # publishing needs no aws provider, so a MinIO stack declares no aws resource at all.
        bucket_ready: list[pulumi.Resource] = []
        roles: dict[str, aws.iam.Role] = {}
        if s.create_bucket or s.creates_roles:
            on_aws = _aws_options(name, s, self)
            if s.create_bucket:
                bucket_ready = _declare_bucket(name, s, on_aws)
            if s.creates_roles:
                roles = _declare_roles(name, args, on_aws)
        self.bucket = pulumi.Output.from_input(s.bucket)
        # The role Triton runs as: the one created here, else the one the stack names (None: static keys).
        self.triton_role_arn = roles["triton"].arn if roles else s.irsa_role_arn

        publication = PublicationArgs(
            bucket=s.bucket,
            prefix=s.prefix,
            digest=local.digest,
            endpoint=s.endpoint,
            region=s.region,
            build_dir=str(local.path),
            files=dict(local.files),
            publish_endpoint=s.publish_endpoint,
        )
        # The files first; the resource owns the whole digest prefix, the Jobs' plans included (no drift).
        files = RepositoryPublication(
            f"{name}-files",
            publication,
            FILES_PHASE,
            opts=after(child, bucket_ready),
        )
        engines = engine_models(local, args.models)
        jobs: list[pulumi.Resource] = []
        if engines:
            jobs = list(_declare_engines(name, args, local.digest, engines, roles, [files], child).jobs)
        # Last: its presence marks a complete repository, engines included (model_pipeline.publish).
        manifest = RepositoryPublication(
            f"{name}-manifest",
            publication,
            MANIFEST_PHASE,
            opts=after(child, [files, *jobs]),
        )
        uri = f"{s.triton_uri}/{local.digest}"
        self.repository_uri = manifest.digest.apply(lambda _: uri)
        self.ready = [manifest, *jobs]
        self.access = RepositoryAccess(
            uri=self.repository_uri,
            region=s.region,
            models=tuple(m.name for m in args.models),
            endpoint=s.endpoint,
            role_arn=self.triton_role_arn,
            access_key_id=s.access_key_id,
            secret_access_key=s.secret_access_key,
            ready=self.ready,
        )
        self.register_outputs({"bucket": self.bucket, "digest": self.digest, "repository_uri": self.repository_uri})


def _object_key(s: ModelRepositorySettings, digest: str, relative: str) -> str:
    return "/".join(p for p in (s.prefix, digest, relative) if p)


def _aws_options(name: str, s: ModelRepositorySettings, parent: pulumi.Resource) -> pulumi.ResourceOptions:
    """Options for the bucket and IAM resources: an AWS provider in the configured region.

    Publishing (components.s3_publication) and this provider authenticate as whoever runs ``pulumi up``
    (AWS_* environment, profile, an ESC environment or IRSA): the policy pack refuses static keys as
    provider arguments, where they would sit in the state.
    """
    provider = aws.Provider(f"{name}-aws", region=s.region)
    return pulumi.ResourceOptions(parent=parent, provider=provider)


def _declare_bucket(name: str, s: ModelRepositorySettings, child: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    # A versioned bucket keeps deleted objects as noncurrent versions, so `pulumi destroy` can never delete
    # it empty-handed: either it stays, with the rules that expire those versions, or it goes with them.
    delete = s.bucket_on_destroy == "delete"
    child = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=not delete))
    bucket = aws.s3.Bucket(f"{name}-bucket", bucket=s.bucket, force_destroy=delete, opts=child)
    on_bucket = after(child, [bucket])
    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
    )
    encryption = aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}, "bucket_key_enabled": True}],
        opts=child,
    )
    public_block = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access-block",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
    )
    policy = aws.s3.BucketPolicy(
        f"{name}-tls-only",
        bucket=bucket.id,
        policy=json.dumps(tls_only_policy(s.bucket, s.region)),
        # S3 refuses policy writes while the public access block is being changed.
        opts=after(on_bucket, [public_block]),
    )
    lifecycle = aws.s3.BucketLifecycleConfiguration(
        f"{name}-lifecycle",
        bucket=bucket.id,
        rules=lifecycle_rules(s.prefix, s.expire_after_days),
        # Noncurrent-version rules need versioning switched on first.
        opts=after(child, [versioning]),
    )
    return [bucket, versioning, encryption, public_block, ownership, policy, lifecycle]


def _declare_roles(name: str, args: ModelRepositoryArgs, child: pulumi.ResourceOptions) -> dict[str, aws.iam.Role]:
    s = args.settings
    if not (s.oidc_provider_arn and s.oidc_provider_url):
        raise ModelRepositoryError("IRSA roles need modelRepository.oidcProviderArn and oidcProviderUrl")
    roles: dict[str, aws.iam.Role] = {}
    for role, namespace, account, policy in (
        ("triton", args.triton_namespace, TRITON_SERVICE_ACCOUNT, reader_policy(s.bucket, s.prefix, s.region)),
        ("engine-build", s.build_namespace, ENGINE_SERVICE_ACCOUNT, builder_policy(s.bucket, s.prefix, s.region)),
    ):
        trust = irsa_trust_policy(s.oidc_provider_arn, s.oidc_provider_url, namespace, account)
        roles[role] = aws.iam.Role(
            f"{name}-{role}-role",
            assume_role_policy=json.dumps(trust),
            max_session_duration=3600,
            description=f"IRSA role of {namespace}/{account}: model repository s3://{s.bucket}/{s.prefix}",
            opts=child,
        )
        aws.iam.RolePolicy(f"{name}-{role}-s3", role=roles[role].id, policy=json.dumps(policy), opts=child)
    return roles


def _declare_engines(
    name: str,
    args: ModelRepositoryArgs,
    digest: str,
    engines: tuple[EngineModel, ...],
    roles: Mapping[str, aws.iam.Role],
    files: list[pulumi.Resource],
    child: pulumi.ResourceOptions,
) -> EngineBuild:
    s = args.settings
    static = s.uses_static_keys
    return EngineBuild(
        f"{name}-engines",
        EngineBuildArgs(
            models=engines,
            repository=f"s3://{s.bucket}/{_object_key(s, digest, '')}".rstrip("/"),
            namespace=s.build_namespace,
            triton_image=args.triton_image,
            placement=args.placement,
            engine_image=s.engine_image,
            image_registry=s.sources.image_registry,
            python_index=s.sources.python_index,
            region=s.region,
            endpoint=s.endpoint,
            role_arn=roles["engine-build"].arn if "engine-build" in roles else None,
            access_key_id=s.access_key_id if static else None,
            secret_access_key=s.secret_access_key if static else None,
            timeout_seconds=s.engine_timeout_seconds,
            ttl_seconds=s.engine_ttl_seconds,
            cpu=s.engine_cpu,
            memory=s.engine_memory,
            ephemeral_storage=s.engine_ephemeral_storage,
            wait_for=[*files, *args.wait_for],
        ),
        child,
    )
