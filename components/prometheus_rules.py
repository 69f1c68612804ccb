"""The platform's Prometheus rules as plain data: recording rules for per-request latencies, and alerts.

Pure functions with no Pulumi import: the program renders them into PrometheusRule objects, the tests run them
through ``promtool``, and the local serving loop loads them into a real Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.errors import PlatformError
from components.settings import AlertThresholds
from model_pipeline import syntax

# Triton's cumulative latency counters (µs) and the success counter that divides them.
LATENCY_COUNTERS = {
    "queue": "nv_inference_queue_duration_us",
    "compute": "nv_inference_compute_infer_duration_us",
    "request": "nv_inference_request_duration_us",
}
SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
LEVELS = {"pod": ("namespace", "pod"), "pod_model": ("namespace", "pod", "model")}

RECORDING_GROUP = "triton-latency.rules"
ALERT_GROUP = "inference-platform.alerts"


class RuleSettingsError(PlatformError, ValueError):
    """An alert threshold or duration is out of range."""


def _require_durations(**durations: str) -> None:
    for name, text in durations.items():
        if not syntax.DURATION.match(text):
            raise RuleSettingsError(f"{name} ({text!r}) must be {syntax.DURATION_RULE}")


def record_name(level: str, kind: str) -> str:
    """``pod_model:triton_queue_time_us:per_request`` and friends (level: pod | pod_model)."""
    return f"{level}:triton_{kind}_time_us:per_request"


def per_request(counter: str, by: tuple[str, ...], window: str) -> str:
    """Average µs per successful request: increases summed first, then divided; 0 (not NaN) when idle."""
    labels = ", ".join(by)
    return (
        f"sum by ({labels}) (increase({counter}[{window}]))\n"
        f"/\n"
        f"clamp_min(sum by ({labels}) (increase({SUCCESS}[{window}])), 1)"
    )


def recording_rule_group(window: str = "1m", interval: str = "15s") -> dict[str, Any]:
    """Per pod and per pod+model: average queue, compute and end-to-end time per request over ``window``."""
    _require_durations(window=window, interval=interval)
    rules = [
        {"record": record_name(level, kind), "expr": per_request(counter, by, window)}
        for kind, counter in LATENCY_COUNTERS.items()
        for level, by in LEVELS.items()
    ]
    return {"name": RECORDING_GROUP, "interval": interval, "rules": rules}


# --------------------------------------------------------------------------------------------------------------
# Alerts


@dataclass(frozen=True)
class AlertSettings(AlertThresholds):
    """The thresholds (declared once, with the stack config keys that set them), durations and the objects the
    alerts watch; defaults suit a production Triton service."""

    interval: str = "30s"  # evaluation interval of the alert group
    window: str = "5m"  # rate/increase window of the traffic alerts
    # What to watch: Triton's namespace, Deployment, HPA and the scrape job its PodMonitor produces.
    namespace: str = "triton"
    deployment: str = "triton"
    hpa: str = "triton"
    job: str = "triton/triton"
    restart_window: str = "30m"  # the window of `restarts`
    mig: bool = False  # MIG slices: DCGM_FI_DEV_GPU_UTIL is not reported per instance
    not_ready_for: str = "15m"  # the startup budget plus a margin
    runbook_base_url: str = "README.md"

    def __post_init__(self) -> None:
        names = (
            "interval",
            "window",
            "restart_window",
            "target_down_for",
            "no_replicas_for",
            "queue_time_for",
            "failure_ratio_for",
            "hpa_max_for",
            "hpa_metric_for",
            "not_ready_for",
            "gpu_utilisation_for",
            "gpu_memory_for",
        )
        _require_durations(**{name: getattr(self, name) for name in names})
        for name in ("failure_ratio", "gpu_utilisation", "gpu_memory_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise RuleSettingsError(f"{name} ({getattr(self, name)!r}) must be a ratio in (0, 1]")
        if self.queue_time_slo_ms <= 0 or self.min_request_rate < 0 or self.restarts < 1:
            raise RuleSettingsError("queue_time_slo_ms must be > 0, min_request_rate >= 0 and restarts >= 1")

    def runbook(self, alert: str) -> str:
        """The runbook link: the README heading named after the alert."""
        return f"{self.runbook_base_url}#{alert.lower()}"


def _alert(
    s: AlertSettings, name: str, expr: str, for_: str, severity: str, component: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "component": component},
        "annotations": {"summary": summary, "description": description, "runbook_url": s.runbook(name)},
    }


def _ksm(s: AlertSettings, **matchers: str) -> str:
    """Label matchers for kube-state-metrics series of Triton's namespace."""
    return ", ".join([f'namespace="{s.namespace}"', *(f'{k}="{v}"' for k, v in matchers.items())])


def _triton_pods(s: AlertSettings) -> str:
    # Deployment pods are named <deployment>-<replicaset hash>-<pod hash>.
    return f'namespace="{s.namespace}", pod=~"{s.deployment}-[a-z0-9]+-[a-z0-9]+"'


def _availability_alerts(s: AlertSettings) -> list[dict[str, Any]]:
    return [
        _alert(
            s,
            "TritonNoReadyReplicas",
            f"kube_deployment_status_replicas_available{{{_ksm(s, deployment=s.deployment)}}} < 1",
            s.no_replicas_for,
            "critical",
            "triton",
            "No Triton replica is available in {{ $labels.namespace }}",
            "Deployment {{ $labels.namespace }}/{{ $labels.deployment }} has had no available replica for "
            f"{s.no_replicas_for}: every inference request fails.",
        ),
        _alert(
            s,
            "TritonTargetDown",
            f'up{{job="{s.job}"}} == 0',
            s.target_down_for,
            "warning",
            "triton",
            "Prometheus cannot scrape Triton pod {{ $labels.namespace }}/{{ $labels.pod }}",
            f"The metrics endpoint of {{{{ $labels.pod }}}} has been down for {s.target_down_for}: "
            "the pod is hung or gone, and autoscaling runs on stale data.",
        ),
        _alert(
            s,
            "TritonMetricsMissing",
            f'absent(up{{job="{s.job}"}})',
            s.target_down_for,
            "warning",
            "triton",
            f"No Triton scrape target exists for job {s.job}",
            "Prometheus discovers no Triton pod to scrape: the PodMonitor is not selected by Prometheus or "
            "matches no pod. The queue-time metric, the HPA and every Triton alert are blind.",
        ),
    ]


def _traffic_guard(s: AlertSettings, counters: str) -> str:
    total = f'sum by (namespace, model) (rate({{__name__=~"{counters}"}}[{s.window}]))'
    return f"and on (namespace, model)\n{total} >= {s.min_request_rate:g}"


def _traffic_alerts(s: AlertSettings) -> list[dict[str, Any]]:
    slo_us = s.queue_time_slo_ms * 1000
    both = f"{SUCCESS}|{FAILURE}"
    queue = (
        f"(\n{per_request(LATENCY_COUNTERS['queue'], ('namespace', 'model'), s.window)}\n) > {slo_us:g}\n"
        f"{_traffic_guard(s, SUCCESS)}"
    )
    failures = (
        f"(\nsum by (namespace, model) (rate({FAILURE}[{s.window}]))\n/\n"
        f'sum by (namespace, model) (rate({{__name__=~"{both}"}}[{s.window}]))\n) > {s.failure_ratio:g}\n'
        f"{_traffic_guard(s, both)}"
    )
    return [
        _alert(
            s,
            "TritonQueueTimeAboveSlo",
            queue,
            s.queue_time_for,
            "warning",
            "triton",
            "Model {{ $labels.model }} waits too long in Triton's queue",
            'Requests to {{ $labels.namespace }}/{{ $labels.model }} spent {{ $value | printf "%.0f" }} µs '
            f"queued on average over {s.window}, above the {s.queue_time_slo_ms:g} ms SLO.",
        ),
        _alert(
            s,
            "TritonFailureRatioHigh",
            failures,
            s.failure_ratio_for,
            "critical",
            "triton",
            "Model {{ $labels.model }} fails too many requests",
            "{{ $value | humanizePercentage }} of requests to {{ $labels.namespace }}/{{ $labels.model }} failed "
            f"over {s.window} (threshold {s.failure_ratio:.0%}).",
        ),
    ]


def _autoscaling_alerts(s: AlertSettings) -> list[dict[str, Any]]:
    hpa = _ksm(s, horizontalpodautoscaler=s.hpa)
    at_max = (
        f"kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}\n"
        f">= on (namespace, horizontalpodautoscaler)\n"
        f"kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}}"
    )
    inactive = f'kube_horizontalpodautoscaler_status_condition{{{hpa}, condition="ScalingActive", status="false"}} == 1'
    return [
        _alert(
            s,
            "TritonHpaAtMaxReplicas",
            at_max,
            s.hpa_max_for,
            "warning",
            "autoscaling",
            "Triton's HPA has been pinned at its maximum for " + s.hpa_max_for,
            "HPA {{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} runs {{ $value }} replicas, its "
            "maximum: demand exceeds capacity and queue time will grow. Raise autoscaling.maxReplicas or add GPUs.",
        ),
        _alert(
            s,
            "TritonHpaMetricUnavailable",
            inactive,
            s.hpa_metric_for,
            "critical",
            "autoscaling",
            "Triton's HPA cannot read its queue-time metric",
            "HPA {{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }} reports ScalingActive=False: "
            "the custom metrics API returns nothing for it, so Triton no longer scales.",
        ),
    ]


def _pod_alerts(s: AlertSettings) -> list[dict[str, Any]]:
    pods = _triton_pods(s)
    restarts = (
        f'increase(kube_pod_container_status_restarts_total{{{pods}, container="triton"}}'
        f"[{s.restart_window}]) >= {s.restarts}"
    )
    not_ready = f'max by (namespace, pod) (kube_pod_status_ready{{{pods}, condition="false"}}) == 1'
    return [
        _alert(
            s,
            "TritonPodRestarting",
            restarts,
            "0m",
            "warning",
            "triton",
            "Triton pod {{ $labels.pod }} keeps restarting",
            '{{ $labels.namespace }}/{{ $labels.pod }} restarted {{ $value | printf "%.0f" }} times in '
            f"{s.restart_window}: look for OOM kills, a crashing model or a failing liveness probe.",
        ),
        _alert(
            s,
            "TritonPodNotReady",
            not_ready,
            s.not_ready_for,
            "warning",
            "triton",
            "Triton pod {{ $labels.pod }} has not become ready",
            f"{{{{ $labels.namespace }}}}/{{{{ $labels.pod }}}} has not been ready for {s.not_ready_for}, longer "
            "than its startup budget: models fail to load or the repository is unreachable.",
        ),
    ]


def gpu_utilisation_expr(mig: bool) -> str:
    """GPU busy ratio (0-1) per GPU or MIG instance from DCGM."""
    engine = "max by (Hostname, gpu, GPU_I_ID) (DCGM_FI_PROF_GR_ENGINE_ACTIVE)"
    if mig:
        # DCGM_FI_DEV_GPU_UTIL is not reported per MIG instance; the graphics-engine activity is.
        return engine
    # Profiling metrics need DCGM's profiling module (not on every GPU); fall back to the coarse utilisation.
    return f"{engine}\nor\nmax by (Hostname, gpu, GPU_I_ID) (DCGM_FI_DEV_GPU_UTIL) / 100"


def _gpu_alerts(s: AlertSettings) -> list[dict[str, Any]]:
    util = f"(\n{gpu_utilisation_expr(s.mig)}\n) > {s.gpu_utilisation:g}"
    memory = f"hami_vgpu_memory_used_bytes\n/\n(hami_vgpu_memory_limit_bytes > 0)\n> {s.gpu_memory_ratio:g}"
    # The HAMi monitor's own namespace/pod labels become exported_* unless its ServiceMonitor honours labels.
    workload = "{{ or $labels.exported_namespace $labels.namespace }}/{{ or $labels.exported_pod $labels.pod }}"
    return [
        _alert(
            s,
            "GpuUtilisationHigh",
            util,
            s.gpu_utilisation_for,
            "warning",
            "gpu",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is saturated",
            "GPU {{ $labels.gpu }}{{ if $labels.GPU_I_ID }} (MIG instance {{ $labels.GPU_I_ID }}){{ end }} on "
            "{{ $labels.Hostname }} has been {{ $value | humanizePercentage }} busy for "
            f"{s.gpu_utilisation_for}: add GPU capacity or spread replicas.",
        ),
        _alert(
            s,
            "GpuMemoryNearHamiLimit",
            memory,
            s.gpu_memory_for,
            "warning",
            "gpu",
            f"A vGPU uses most of its HAMi memory limit ({workload})",
            "Container {{ or $labels.exported_container $labels.container }} of "
            f"{workload} uses {{{{ $value | humanizePercentage }}}} of "
            "its HAMi GPU memory limit: the next allocation fails with CUDA out-of-memory. Raise "
            "gpu.hami.gpuMemoryMiB or lower Triton's memory pools.",
        ),
    ]


def alert_rule_group(settings: AlertSettings) -> dict[str, Any]:
    """Every platform alert with severity, summary, description and runbook link."""
    rules = [
        *_availability_alerts(settings),
        *_traffic_alerts(settings),
        *_autoscaling_alerts(settings),
        *_pod_alerts(settings),
        *_gpu_alerts(settings),
    ]
    return {"name": ALERT_GROUP, "interval": settings.interval, "rules": rules}


def rule_file(*groups: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus rule file (and PrometheusRule ``spec``): ``{"groups": [...]}``."""
    return {"groups": list(groups)}
