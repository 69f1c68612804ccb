"""The serving-loop report: answers, latency, throughput, recorded queue time, adapter value, HPA, alerts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from local_serving.errors import LocalServingError
from local_serving.load import LoadResult
from local_serving.prometheus import LOCAL_NAMESPACE, LOCAL_POD, PrometheusClient
from local_serving.rules import QUEUE_TIME_POD, QUEUE_TIME_POD_MODEL, adapter_rule, fill_metrics_query

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK_PROJECT = "inference-platform"


@dataclass(frozen=True)
class AutoscalingTarget:
    """The HPA's inputs: target queue time (ms, as in the stack config), replica bounds, current replicas."""

    target_queue_time_ms: float
    min_replicas: int
    max_replicas: int
    current_replicas: int = 1

    @property
    def target_us(self) -> float:
        """The HPA AverageValue: the adapter metric is in µs."""
        return self.target_queue_time_ms * 1000.0


def stack_autoscaling_target(stack: str = "dev") -> AutoscalingTarget:
    """Target and bounds from ``Pulumi.<stack>.yaml``, validated by the program's own config parser."""
    from components import config

    settings = config.parse_config(stack, _stack_values(stack)).autoscaling
    target_ms = getattr(settings, "target_queue_time_ms", None)
    if target_ms is None:
        raise LocalServingError(
            f"stack {stack}: autoscaling settings carry no target_queue_time_ms; pass --target-queue-time-ms"
        )
    return AutoscalingTarget(float(target_ms), settings.min_replicas, settings.max_replicas)


def _stack_values(stack: str) -> dict[str, Any]:
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise LocalServingError(f"stack file {path} does not exist; pass --stack with one of the Pulumi.<stack>.yaml")
    raw = yaml.safe_load(path.read_text()).get("config", {}) or {}
    prefix = f"{STACK_PROJECT}:"
    return {key.removeprefix(prefix): value for key, value in raw.items() if key.startswith(prefix)}


def desired_replicas(target: AutoscalingTarget, metric_value: float) -> int:
    """The replica count the HPA formula (components/hpa_model.py) asks for."""
    from components.hpa_model import desired_replicas as hpa_formula

    return int(
        hpa_formula(target.current_replicas, metric_value, target.target_us, target.min_replicas, target.max_replicas)
    )


def queue_time_section(prometheus: PrometheusClient, models: list[str]) -> dict[str, Any]:
    """The recorded per-request queue time, per pod and per model, read back from Prometheus."""
    pod_labels = {"namespace": LOCAL_NAMESPACE, "pod": LOCAL_POD}
    return {
        "pod_us": prometheus.query_value(QUEUE_TIME_POD, pod_labels),
        "per_model_us": {
            model: prometheus.query_value(QUEUE_TIME_POD_MODEL, {**pod_labels, "model": model}) for model in models
        },
    }


def autoscaling_section(
    prometheus: PrometheusClient, adapter_rules: dict[str, Any], target: AutoscalingTarget
) -> dict[str, Any]:
    """The adapter rule's query with its template filled, its value here, and the HPA's answer to it."""
    rule = adapter_rule(adapter_rules)
    query = fill_metrics_query(rule, LOCAL_NAMESPACE, [LOCAL_POD])
    value = prometheus.query_value(query, {"pod": LOCAL_POD})
    section: dict[str, Any] = {"adapter_query": query, "adapter_value_us": value, **asdict(target)}
    section["desired_replicas"] = desired_replicas(target, value) if value is not None else None
    return section


def alerts_section(prometheus: PrometheusClient) -> list[dict[str, Any]]:
    """Every alerting rule with its state, and the labels of its active instances."""
    return [
        {"alert": rule["name"], "state": rule["state"], "active": [alert["labels"] for alert in rule.get("alerts", [])]}
        for rule in prometheus.alerting_rules()
    ]


def build_report(
    prometheus: PrometheusClient,
    loads: list[LoadResult],
    models: list[str],
    adapter_rules: dict[str, Any],
    target: AutoscalingTarget,
) -> dict[str, Any]:
    """Everything the loop proves, as one JSON-able dict."""
    return {
        "load": [load.summary() for load in loads],
        "queue_time": queue_time_section(prometheus, models),
        "autoscaling": autoscaling_section(prometheus, adapter_rules, target),
        "alerts": alerts_section(prometheus),
    }


def render_text(report: dict[str, Any]) -> str:
    """A human-readable report."""
    lines = ["Load", *(_load_line(load) for load in report["load"])]
    queue = report["queue_time"]
    lines += ["Recorded queue time per request (Prometheus)", f"  {QUEUE_TIME_POD}: {_us(queue['pod_us'])}"]
    lines += [f"  {QUEUE_TIME_POD_MODEL}{{model={m!r}}}: {_us(v)}" for m, v in queue["per_model_us"].items()]
    scaling = report["autoscaling"]
    lines += [
        "Autoscaling",
        f"  adapter query: {scaling['adapter_query']}",
        f"  adapter value: {_us(scaling['adapter_value_us'])}; target {scaling['target_queue_time_ms']} ms "
        f"-> HPA asks for {scaling['desired_replicas']} replica(s) "
        f"(from {scaling['current_replicas']}, bounds {scaling['min_replicas']}..{scaling['max_replicas']})",
        "Alerts",
    ]
    lines += [f"  {alert['alert']}: {alert['state']}" for alert in report["alerts"]]
    return "\n".join(lines)


def _load_line(load: dict[str, Any]) -> str:
    head = f"  {load['model']} over {load['protocol']}"
    if not load["requests"]:
        return f"{head}: no answers ({load['first_errors']})"
    latency = load["latency_ms"]
    accuracy = f"{load['accuracy']:.2%}" if load["accuracy"] is not None else "n/a (no labels)"
    return (
        f"{head}: {load['requests']} requests (batch {load['batch_size']}, {load['concurrency']} clients, "
        f"{load['errors']} errors), {load['throughput_inferences_per_s']:.1f} inferences/s, "
        f"p50/p95/p99 {latency['p50']}/{latency['p95']}/{latency['p99']} ms, accuracy {accuracy}, "
        f"equal to {load['reference']} {load['matches_reference']:.2%}"
    )


def _us(value: float | None) -> str:
    return "no series" if value is None else f"{value:.1f} µs"


def write_report(report: dict[str, Any], path: Path) -> None:
    """Save the report as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
