"""Every chart version and image tag the platform deploys, in one place.

When a pin moves, the matching fixture under ``../shared/`` (chart default values, CRDs, the chart archive) must
move with it, and so must its entry in ``fixtures.lock.json``: the tests validate our Helm values and custom
resources against those files. Where each chart is installed from is the stack's ``sources`` config
(:meth:`ChartPin.release_args`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The Triton release (serving image, TensorRT container, required TensorRT) is the pipeline's to state: it builds
# the engines for it. Re-exported here beside the chart pins, so every version is found from this file.
from model_pipeline.release import TENSORRT_IMAGE as TENSORRT_IMAGE
from model_pipeline.release import TRITON_IMAGE as TRITON_IMAGE
from model_pipeline.release import TRITON_RELEASE as TRITON_RELEASE
from model_pipeline.release import TRITON_TENSORRT_VERSION as TRITON_TENSORRT_VERSION


def is_http_url(source: str) -> bool:
    """A source given as an http(s):// URL rather than a local path."""
    return source.startswith(("http://", "https://"))


@dataclass(frozen=True)
class ChartPin:
    """A Helm chart: where it comes from and the exact version we install."""

    chart: str
    version: str
    repository: str | None = None  # None for OCI charts, whose `chart` is the full oci:// reference

    @property
    def name(self) -> str:
        """The chart's bare name, as a chart repository's index lists it."""
        return self.chart.rsplit("/", 1)[-1]

    @property
    def archive(self) -> str:
        """File name of the packaged chart: ``<chart>-<version>.tgz``, as ``helm package`` writes it."""
        return f"{self.name}-{self.version}.tgz"

    @property
    def values_fixture(self) -> str:
        """File name of the chart's default values under ``shared/helm-values/``."""
        return f"{self.name}-{self.version}.values.yaml"

    def release_args(self, charts: str | None = None) -> dict[str, Any]:
        """``chart``, ``version`` and ``repository_opts`` of a Helm Release (or v4 Chart) for this pin.

        ``charts`` is where every chart comes from: None for this pin's upstream, an absolute folder holding
        the archives, or the http(s) URL of a chart repository that serves them by name. Helm ignores
        ``version`` for a local archive; it is passed anyway so every release states its pin.
        """
        if charts is None:
            upstream: dict[str, Any] = {"chart": self.chart, "version": self.version}
            if self.repository is not None:
                upstream["repository_opts"] = {"repo": self.repository}
            return upstream
        if is_http_url(charts):
            return {"chart": self.name, "version": self.version, "repository_opts": {"repo": charts}}
        return {"chart": str(Path(charts) / self.archive), "version": self.version}


GPU_OPERATOR = ChartPin("gpu-operator", "v26.7.0", "https://helm.ngc.nvidia.com/nvidia")
HAMI = ChartPin("hami", "2.10.0", "https://project-hami.github.io/HAMi/")
KUBE_PROMETHEUS_STACK = ChartPin(
    "kube-prometheus-stack", "88.5.3", "https://prometheus-community.github.io/helm-charts"
)
PROMETHEUS_ADAPTER = ChartPin("prometheus-adapter", "5.3.0", "https://prometheus-community.github.io/helm-charts")
ENVOY_GATEWAY = ChartPin("oci://docker.io/envoyproxy/gateway-helm", "v1.9.0")
# Envoy Gateway's own CRDs only (crds.envoyGateway.enabled); gateway-helm bundles experimental Gateway API CRDs,
# which the standard channel's safe-upgrades policy refuses, so we install the standard ones ourselves.
ENVOY_GATEWAY_CRDS = ChartPin("oci://docker.io/envoyproxy/gateway-crds-helm", "v1.9.0")

# Envoy Gateway's images, pinned here so that a mirror can serve them (the chart's defaults at v1.9.0; the proxy's
# is the one built into the controller, which the chart leaves unset).
ENVOY_GATEWAY_IMAGE = "docker.io/envoyproxy/gateway:v1.9.0"
ENVOY_RATELIMIT_IMAGE = "docker.io/envoyproxy/ratelimit:17b1956c"
ENVOY_PROXY_IMAGE = "docker.io/envoyproxy/envoy:distroless-v1.39.0"

GATEWAY_API_VERSION = "v1.6.1"
GATEWAY_API_STANDARD_CRDS = (
    f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API_VERSION}/standard-install.yaml"
)


# HAMi runs a stock kube-scheduler beside its extender; it must match the control plane's minor version.
KUBE_SCHEDULER_IMAGE = "registry.k8s.io/kube-scheduler"
# The shell of kube-prometheus-stack's CRD upgrade job; the chart's default is busybox:latest, which moves
# under a running cluster and which registries that only mirror pinned tags do not serve.
CRD_JOB_BUSYBOX_TAG = "1.37.0"
