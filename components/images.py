"""Where every image comes from: its upstream registry, or one mirror for air-gapped clusters.

``sources.imageRegistry`` names a registry that serves every upstream image under its upstream path,
``<mirror>/<upstream registry>/<repository>:<tag>`` (a Harbor or Artifactory proxy with the registry as the first
path segment, or a registry filled with ``crane copy`` / ``skopeo sync`` the same way). It applies to the images
the platform runs itself and to every image of every chart it installs; ``CHART_IMAGES`` lists the latter per
chart and pin, and tests/components/test_images.py checks the list against each chart's default values, so a chart
bump that adds an image fails a test instead of pulling from the internet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components import versions


def mirrored(image: str, mirror: str | None) -> str:
    """``image`` (fully qualified: registry/repository[:tag]) as the mirror serves it, or unchanged."""
    return f"{mirror.rstrip('/')}/{image}" if mirror else image


@dataclass(frozen=True)
class ChartImage:
    """One image a chart runs: the values path of its map, which key names the registry, and that key's default."""

    path: str  # dotted path of the image's map in the chart's values
    key: str  # "registry" (registry only), "repository" (registry/path) or "image" (the full reference)
    upstream: str  # the chart's default value of that key, at the pinned version

    def values(self, mirror: str) -> dict[str, Any]:
        tree: dict[str, Any] = {self.key: mirrored(self.upstream, mirror)}
        for part in reversed(self.path.split(".")):
            tree = {part: tree}
        return tree


def _registry(path: str, upstream: str) -> ChartImage:
    return ChartImage(path, "registry", upstream)


def _repository(path: str, upstream: str) -> ChartImage:
    return ChartImage(path, "repository", upstream)


_NVCR, _NVCR_CN, _NVCR_K8S = "nvcr.io/nvidia", "nvcr.io/nvidia/cloud-native", "nvcr.io/nvidia/k8s"
CHART_IMAGES: dict[str, tuple[ChartImage, ...]] = {
    versions.GPU_OPERATOR.name: (
        *(
            _repository(p, _NVCR)
            for p in (
                "validator",
                "operator",
                "driver",
                "devicePlugin",
                "gfd",
                "nodeStatusExporter",
                "sandboxDevicePlugin",
                "draDriver",
            )
        ),
        *(
            _repository(p, _NVCR_CN)
            for p in (
                "driver.manager",
                "dcgm",
                "migManager",
                "gds",
                "gdrcopy",
                "vgpuManager.driverManager",
                "vgpuDeviceManager",
                "vfioManager",
                "vfioManager.driverManager",
                "kataSandboxDevicePlugin",
                "ccManager",
            )
        ),
        *(_repository(p, _NVCR_K8S) for p in ("toolkit", "dcgmExporter")),
        _repository("node-feature-discovery.image", "registry.k8s.io/nfd/node-feature-discovery"),
    ),
    versions.HAMI.name: (
        # kube-scheduler: the chart's default lives on a mirror; the platform sets registry.k8s.io (hami_values).
        _registry("scheduler.kubeScheduler.image", "registry.k8s.io"),
        *(
            _registry(p, "docker.io")
            for p in (
                "scheduler.extender.image",
                "scheduler.patch.image",
                "scheduler.patch.imageNew",
                "devicePlugin.image",
                "devicePlugin.monitor.image",
                "mockDevicePlugin.image",
            )
        ),
    ),
    versions.KUBE_PROMETHEUS_STACK.name: (
        _registry("crds.upgradeJob.image.busybox", "docker.io"),
        _registry("crds.upgradeJob.image.kubectl", "registry.k8s.io"),
        *(
            _registry(p, "quay.io")
            for p in (
                "alertmanager.alertmanagerSpec.image",
                "prometheusOperator.admissionWebhooks.deployment.image",
                "prometheusOperator.image",
                "prometheusOperator.prometheusConfigReloader.image",
                "prometheusOperator.thanosImage",
                "prometheus.prometheusSpec.image",
                "thanosRuler.thanosRulerSpec.image",
            )
        ),
        _registry("prometheusOperator.admissionWebhooks.patch.image", "ghcr.io"),
        # Subcharts: grafana, kube-state-metrics, prometheus-node-exporter.
        *(
            _registry(p, "docker.io")
            for p in (
                "grafana.image",
                "grafana.testFramework.image",
                "grafana.downloadDashboardsImage",
                "grafana.initChownData.image",
                "grafana.imageRenderer.image",
            )
        ),
        _registry("grafana.sidecar.image", "quay.io"),
        _registry("kube-state-metrics.image", "registry.k8s.io"),
        *(
            _registry(p, "quay.io")
            for p in (
                "kube-state-metrics.kubeRBACProxy.image",
                "prometheus-node-exporter.image",
                "prometheus-node-exporter.kubeRBACProxy.image",
                "prometheus-node-exporter.permissionInitContainer.image",
            )
        ),
        _registry("prometheus-windows-exporter.image", "ghcr.io"),
    ),
    versions.PROMETHEUS_ADAPTER.name: (_repository("image", "registry.k8s.io/prometheus-adapter/prometheus-adapter"),),
    versions.ENVOY_GATEWAY.name: (
        ChartImage("global.images.envoyGateway", "image", versions.ENVOY_GATEWAY_IMAGE),
        ChartImage("global.images.ratelimit", "image", versions.ENVOY_RATELIMIT_IMAGE),
        ChartImage("global.images.envoyProxy", "image", versions.ENVOY_PROXY_IMAGE),
    ),
    versions.ENVOY_GATEWAY_CRDS.name: (),
}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, maps merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def chart_values(pin: versions.ChartPin, values: Mapping[str, Any], mirror: str | None) -> dict[str, Any]:
    """A release's values with every image of its chart pulled through ``mirror`` (unchanged without one)."""
    merged = dict(values)
    if mirror:
        for image in CHART_IMAGES[pin.name]:
            merged = merge(merged, image.values(mirror))
    return merged
