"""Autoscaling: prometheus-adapter publishes Triton's queue time per request per pod; an HPA scales on it.

The adapter reads the recording rule ``pod:triton_queue_time_us:per_request`` (components/prometheus_rules.py),
which is 0 for an idle pod rather than NaN, so the HPA always has a number and never shows ``<unknown>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.errors import PlatformError
from components.kube import after, labels
from components.monitoring import PrometheusEndpoint
from components.prometheus_rules import record_name
from components.settings import AutoscalingSettings, ScalingRules
from components.triton_cluster import TritonBackend

QUEUE_TIME_METRIC = "triton_queue_time_per_request_us"  # µs per request, per pod
PENDING_METRIC = "triton_pending_requests"  # requests waiting in Triton's queues, per pod
PENDING_SERIES = "nv_inference_pending_request_count"


class AutoscalingError(PlatformError, ValueError):
    """The autoscaling inputs cannot produce a working adapter or HPA."""


def _pods_rule(series: str, metric: str, aggregate: str) -> dict[str, Any]:
    """An adapter rule exposing ``series`` as Pods metric ``metric``, in whatever namespace the pods run."""
    return {
        "seriesQuery": f'{series}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{re.escape(series)}$", "as": metric},
        "metricsQuery": f"{aggregate}(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)",
    }


def adapter_rules() -> dict[str, Any]:
    """The chart's ``rules.custom``: queue time per request (a recorded series: one per pod, so ``max`` keeps
    it as is) and queued requests (a per-model gauge, summed per pod)."""
    return {
        "custom": [
            _pods_rule(record_name("pod", "queue"), QUEUE_TIME_METRIC, "max"),
            _pods_rule(PENDING_SERIES, PENDING_METRIC, "sum"),
        ]
    }


def prometheus_endpoint(url: str) -> dict[str, Any]:
    """The chart's ``prometheus`` value: it renders ``url:port+path``, so the port must not stay in the url."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AutoscalingError(f"prometheus url {url!r} must be http(s)://host[:port][/path]")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"url": f"{parts.scheme}://{parts.hostname}", "port": port, "path": parts.path.rstrip("/")}


def adapter_values(settings: AutoscalingSettings, prometheus_url: str) -> dict[str, Any]:
    """prometheus-adapter values: only our rules (no default rules, no resource metrics beside metrics-server)."""
    return {
        "prometheus": prometheus_endpoint(prometheus_url),
        "metricsRelistInterval": settings.adapter_relist_interval,
        "logLevel": 2,
        "replicas": settings.adapter_replicas,
        "rules": {"default": False, **adapter_rules(), "external": []},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        # Without the adapter every HPA on custom metrics stops scaling: keep one up through node drains.
        "podDisruptionBudget": {"enabled": settings.adapter_replicas > 1, "maxUnavailable": 1},
    }


def quantity(value: float) -> str:
    """A Kubernetes quantity for a non-negative number: whole units, else milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _scaling_rules(rules: ScalingRules) -> dict[str, Any]:
    return {
        "stabilizationWindowSeconds": rules.stabilization_window_seconds,
        "selectPolicy": rules.select_policy,
        "policies": [{"type": p.type, "value": p.value, "periodSeconds": p.period_seconds} for p in rules.policies],
    }


def _pods_metric(name: str, average: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": average}},
    }


def hpa_spec(settings: AutoscalingSettings, deployment_name: str) -> dict[str, Any]:
    """autoscaling/v2 spec: queue time per request (target in µs = ms * 1000), optionally queued requests."""
    metrics = [_pods_metric(QUEUE_TIME_METRIC, quantity(settings.target_queue_time_ms * 1000))]
    if settings.pending_requests_target is not None:
        metrics.append(_pods_metric(PENDING_METRIC, quantity(settings.pending_requests_target)))
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name},
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "metrics": metrics,
        "behavior": {"scaleUp": _scaling_rules(settings.scale_up), "scaleDown": _scaling_rules(settings.scale_down)},
    }


@dataclass(frozen=True)
class AutoscalingArgs:
    """Inputs of :class:`Autoscaling`."""

    settings: AutoscalingSettings
    prometheus: PrometheusEndpoint  # MonitoringStack.prometheus: the adapter reads it and runs beside it
    target: TritonBackend  # TritonCluster.backend: the Deployment the HPA scales
    # Everything else the stack deploys: the adapter goes in last and, on destroy, first (see __main__.py).
    wait_for: Sequence[pulumi.Resource] = field(default_factory=tuple)


class Autoscaling(pulumi.ComponentResource):
    """prometheus-adapter (custom metrics API) and the HPA on the Triton Deployment."""

    adapter_release: pulumi.Output[str]
    hpa_name: pulumi.Output[str]
    metric_name: str = QUEUE_TIME_METRIC

    def __init__(self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:Autoscaling", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        adapter = k8s.helm.v3.Release(
            f"{name}-prometheus-adapter",
            name="prometheus-adapter",
            **s.sources.release_args(versions.PROMETHEUS_ADAPTER, adapter_values(s, args.prometheus.url)),
            namespace=args.prometheus.namespace,
            opts=after(child, args.wait_for),
        )
        hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata={"name": "triton", "namespace": args.target.namespace, "labels": labels("triton", name)},
            spec=args.target.deployment.apply(lambda d: hpa_spec(s, d)),
            # Created once the custom metrics API is served, so its first syncs do not fail.
            opts=after(child, [adapter]),
        )
        self.adapter_release = adapter.status.name
        self.hpa_name = hpa.metadata.name
        self.register_outputs(
            {"adapter_release": self.adapter_release, "hpa_name": self.hpa_name, "metric_name": self.metric_name}
        )
