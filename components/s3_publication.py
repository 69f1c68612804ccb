"""Publication of the model repository to S3 as a Pulumi dynamic resource, run by the pipeline's own publisher.

Two resources over one digest prefix ``<prefix>/<digest>/``:

- ``phase: files`` publishes every file but ``manifest.json`` (:func:`model_pipeline.publish.publish_files`) and
  OWNS the prefix: whatever is under it - the engine-build Job's ``model.plan``, switched ``config.pbtxt`` and
  ``engine.json`` included - is this resource's, so Pulumi never reads those objects as drift, and deleting the
  resource removes every object under the prefix.
- ``phase: manifest`` writes ``manifest.json`` last (:func:`model_pipeline.publish.publish_manifest`), after the
  engine builds; its presence marks a complete repository. Deleting it removes only the manifest, which Pulumi
  does before the Jobs and the files (it depends on them), so a repository being torn down turns incomplete first.

The provider runs in Pulumi's dynamic-provider process (``pulumi-resource-pulumi-python``, started in the project
directory with the project's virtualenv), which unpickles it with dill. So this module imports only the standard
library and ``pulumi.dynamic``; the provider holds no state (every value it needs is a resource input) and is
pickled by reference to this module; boto3 and the publisher are imported inside each operation.

Credentials are never inputs, outputs or state: boto3 finds them in the environment of whoever runs
``pulumi up``/``refresh``/``destroy``, which the provider process inherits (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, an ESC environment's variables, or IRSA's AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

FILES_PHASE = "files"
MANIFEST_PHASE = "manifest"
PHASES = (FILES_PHASE, MANIFEST_PHASE)
# Inputs that name the objects: a change is a new repository (replace); the rest only says how to reach them.
IDENTITY_INPUTS = ("phase", "bucket", "prefix", "digest", "endpoint")
# Outputs only the provider computes.
COMPUTED_OUTPUTS = ("key_prefix", "uri", "triton_uri", "objects_sent", "bytes_sent")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_PROVIDER_KEY = "__provider"  # pulumi.dynamic: the pickled provider, carried in inputs and outputs


@dataclass(frozen=True)
class PublicationArgs:
    """What one publication needs: where, which digest, and the local build it comes from."""

    bucket: str
    prefix: str
    digest: str
    endpoint: str | None  # None for AWS S3; http(s)://host:port for MinIO and other S3-compatible stores
    region: str
    build_dir: str  # absolute path of the local build, hashed again before anything is sent
    files: Mapping[str, str]  # relative path -> sha256, manifest.json excluded
    # How this machine reaches ``endpoint`` when that name only resolves in the cluster; not part of the identity.
    publish_endpoint: str | None = None

    def inputs(self, phase: str) -> dict[str, Any]:
        """The resource inputs of one phase (plain values only: the provider pickles none of them)."""
        return {
            "phase": phase,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "digest": self.digest,
            "endpoint": self.endpoint,
            "publish_endpoint": self.publish_endpoint,
            "region": self.region,
            "build_dir": self.build_dir,
            "files": dict(sorted(self.files.items())),
        }


def _location(props: Mapping[str, Any], *, to_send: bool = False) -> Any:
    """Where the objects are (``endpoint``, as the cluster names it), or, ``to_send``, how this machine gets there."""
    from model_pipeline.publish import S3Location

    endpoint = (props.get("publish_endpoint") if to_send else None) or props.get("endpoint") or None
    return S3Location(
        str(props["bucket"]), str(props.get("prefix") or ""), endpoint_url=endpoint, region=props.get("region") or None
    )


def _resource_id(props: Mapping[str, Any]) -> str:
    location = _location(props)
    uri = location.uri(str(props["digest"]))
    return f"{uri}/" if props["phase"] == FILES_PHASE else f"{uri}/manifest.json"


def _outputs(props: Mapping[str, Any], objects_sent: int, bytes_sent: int) -> dict[str, Any]:
    location = _location(props)
    digest = str(props["digest"])
    outs = {k: v for k, v in props.items() if k != _PROVIDER_KEY}
    outs.update(
        {
            "key_prefix": f"{location.key(digest)}/",
            "uri": location.uri(digest),
            "triton_uri": location.triton_uri(digest),
            "objects_sent": objects_sent,
            "bytes_sent": bytes_sent,
        }
    )
    return outs


class S3PublicationProvider(dynamic.ResourceProvider):
    """Create uploads (idempotently), diff replaces on a new identity, read checks presence, delete removes."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        from model_pipeline.errors import PublishError

        failures: list[dynamic.CheckFailure] = []
        if news.get("phase") not in PHASES:
            failures.append(dynamic.CheckFailure("phase", f"must be one of {', '.join(PHASES)}"))
        if not _DIGEST.match(str(news.get("digest", ""))):
            failures.append(dynamic.CheckFailure("digest", "must be a 64-character lower-case hex SHA-256"))
        if not news.get("files"):
            failures.append(dynamic.CheckFailure("files", "the repository lists no files"))
        try:
            _location(news)
        except (PublishError, KeyError) as exc:
            failures.append(dynamic.CheckFailure("bucket", str(exc)))
        return dynamic.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        from model_pipeline.publish import publish_files, publish_manifest

        location, digest, build = _location(props, to_send=True), str(props["digest"]), Path(str(props["build_dir"]))
        if props["phase"] == FILES_PHASE:
            result = publish_files(build, location, expected_digest=digest)
        else:
            result = publish_manifest(build, location, expected_digest=digest)
        return dynamic.CreateResult(_resource_id(props), _outputs(props, len(result.uploaded), result.bytes_sent))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """A new digest (or bucket, prefix, endpoint) is a new repository: replace. Anything else: no change.

        ``files`` is not compared on its own: the digest is the hash of that map, so it differs exactly when the
        map does. ``region``, ``publish_endpoint`` and ``build_dir`` only say how to reach the same content.
        """
        replaces = [key for key in IDENTITY_INPUTS if (olds.get(key) or None) != (news.get(key) or None)]
        return dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        # diff never asks for an in-place update; keep the outputs consistent with the inputs all the same.
        return dynamic.UpdateResult(_outputs(news, 0, 0))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        """The same outputs while the repository's objects are there; gone (empty id) otherwise.

        Presence only, never content: the engine-build Job rewrites ``config.pbtxt`` and adds plans under the
        prefix this resource owns, and that is not drift. A files resource with any listed file missing reads as
        gone, so the next ``pulumi up`` creates it again, which puts back exactly the missing objects.
        """
        from model_pipeline.publish import MANIFEST_FILE, published_keys

        outs = {k: v for k, v in props.items() if k != _PROVIDER_KEY}
        present = set(published_keys(_location(props, to_send=True), str(props["digest"])))
        wanted = set(props.get("files") or {}) if props.get("phase") == FILES_PHASE else {MANIFEST_FILE}
        if not wanted <= present:
            return dynamic.ReadResult("", {})
        return dynamic.ReadResult(id_, outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Files: every object under ``<prefix>/<digest>/``. Manifest: ``manifest.json`` only.

        In a versioned bucket the deleted objects stay as noncurrent versions behind delete markers until the
        bucket's lifecycle rule expires them (``expireAfterDays``); nothing is purged here.
        """
        from model_pipeline.publish import MANIFEST_FILE, delete_published

        only = None if props.get("phase") == FILES_PHASE else [MANIFEST_FILE]
        delete_published(_location(props, to_send=True), str(props["digest"]), only=only)


class RepositoryPublication(dynamic.Resource):
    """One phase of the publication of ``<prefix>/<digest>/``; its outputs repeat the inputs plus COMPUTED_OUTPUTS."""

    phase: pulumi.Output[str]
    bucket: pulumi.Output[str]
    prefix: pulumi.Output[str]
    digest: pulumi.Output[str]
    key_prefix: pulumi.Output[str]
    uri: pulumi.Output[str]
    triton_uri: pulumi.Output[str]
    objects_sent: pulumi.Output[int]
    bytes_sent: pulumi.Output[int]

    def __init__(
        self, name: str, args: PublicationArgs, phase: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
        props: dict[str, Any] = {**args.inputs(phase), **dict.fromkeys(COMPUTED_OUTPUTS)}
        super().__init__(S3PublicationProvider(), name, props, opts)
