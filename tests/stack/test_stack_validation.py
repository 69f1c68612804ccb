"""Whole-stack checks: everything both stacks declare validates against upstream schemas, CRDs and chart values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components import versions
from offline.harness import RecordedResource, Recording
from offline.validate import (
    UNLISTED_VALUES,
    crd_groups,
    custom_resource_errors,
    deep_merge,
    dynamic_resource_errors,
    kubernetes_errors,
    load_values,
    unknown_values_keys,
)
from tests.paths import ROOT

# The oldest Kubernetes we support and the newest the validator ships.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")

# Subcharts whose own defaults apply below a top-level key of the parent chart's values.
SUBCHARTS = {"kube-prometheus-stack": {"grafana": "grafana-12.11.1.values.yaml"}}


def _group(obj: dict[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/")[0] if "/" in api_version else ""


def _built_in(stack: Recording, crds: Path) -> list[RecordedResource]:
    groups = crd_groups(crds)
    return [r for r in stack.kubernetes_objects() if _group(r.inputs) not in groups]


def _custom(stack: Recording, crds: Path) -> list[RecordedResource]:
    groups = crd_groups(crds)
    return [r for r in stack.kubernetes_objects() if _group(r.inputs) in groups]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_kubernetes_object_validates_strictly(stack: Recording, shared_dir: Path, version: str) -> None:
    objects = _built_in(stack, shared_dir / "crds")
    assert objects, "the stack declares no Kubernetes objects"
    problems = [p for r in objects for p in kubernetes_errors(r.inputs, version)]
    assert problems == []


def test_every_custom_resource_validates_against_its_crd(stack: Recording, shared_dir: Path) -> None:
    problems = [
        p for r in _custom(stack, shared_dir / "crds") for p in custom_resource_errors(r.inputs, shared_dir / "crds")
    ]
    assert problems == []


def _values_fixture(release: RecordedResource, shared_dir: Path) -> Path:
    chart = str(release.inputs["chart"]).rsplit("/", 1)[-1]
    return shared_dir / "helm-values" / f"{chart}-{release.inputs['version']}.values.yaml"


def test_every_helm_release_is_pinned_to_a_version_we_hold_the_values_of(stack: Recording, shared_dir: Path) -> None:
    releases = stack.helm_releases()
    assert releases
    for release in releases:
        assert release.inputs.get("version"), f"{release.name} is not pinned"
        assert release.inputs.get("name"), f"{release.name} has no fixed Helm release name (Helm would suffix it)"
        fixture = _values_fixture(release, shared_dir)
        assert fixture.is_file(), f"{release.name}: no default values for {fixture.name}; move the fixture with the pin"


def test_every_helm_value_we_set_is_a_key_of_the_chart(stack: Recording, shared_dir: Path) -> None:
    problems = []
    for release in stack.helm_releases():
        chart = str(release.inputs["chart"]).rsplit("/", 1)[-1]
        subcharts = {
            key: load_values(shared_dir / "helm-values" / name) for key, name in SUBCHARTS.get(chart, {}).items()
        }
        found = unknown_values_keys(
            release.inputs.get("values") or {},
            load_values(_values_fixture(release, shared_dir)),
            allowed=UNLISTED_VALUES.get(chart, {}),
            subcharts=subcharts,
        )
        problems += [f"{release.name} ({chart}): {p}" for p in found]
    assert problems == []


def _latest_tags(values: Any, path: str = "") -> list[str]:
    """Dotted paths of image tags that say `latest`, anywhere in a values tree."""
    if isinstance(values, dict):
        found = [path] if values.get("tag") == "latest" and ("repository" in values or "image" in path) else []
        return found + [p for k, v in values.items() for p in _latest_tags(v, f"{path}.{k}" if path else k)]
    return []


def test_no_chart_runs_an_image_tagged_latest(stack: Recording, shared_dir: Path) -> None:
    """kube-prometheus-stack's CRD upgrade job defaults to busybox:latest: it moves under a running cluster, and
    mirrors of pinned tags do not serve it. Checked on each chart's defaults merged with our values."""
    found = []
    for release in stack.helm_releases():
        merged = deep_merge(load_values(_values_fixture(release, shared_dir)), release.inputs.get("values") or {})
        found += [f"{release.name}: {path}" for path in _latest_tags(merged)]
    assert found == []


def test_pins_come_from_the_versions_module(stack: Recording) -> None:
    pinned = {(p.chart, p.version) for p in vars(versions).values() if isinstance(p, versions.ChartPin)}
    for release in stack.helm_releases():
        assert (release.inputs["chart"], release.inputs["version"]) in pinned, release.name


def test_every_resource_belongs_to_a_component_except_the_provider(stack: Recording) -> None:
    orphans = [
        r.name
        for r in stack.resources
        if r.custom and not r.type.startswith("pulumi:providers:") and stack.component_of(r) is None
    ]
    assert orphans == []


def test_every_kubernetes_resource_uses_the_explicit_provider(stack: Recording) -> None:
    provider = stack.one("pulumi:providers:kubernetes")
    assert provider.inputs.get("context"), "the provider must target the configured kubeconfig context"
    kubernetes = [r for r in stack.resources if r.custom and r.type.startswith("kubernetes:")]
    assert kubernetes
    wrong = [r.name for r in kubernetes if not (r.provider or "").startswith(provider.urn + "::")]
    assert wrong == [], "these would use the ambient kubeconfig instead of the stack's cluster"


def test_every_dynamic_resource_runs_a_provider_class_of_the_project(stack: Recording) -> None:
    dynamic = stack.dynamic_resources()
    assert len(dynamic) == 3  # the repository's files and manifest, the generated Grafana password
    assert [p for r in dynamic for p in dynamic_resource_errors(r.name, r.dynamic_provider, ROOT)] == []


# --- the validators themselves must catch what they exist to catch -----------------------------------------------


def test_a_removed_api_version_fails_validation() -> None:
    hpa = {
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "triton"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }
    assert kubernetes_errors(hpa, "1.31.0")
    assert kubernetes_errors({**hpa, "apiVersion": "autoscaling/v2"}, "1.31.0") == []


def test_an_unknown_field_fails_validation() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "appProtcol": "http"}]},
    }
    assert kubernetes_errors(service, "1.31.0")


def test_a_custom_resource_with_a_misspelt_field_fails(shared_dir: Path) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "t"},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "metrics", "intervall": "15s"}]},
    }
    assert custom_resource_errors(monitor, shared_dir / "crds")
    del monitor["spec"]["podMetricsEndpoints"][0]["intervall"]
    assert custom_resource_errors(monitor, shared_dir / "crds") == []


def test_an_unknown_helm_value_is_reported() -> None:
    defaults = {"driver": {"enabled": True, "version": "1"}, "nodeSelector": {}}
    values = {"driver": {"enabeld": False}, "nodeSelector": {"any": "key"}}
    assert unknown_values_keys(values, defaults) == ["driver.enabeld: not a key of the chart's values"]


def test_a_dynamic_provider_pickled_by_value_or_from_elsewhere_is_reported() -> None:
    assert "pickled by value" in dynamic_resource_errors("x", "dill._dill._create_type", ROOT)[0]
    assert "pickled by value" in dynamic_resource_errors("x", "__main__.Provider", ROOT)[0]
    assert "not a module of the project" in dynamic_resource_errors("x", "json.JSONDecoder", ROOT)[0]
    assert (
        "not a pulumi.dynamic.ResourceProvider"
        in dynamic_resource_errors("x", "components.s3_publication.PublicationArgs", ROOT)[0]
    )
    assert "could not be read" in dynamic_resource_errors("x", None, ROOT)[0]
