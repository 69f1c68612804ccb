"""Publish a verified model repository to S3 (or an S3-compatible store such as MinIO), immutably.

Every repository goes to ``s3://<bucket>/<prefix>/<digest>/`` with the files in their repository layout and
``manifest.json`` last. A digest whose manifest is already there is never written again; a digest without a
manifest is an unfinished upload that no one may serve, and the next upload completes it, sending only the
files that are missing or differ (compared by the SHA-256 kept in each object's metadata).

Two phases, each a function: :func:`publish_files` (everything but the manifest) and :func:`publish_manifest`.
``upload_repository`` (the CLI) runs both after a full verification; the Pulumi program runs them as two
resources with the in-cluster engine builds in between (components/s3_publication.py), after a hash-only
verification (:func:`model_pipeline.digest.verify_hashes`). Importing this module needs the standard library
only; boto3 is imported when a client is made, tqdm only for a progress bar.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from model_pipeline import syntax
from model_pipeline.digest import MANIFEST_FILE, verify_hashes
from model_pipeline.errors import PublishError

SHA256_METADATA_KEY = "sha256"  # stored as x-amz-meta-sha256
_CREDENTIAL_ERRORS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}
_MISSING_OBJECT = {"404", "NoSuchKey", "NotFound"}
_MULTIPART_THRESHOLD = 64 * 1024 * 1024
ENGINE_RECORD_FILE = "engine.json"  # model_pipeline.engine_job.ENGINE_RECORD_FILE: a model the Job switched
CONFIG_FILE = "config.pbtxt"  # model_pipeline.triton_config.CONFIG_FILE
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


@dataclass(frozen=True)
class S3Location:
    """Where repositories are published: a bucket, a key prefix, and optionally a non-AWS endpoint."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if not syntax.is_bucket_name(self.bucket):
            raise PublishError(f"bucket name '{self.bucket}' is invalid: {syntax.BUCKET_NAME_RULE}")
        if self.endpoint_url is not None and urlparse(self.endpoint_url).scheme not in ("http", "https"):
            raise PublishError(f"endpoint URL '{self.endpoint_url}' must start with http:// or https://")
        object.__setattr__(self, "prefix", self.prefix.strip("/"))

    def key(self, digest: str, relative_path: str = "") -> str:
        """Object key of ``relative_path`` inside the repository ``digest``."""
        parts = [p for p in (self.prefix, digest, relative_path) if p]
        return "/".join(parts)

    def uri(self, digest: str) -> str:
        """``s3://bucket/prefix/digest``: how AWS tools name the published repository."""
        return f"s3://{self.bucket}/{self.key(digest)}"

    def triton_uri(self, digest: str) -> str:
        """The ``--model-repository`` value for Triton: custom endpoints go in as ``s3://host:port/bucket/...``."""
        if self.endpoint_url is None:
            return self.uri(digest)
        endpoint = urlparse(self.endpoint_url)
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        scheme = "https://" if endpoint.scheme == "https" else ""
        return f"s3://{scheme}{endpoint.hostname}:{port}/{self.bucket}/{self.key(digest)}"


@dataclass
class UploadResult:
    """What an upload did; ``bytes_sent`` is zero when the repository was already published."""

    digest: str
    uri: str
    triton_uri: str
    already_published: bool = False
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0


class _ByteCounter:
    """Upload callback that sums the bytes s3transfer reports from its worker threads."""

    def __init__(self, on_bytes: Callable[[int], None] | None = None) -> None:
        self.total = 0
        self._lock = threading.Lock()
        self._on_bytes = on_bytes

    def __call__(self, amount: int) -> None:
        with self._lock:
            self.total += amount
        if self._on_bytes is not None:
            self._on_bytes(amount)


def make_s3_client(location: S3Location, connect_timeout_s: float = 5.0, max_attempts: int = 3) -> Any:
    """A boto3 S3 client; custom endpoints (MinIO, moto) get path-style addressing as Triton uses it."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=60,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path" if location.endpoint_url else "auto"},
    )
    return boto3.client("s3", endpoint_url=location.endpoint_url, region_name=location.region or None, config=config)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_s3_error(exc: BaseException, location: S3Location, action: str) -> PublishError:
    """One clear PublishError for a botocore failure: credentials, missing bucket, unreachable endpoint."""
    from botocore import exceptions as bce

    if getattr(exc, "response", None) is None and exc.__cause__ is not None:
        exc = exc.__cause__  # boto3's S3UploadFailedError wraps the botocore error that says what happened
    where = location.endpoint_url or "AWS S3"
    code = _error_code(exc)
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        message = (
            "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or run with an instance/IRSA role"
        )
    elif isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError | bce.ConnectionClosedError):
        message = f"cannot reach the S3 endpoint {where} while trying to {action} ({exc})"
    elif code in _CREDENTIAL_ERRORS:
        message = f"{where} rejected the credentials ({code}) while trying to {action}; check the access key"
    elif code in ("NoSuchBucket", "404") and action.startswith("open bucket"):
        message = f"bucket '{location.bucket}' does not exist at {where}"
    elif code in ("AccessDenied", "403"):
        message = (
            f"access denied to bucket '{location.bucket}' at {where} while trying to {action} "
            "(wrong credentials, or the identity lacks s3:ListBucket/GetObject/PutObject)"
        )
    else:
        message = f"S3 failed while trying to {action} at {where}: {code or type(exc).__name__}: {exc}"
    return PublishError(message)


def _upload_order(relative_paths: list[str]) -> list[str]:
    """Model files first, then golden files, configs after them: a poller never sees a config without a model."""

    def rank(path: str) -> tuple[int, str]:
        if path.endswith("/config.pbtxt"):
            return (2, path)
        return (0 if any(part.isdigit() for part in path.split("/")[:-1]) else 1, path)

    return sorted(relative_paths, key=rank)


@contextlib.contextmanager
def _progress_bar(total: int, desc: str, enabled: bool) -> Iterator[Callable[[int], Any] | None]:
    """tqdm's bar update when asked for (tqdm is then imported), else None: the Pulumi provider has no tqdm."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
        yield bar.update


class _Publisher:
    """One publication of one repository (already verified) to one location."""

    def __init__(
        self, path: Path, manifest: Mapping[str, Any], location: S3Location, client: Any, progress: bool
    ) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.location = location
        self.client = client
        self.progress = progress
        self.digest = str(manifest["digest"])
        self.result = UploadResult(self.digest, location.uri(self.digest), location.triton_uri(self.digest))

    def _call(self, action: str, function: Callable[..., Any], **kwargs: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(**kwargs)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise describe_s3_error(exc, self.location, action) from exc

    def remote_sha256(self, relative_path: str) -> str | None:
        """The SHA-256 recorded on the object ('' when it has none), or None when it does not exist."""
        from botocore.exceptions import ClientError

        key = self.location.key(self.digest, relative_path)
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_OBJECT:
                return None
            raise describe_s3_error(exc, self.location, f"read s3://{self.location.bucket}/{key}") from exc
        return str(head.get("Metadata", {}).get(SHA256_METADATA_KEY, "")) or ""

    def open_bucket(self) -> None:
        self._call(f"open bucket '{self.location.bucket}'", self.client.head_bucket, Bucket=self.location.bucket)

    def found_published(self) -> bool:
        """Open the bucket; True (and ``already_published``) when this digest's manifest is already there."""
        self.open_bucket()
        self.result.already_published = self.remote_sha256(MANIFEST_FILE) is not None
        return self.result.already_published

    def run(self) -> UploadResult:
        """Both phases, unless the digest is published already (then nothing is sent)."""
        if self.found_published():
            return self.result
        self.send_files()
        self.send_manifest()
        return self.result

    def _switched_by_engine_build(self, relative_path: str) -> bool:
        """A model's config that the engine-build Job replaced (its engine.json is there): never put back."""
        model, _, name = relative_path.partition("/")
        return name == CONFIG_FILE and self.remote_sha256(f"{model}/{ENGINE_RECORD_FILE}") is not None

    def send_files(self) -> None:
        """Every file but the manifest that is missing or differs; matching ones, and switched configs, are kept."""
        files: Mapping[str, Mapping[str, Any]] = self.manifest["files"]
        pending = []
        for rel in _upload_order(list(files)):
            if self.remote_sha256(rel) == files[rel]["sha256"] or self._switched_by_engine_build(rel):
                self.result.skipped.append(rel)
            else:
                pending.append(rel)
        self._send(pending, files)

    def _send(self, pending: list[str], files: Mapping[str, Mapping[str, Any]]) -> None:
        from boto3.s3.transfer import TransferConfig

        total = sum(int(files[rel]["size"]) for rel in pending)
        transfer = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD, max_concurrency=4)
        with _progress_bar(total, f"upload {self.digest[:12]}", self.progress) as on_bytes:
            counter = _ByteCounter(on_bytes)
            for rel in pending:
                key = self.location.key(self.digest, rel)
                extra = {
                    "Metadata": {SHA256_METADATA_KEY: files[rel]["sha256"]},
                    "ContentType": "text/plain" if rel.endswith(".pbtxt") else "application/octet-stream",
                }
                self._call(
                    f"upload {rel}",
                    self.client.upload_file,
                    Filename=str(self.path / rel),
                    Bucket=self.location.bucket,
                    Key=key,
                    ExtraArgs=extra,
                    Callback=counter,
                    Config=transfer,
                )
                self.result.uploaded.append(rel)
            self.result.bytes_sent += counter.total

    def check_files_present(self) -> None:
        """Refuse to mark a repository complete while a file it lists is absent from the store."""
        missing = [rel for rel in sorted(self.manifest["files"]) if self.remote_sha256(rel) is None]
        if missing:
            raise PublishError(
                f"{self.location.uri(self.digest)} lacks {len(missing)} of its files ({', '.join(missing[:5])}"
                f"{', ...' if len(missing) > 5 else ''}); publish the files first, then {MANIFEST_FILE}"
            )

    def send_manifest(self) -> None:
        """manifest.json, once: a manifest already there (ours or a concurrent publisher's) is never overwritten."""
        from botocore.exceptions import ClientError

        body = (self.path / MANIFEST_FILE).read_bytes()
        request = {
            "Bucket": self.location.bucket,
            "Key": self.location.key(self.digest, MANIFEST_FILE),
            "Body": body,
            "ContentType": "application/json",
            "Metadata": {SHA256_METADATA_KEY: _sha256_bytes(body)},
        }
        try:
            # If-None-Match: a concurrent upload of the same digest cannot overwrite a manifest already there.
            self.client.put_object(IfNoneMatch="*", **request)
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                self.result.already_published = True
                return
            if code != "NotImplemented":
                raise describe_s3_error(exc, self.location, f"upload {MANIFEST_FILE}") from exc
            self._call(f"upload {MANIFEST_FILE}", self.client.put_object, **request)  # store lacks If-None-Match
        self.result.uploaded.append(MANIFEST_FILE)
        self.result.bytes_sent += len(body)


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def upload_repository(
    repo_path: Path, location: S3Location, client: Any | None = None, progress: bool = False
) -> UploadResult:
    """Verify ``repo_path`` and publish it under its digest; a no-op when that digest is already published.

    Nothing is sent unless the local repository verifies: hashes match the manifest and every config
    matches its model file.
    """
    from model_pipeline.repository import verify_repository  # numpy, onnx: the pipeline's environment

    verified = verify_repository(Path(repo_path), replay_golden=False)
    s3 = client if client is not None else make_s3_client(location)
    return _Publisher(verified.path, verified.manifest, location, s3, progress).run()


def _hash_verified(repo_path: Path, expected_digest: str | None) -> dict[str, Any]:
    manifest = verify_hashes(Path(repo_path))
    if expected_digest is not None and manifest["digest"] != expected_digest:
        raise PublishError(
            f"{repo_path} holds repository {str(manifest['digest'])[:12]}…, not {expected_digest[:12]}…: "
            "it was rebuilt since; run the deployment again so it publishes the new digest"
        )
    return manifest


def publish_files(
    repo_path: Path,
    location: S3Location,
    client: Any | None = None,
    progress: bool = False,
    expected_digest: str | None = None,
) -> UploadResult:
    """The files phase: every file of the repository but ``manifest.json``, under its digest.

    Idempotent: an object whose SHA-256 metadata matches is not sent again (a second run sends 0 bytes), and a
    config that the engine-build Job switched to ``tensorrt_plan`` (its ``engine.json`` is there) is kept.
    Missing objects of an already published digest are put back with their exact content. Verification is
    hash-only (hashlib): the repository was fully verified when the pipeline wrote it.
    """
    manifest = _hash_verified(Path(repo_path), expected_digest)
    s3 = client if client is not None else make_s3_client(location)
    publisher = _Publisher(Path(repo_path), manifest, location, s3, progress)
    publisher.open_bucket()
    publisher.send_files()
    return publisher.result


def publish_manifest(
    repo_path: Path, location: S3Location, client: Any | None = None, expected_digest: str | None = None
) -> UploadResult:
    """The manifest phase: ``manifest.json`` last, only when every listed file is in the store.

    A manifest already there is left as it is (``already_published``): a published digest is never rewritten.
    """
    manifest = _hash_verified(Path(repo_path), expected_digest)
    s3 = client if client is not None else make_s3_client(location)
    publisher = _Publisher(Path(repo_path), manifest, location, s3, False)
    if publisher.found_published():
        return publisher.result
    publisher.check_files_present()
    publisher.send_manifest()
    return publisher.result


def published_keys(location: S3Location, digest: str, client: Any | None = None) -> list[str]:
    """Every object under ``<prefix>/<digest>/``, as paths relative to it (the Job's plans included)."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client if client is not None else make_s3_client(location)
    root = location.key(digest) + "/"
    found: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=root):
            found += [str(item["Key"])[len(root) :] for item in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        if _error_code(exc) == "NoSuchBucket":
            return []  # no bucket, no objects: a refresh reads the repository as gone, a delete has nothing to do
        raise describe_s3_error(exc, location, f"list s3://{location.bucket}/{root}") from exc
    return sorted(found)


def delete_published(
    location: S3Location, digest: str, client: Any | None = None, only: list[str] | None = None
) -> list[str]:
    """Delete every object under ``<prefix>/<digest>/`` (or just the ``only`` paths there); returns what went.

    Plain deletes: in a versioned bucket each becomes a delete marker over a noncurrent version, which the
    bucket's lifecycle rule expires (components.model_repository.lifecycle_rules); nothing else is touched.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client if client is not None else make_s3_client(location)
    present = published_keys(location, digest, s3)
    doomed = [rel for rel in present if only is None or rel in only]
    for start in range(0, len(doomed), _DELETE_BATCH):
        batch = doomed[start : start + _DELETE_BATCH]
        objects = [{"Key": location.key(digest, rel)} for rel in batch]
        try:
            response = s3.delete_objects(Bucket=location.bucket, Delete={"Objects": objects, "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise describe_s3_error(exc, location, f"delete under {location.uri(digest)}") from exc
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise PublishError(
                f"S3 refused to delete {len(errors)} objects under {location.uri(digest)} "
                f"(first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})"
            )
    return doomed


def list_published(location: S3Location, client: Any | None = None) -> list[str]:
    """Digests under the prefix that have a manifest, i.e. complete repositories that may be served."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client if client is not None else make_s3_client(location)
    prefix = f"{location.prefix}/" if location.prefix else ""
    digests: list[str] = []
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                rest = str(item["Key"])[len(prefix) :]
                digest, _, name = rest.partition("/")
                if name == MANIFEST_FILE:
                    digests.append(digest)
    except (BotoCoreError, ClientError) as exc:
        raise describe_s3_error(exc, location, f"list s3://{location.bucket}/{prefix}") from exc
    return sorted(digests)


def read_published_manifest(location: S3Location, digest: str, client: Any | None = None) -> dict[str, Any]:
    """The manifest of a published repository."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client if client is not None else make_s3_client(location)
    key = location.key(digest, MANIFEST_FILE)
    try:
        body = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise describe_s3_error(exc, location, f"read s3://{location.bucket}/{key}") from exc
    return dict(json.loads(body))
