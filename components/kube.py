"""Small builders for Kubernetes objects that several components share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

PART_OF = "inference-platform"
# Server-side apply refuses to take back a field another manager wrote (`kubectl patch` during an incident), and the
# stack would stay stuck on the conflict: on the objects the platform declares, its declared state wins. Fields it
# leaves to others (the Deployment's replicas under the HPA, what controllers write) are not in its apply at all.
FORCE_ANNOTATION = "pulumi.com/patchForce"
_NOT_FORCED = ("kubernetes:helm.sh/v3:Release",)  # Helm owns what a release renders; Helm upgrades it


def cluster_options(context: str | None, kubeconfig: str | None) -> pulumi.ResourceOptions:
    """Options that put resources on the stack's cluster, through one server-side-apply provider, with the
    declared state winning over hand edits (FORCE_ANNOTATION)."""
    provider = k8s.Provider("kubernetes", context=context, kubeconfig=kubeconfig, enable_server_side_apply=True)
    return pulumi.ResourceOptions(providers={"kubernetes": provider}, transformations=[declared_state_wins])


def declared_state_wins(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Mark every Kubernetes object the platform declares (not Helm releases) for a forced server-side apply."""
    metadata = args.props.get("metadata")
    if not args.type_.startswith("kubernetes:") or args.type_ in _NOT_FORCED or not isinstance(metadata, dict):
        return None
    annotations = {**(metadata.get("annotations") or {}), FORCE_ANNOTATION: "true"}
    props = {**args.props, "metadata": {**metadata, "annotations": annotations}}
    return pulumi.ResourceTransformationResult(props, args.opts)


def after(opts: pulumi.ResourceOptions, resources: Iterable[pulumi.Resource]) -> pulumi.ResourceOptions:
    """``opts``, waiting for ``resources`` too: for an order no data carries (CRDs before their objects, a
    chart's webhook before the resources it admits)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(resources)))


def labels(name: str, component: str) -> dict[str, str]:
    """Recommended app labels; the first two also serve as the pod selector."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": f"{name}-{component}",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(all_labels: dict[str, str]) -> dict[str, str]:
    """The stable subset of :func:`labels` that selects pods (never changes across upgrades)."""
    return {k: all_labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}


def namespace(resource_name: str, name: str, pod_security: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    """A namespace whose Pod Security Admission level is enforced, not just audited."""
    return k8s.core.v1.Namespace(
        resource_name,
        metadata={
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "pod-security.kubernetes.io/enforce": pod_security,
                "pod-security.kubernetes.io/warn": pod_security,
            },
        },
        opts=opts,
    )


def restricted_pod_security(uid: int = 1000) -> dict[str, Any]:
    """Pod-level settings that satisfy the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    """Container-level settings: no privilege, no capabilities, read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


S3_KEY_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def s3_keys_secret(
    resource_name: str,
    metadata: dict[str, Any],
    access_key_id: pulumi.Input[str] | None,
    secret_access_key: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[str] | None:
    """Static S3 keys (S3-compatible stores only; AWS uses IRSA) as a Secret built from Pulumi secrets: its
    name, or None (and no Secret) without keys."""
    if access_key_id is None or secret_access_key is None:
        return None
    secret = k8s.core.v1.Secret(
        resource_name,
        metadata=metadata,
        type="Opaque",
        string_data={S3_KEY_NAMES[0]: access_key_id, S3_KEY_NAMES[1]: secret_access_key},
        opts=opts,
    )
    return secret.metadata.name


def s3_keys_env(secret_name: pulumi.Input[str]) -> list[dict[str, Any]]:
    """The container env that reads those keys from the Secret (never their values)."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}} for key in S3_KEY_NAMES]


def url_port(url: str) -> int:
    """The TCP port an http(s) URL reaches (its explicit port, else the scheme's), for an egress policy."""
    split = urlsplit(url)
    return split.port or (80 if split.scheme == "http" else 443)
