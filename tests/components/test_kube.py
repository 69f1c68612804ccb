"""components/kube.py: what every Kubernetes object the platform declares shares, across the whole program."""

from __future__ import annotations

from components.kube import FORCE_ANNOTATION
from offline.harness import Recording

DECLARED_BY_OTHERS = ("kubernetes:helm.sh/", "kubernetes:yaml/")  # Helm's and the manifests' own objects


def test_every_object_the_platform_declares_is_applied_with_force(stack: Recording) -> None:
    """A `kubectl patch` during an incident must not block the next `pulumi up` on a field-manager conflict."""
    declared = [
        r
        for r in stack.resources
        if r.type.startswith("kubernetes:") and not r.type.startswith(DECLARED_BY_OTHERS) and "metadata" in r.inputs
    ]
    assert len(declared) > 10
    unforced = [r.name for r in declared if r.inputs["metadata"].get("annotations", {}).get(FORCE_ANNOTATION) != "true"]
    assert unforced == []


def test_helm_releases_are_left_to_helm(stack: Recording) -> None:
    releases = [r for r in stack.resources if r.type == "kubernetes:helm.sh/v3:Release"]
    assert releases and all(FORCE_ANNOTATION not in str(r.inputs.get("metadata", {})) for r in releases)


def test_the_replicas_the_hpa_owns_are_not_in_the_platforms_apply(prod: Recording) -> None:
    """Forcing takes back only the fields the platform applies: under the HPA, the Deployment declares no replicas."""
    deployment = prod.one("kubernetes:apps/v1:Deployment", "triton-deployment")
    assert prod.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert "replicas" not in deployment.inputs["spec"]
