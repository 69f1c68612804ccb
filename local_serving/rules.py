"""The platform's own Prometheus rules and prometheus-adapter rule, taken from the Pulumi program's builders.

Nothing here restates a rule: the recording/alerting groups come from components/prometheus_rules.py and the
adapter rule from components/autoscaling.py, so the local loop tests exactly what the cluster gets.
"""

from __future__ import annotations

import re
from typing import Any

from local_serving.errors import LocalServingError

QUEUE_TIME_POD = "pod:triton_queue_time_us:per_request"
QUEUE_TIME_POD_MODEL = "pod_model:triton_queue_time_us:per_request"
ADAPTER_METRIC = "triton_queue_time_per_request_us"
_TEMPLATE_FIELD = re.compile(r"<<\s*\.(\w+)\s*>>")


def platform_rule_groups(window: str, interval: str, alert_settings: Any = None) -> list[dict[str, Any]]:
    """Recording group and alert group as the program renders them, with this run's window and interval."""
    from components import prometheus_rules

    recording = prometheus_rules.recording_rule_group(window=window, interval=interval)
    settings = alert_settings if alert_settings is not None else default_alert_settings(interval)
    return [recording, prometheus_rules.alert_rule_group(settings)]


def default_alert_settings(interval: str) -> Any:
    """The monitoring helper's default alert settings, evaluated every ``interval``."""
    from components import prometheus_rules
    from local_serving.prometheus import LOCAL_NAMESPACE

    # The local scrape job is "triton" in namespace "local"; in the cluster it is the PodMonitor's job.
    return prometheus_rules.AlertSettings(interval=interval, namespace=LOCAL_NAMESPACE, job="triton")


def platform_adapter_rules() -> dict[str, Any]:
    """The prometheus-adapter chart's ``rules:`` value the program deploys."""
    from components import autoscaling

    return dict(autoscaling.adapter_rules())


def adapter_rule(rules: dict[str, Any], metric: str = ADAPTER_METRIC) -> dict[str, Any]:
    """The custom rule that exposes ``metric``; raise naming what the rules expose instead."""
    exposed = {}
    for rule in rules.get("custom", []):
        series = series_name(rule)
        exposed[exposed_name(rule, series)] = rule
    if metric not in exposed:
        raise LocalServingError(f"adapter rules expose {sorted(exposed)}, not {metric}")
    return exposed[metric]


def series_name(rule: dict[str, Any]) -> str:
    """The metric name a rule's ``seriesQuery`` selects (``name{...}`` or ``{__name__=~...}`` unsupported)."""
    match = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"])
    if match is None:
        raise LocalServingError(f"adapter seriesQuery {rule['seriesQuery']!r} does not start with a metric name")
    return match.group(1)


def exposed_name(rule: dict[str, Any], series: str) -> str:
    """The custom-metrics API name, computed like the adapter: ``name.matches`` regex, ``name.as`` template."""
    naming = rule.get("name", {})
    pattern = naming.get("matches") or "(.*)"
    compiled = re.compile(pattern)
    # The adapter's default for `as` is the first capture group when there is one, else the whole match.
    replacement = naming.get("as") or ("$1" if compiled.groups else "$0")
    matched = compiled.search(series)
    if matched is None:
        return series
    return matched.expand(re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", replacement))


def fill_metrics_query(rule: dict[str, Any], namespace: str, pods: list[str]) -> str:
    """``metricsQuery`` with the template filled as the adapter does for a Pods metric in one namespace."""
    values = {
        "Series": series_name(rule),
        "LabelMatchers": f'namespace="{namespace}",pod=~"{"|".join(pods)}"',
        "GroupBy": "pod",
    }
    unknown = sorted(set(_TEMPLATE_FIELD.findall(rule["metricsQuery"])) - set(values))
    if unknown:
        raise LocalServingError(f"adapter metricsQuery uses template fields {unknown}; only {sorted(values)} are known")
    return _TEMPLATE_FIELD.sub(lambda m: values[m.group(1)], rule["metricsQuery"])
