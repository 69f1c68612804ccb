"""Autoscaling: the adapter's query over the real recording rules (promtool), the HPA object, and the wiring."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import prometheus_rules
from components.autoscaling import (
    PENDING_METRIC,
    QUEUE_TIME_METRIC,
    AutoscalingError,
    adapter_rules,
    adapter_values,
    hpa_spec,
    prometheus_endpoint,
    quantity,
)
from components.config import ConfigError, parse_config
from components.settings import AutoscalingSettings, ScalingPolicy, ScalingRules
from offline.harness import Recording, run_program
from offline.validate import kubernetes_errors

NAMESPACE = "serving"
PODS = ("triton-a", "triton-b", "triton-c")
HPA_TYPE = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"


def _rule(metric: str) -> dict[str, Any]:
    """The custom rule the adapter serves ``metric`` from, found by its naming as the adapter applies it."""
    for rule in adapter_rules()["custom"]:
        series = re.match(r"[a-zA-Z_:][\w:]*", rule["seriesQuery"]).group(0)  # type: ignore[union-attr]
        if re.sub(rule["name"]["matches"], rule["name"]["as"], series) == metric:
            return rule
    raise AssertionError(f"no adapter rule exposes {metric}")


def _filled(rule: dict[str, Any], namespace: str, pods: tuple[str, ...]) -> str:
    """metricsQuery with the template filled as the adapter does for a Pods metric of these pods."""
    series = re.match(r"[a-zA-Z_:][\w:]*", rule["seriesQuery"]).group(0)  # type: ignore[union-attr]
    fields = {"Series": series, "LabelMatchers": f'namespace="{namespace}",pod=~"{"|".join(pods)}"', "GroupBy": "pod"}
    query = re.sub(r"<<\s*\.(\w+)\s*>>", lambda m: fields[m.group(1)], rule["metricsQuery"])
    assert "<<" not in query, query
    return query


def _counter(start: float, step: float, samples: int = 40) -> str:
    return f"{start}+{step}x{samples}"


# Triton counters scraped every 15 s. triton-a: mnist 10 req at 2 ms queue + resnet50 5 req at 8 ms per scrape
# -> (20000+40000)/15 = 4000 µs per request. triton-b: mnist 20 req at 1 ms, resnet50 loaded but idle -> 1000 µs
# (an idle model must not halve it). triton-c: idle -> 0, not NaN. A pod of the same name elsewhere must not leak in.
TRITON_SERIES = [
    ("triton-a", NAMESPACE, "mnist", 10, 2000),
    ("triton-a", NAMESPACE, "resnet50", 5, 8000),
    ("triton-b", NAMESPACE, "mnist", 20, 1000),
    ("triton-b", NAMESPACE, "resnet50", 0, 0),
    ("triton-c", NAMESPACE, "mnist", 0, 0),
    ("triton-c", NAMESPACE, "resnet50", 0, 0),
    ("triton-a", "elsewhere", "mnist", 100, 900_000),
]
EXPECTED_US = {"triton-a": 4000, "triton-b": 1000, "triton-c": 0}


def _input_series() -> list[dict[str, str]]:
    series = []
    for pod, namespace, model, requests, queue_us in TRITON_SERIES:
        labels = f'namespace="{namespace}",pod="{pod}",model="{model}",version="1"'
        series += [
            {"series": f"nv_inference_request_success{{{labels}}}", "values": _counter(100, requests)},
            {"series": f"nv_inference_queue_duration_us{{{labels}}}", "values": _counter(5000, requests * queue_us)},
            {"series": f"nv_inference_pending_request_count{{{labels}}}", "values": f"{requests // 5}x40"},
        ]
    return series


def _promtool(tmp_path: Path, adapter_query: str, expected: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    rules = {"groups": [prometheus_rules.recording_rule_group(window="1m", interval="15s")]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": _input_series(),
                "promql_expr_test": [{"expr": adapter_query, "eval_time": "5m", "exp_samples": expected}],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_adapter_query_returns_queue_time_per_request_per_pod_from_the_recording_rules(tmp_path: Path) -> None:
    query = _filled(_rule(QUEUE_TIME_METRIC), NAMESPACE, PODS)
    expected = [{"labels": f'{{pod="{pod}"}}', "value": value} for pod, value in EXPECTED_US.items()]
    result = _promtool(tmp_path, query, expected)
    assert result.returncode == 0, result.stdout + result.stderr


def test_adapter_query_check_fails_when_the_expected_value_is_wrong(tmp_path: Path) -> None:
    """The promtool harness itself can fail: an idle model averaged in would give triton-b 500 µs."""
    query = _filled(_rule(QUEUE_TIME_METRIC), NAMESPACE, PODS)
    expected = [
        {"labels": f'{{pod="{pod}"}}', "value": 500 if pod == "triton-b" else value}
        for pod, value in EXPECTED_US.items()
    ]
    result = _promtool(tmp_path, query, expected)
    assert result.returncode != 0


def test_adapter_pending_requests_metric_sums_the_models_of_each_pod(tmp_path: Path) -> None:
    query = _filled(_rule(PENDING_METRIC), NAMESPACE, PODS)
    expected = [
        {"labels": '{pod="triton-a"}', "value": 3},
        {"labels": '{pod="triton-b"}', "value": 4},
        {"labels": '{pod="triton-c"}', "value": 0},
    ]
    result = _promtool(tmp_path, query, expected)
    assert result.returncode == 0, result.stdout + result.stderr


def test_adapter_rules_select_any_namespace_and_map_namespace_and_pod_labels() -> None:
    for rule in adapter_rules()["custom"]:
        assert rule["seriesQuery"].endswith('{namespace!="",pod!=""}')
        assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]
    assert _rule(QUEUE_TIME_METRIC)["seriesQuery"].startswith(prometheus_rules.record_name("pod", "queue") + "{")


def test_adapter_values_split_the_prometheus_url_because_the_chart_appends_the_port() -> None:
    values = adapter_values(
        AutoscalingSettings(adapter_relist_interval="20s"),
        "http://monitoring-kube-prometheus-prometheus.monitoring.svc:9090",
    )
    assert values["prometheus"] == {
        "url": "http://monitoring-kube-prometheus-prometheus.monitoring.svc",
        "port": 9090,
        "path": "",
    }
    assert values["metricsRelistInterval"] == "20s"
    assert values["rules"]["default"] is False and values["rules"]["custom"] == adapter_rules()["custom"]
    assert "resource" not in values["rules"], "resource rules would take over metrics.k8s.io from metrics-server"
    assert prometheus_endpoint("https://prom.example:8443/prometheus/")["path"] == "/prometheus"
    with pytest.raises(AutoscalingError, match="must be http"):
        prometheus_endpoint("prometheus.monitoring.svc:9090")


@pytest.mark.parametrize(("ms", "expected"), [(50, "50000"), (2.5, "2500"), (0.0005, "500m")])
def test_hpa_target_is_the_configured_milliseconds_in_microseconds(ms: float, expected: str) -> None:
    spec = hpa_spec(AutoscalingSettings(target_queue_time_ms=ms), "triton")
    target = spec["metrics"][0]["pods"]
    assert target["metric"]["name"] == QUEUE_TIME_METRIC
    assert target["target"] == {"type": "AverageValue", "averageValue": expected}


def test_hpa_behavior_comes_from_config() -> None:
    settings = parse_config(
        "t",
        {
            "modelRepository": {"uri": "s3://bucket-a/x"},
            "autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 6,
                "scaleUp": {
                    "stabilizationWindowSeconds": 30,
                    "selectPolicy": "Min",
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
                },
                "scaleDown": {"stabilizationWindowSeconds": 600},
            },
        },
    ).autoscaling
    spec = hpa_spec(settings, "triton")
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 30,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
    }
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert spec["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_pending_requests_metric_is_added_only_when_configured() -> None:
    assert [m["pods"]["metric"]["name"] for m in hpa_spec(AutoscalingSettings(), "d")["metrics"]] == [QUEUE_TIME_METRIC]
    spec = hpa_spec(AutoscalingSettings(pending_requests_target=8), "d")
    assert spec["metrics"][1]["pods"] == {
        "metric": {"name": PENDING_METRIC},
        "target": {"type": "AverageValue", "averageValue": "8"},
    }


@pytest.mark.parametrize("version", ["1.31.0", "1.37.0"])
def test_hpa_validates_against_the_kubernetes_schema(version: str) -> None:
    settings = AutoscalingSettings(enabled=True, min_replicas=2, max_replicas=8, pending_requests_target=4)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "triton", "namespace": "triton"},
        "spec": hpa_spec(settings, "triton"),
    }
    assert kubernetes_errors(hpa, version) == []
    scale_up = hpa["spec"]["behavior"]["scaleUp"]
    scale_up["stabilizationWindow"] = scale_up.pop("stabilizationWindowSeconds")
    assert kubernetes_errors(hpa, version) != [], "the validator must catch a misspelt behavior field"


def test_max_replicas_below_min_is_reported_with_both_keys() -> None:
    with pytest.raises(ConfigError, match=r"autoscaling.maxReplicas \(1\) must be >= autoscaling.minReplicas \(2\)"):
        parse_config(
            "t", {"modelRepository": {"uri": "s3://bucket-a/x"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 1}}
        )


def test_a_policy_with_an_unknown_type_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"autoscaling.scaleDown.policies\[0\].type \('Pod'\) must be one of"):
        parse_config(
            "t",
            {
                "modelRepository": {"uri": "s3://bucket-a/x"},
                "autoscaling": {"scaleDown": {"policies": [{"type": "Pod", "value": 1, "periodSeconds": 60}]}},
            },
        )


def test_quantity_keeps_whole_numbers_and_uses_milli_units_otherwise() -> None:
    assert [quantity(v) for v in (0, 7, 7.5, 0.25)] == ["0", "7", "7500m", "250m"]


# --- the stacks ------------------------------------------------------------------------------------------------


def test_prod_scales_triton_between_the_configured_bounds_and_leaves_replicas_to_the_hpa(prod: Recording) -> None:
    hpa = prod.one(HPA_TYPE)
    deployment = next(
        r
        for r in prod.kubernetes_objects()
        if r.kind == "Deployment" and r.metadata_name == hpa.inputs["spec"]["scaleTargetRef"]["name"]
    )
    assert hpa.inputs["metadata"]["namespace"] == deployment.inputs["metadata"]["namespace"]
    assert (hpa.inputs["spec"]["minReplicas"], hpa.inputs["spec"]["maxReplicas"]) == (2, 3)
    assert "replicas" not in deployment.inputs["spec"], "a fixed replica count would fight the HPA on every update"


def test_the_adapter_points_at_the_platforms_prometheus(prod: Recording) -> None:
    adapter = next(r for r in prod.helm_releases() if r.inputs["name"] == "prometheus-adapter")
    prometheus = adapter.inputs["values"]["prometheus"]
    assert prometheus["url"].startswith("http://") and ":" not in prometheus["url"].removeprefix("http://")
    assert prometheus["url"].endswith(".svc")
    assert adapter.inputs["values"]["rules"]["custom"] == adapter_rules()["custom"]


def test_dev_without_autoscaling_has_no_hpa_and_keeps_its_replica_count(dev: Recording) -> None:
    assert dev.of_type(HPA_TYPE) == []
    deployment = next(r for r in dev.kubernetes_objects() if r.kind == "Deployment" and r.metadata_name == "triton")
    assert deployment.inputs["spec"]["replicas"] == 1


def test_a_stack_with_autoscaling_on_gets_the_configured_behavior(stack_repositories: dict[str, Path]) -> None:
    from tests._stack_repository import config_with_build_dir

    config = config_with_build_dir("dev", stack_repositories["dev"])
    config["inference-platform:autoscaling"] = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetQueueTimeMs": 20,
        "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]},
    }
    recording = run_program("dev", config=config)
    spec = recording.one(HPA_TYPE).inputs["spec"]
    assert spec["metrics"][0]["pods"]["target"]["averageValue"] == "20000"
    assert spec["behavior"]["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 30}]
    assert spec["behavior"]["scaleUp"]["selectPolicy"] == "Max"


def test_default_behavior_scales_up_fast_and_down_slowly() -> None:
    settings = AutoscalingSettings()
    assert settings.scale_up.stabilization_window_seconds == 0
    assert ScalingPolicy("Percent", 100, 15) in settings.scale_up.policies
    assert settings.scale_down == ScalingRules(300, "Max", (ScalingPolicy("Pods", 1, 60),))


def test_the_adapter_goes_in_last_and_out_first(prod: Recording) -> None:
    """Found by the real engine: an APIService without its backend breaks discovery, and every namespace
    deletion with it (model-build hung Terminating). Depending on every namespace, the adapter is removed first."""
    adapter = prod.one("kubernetes:helm.sh/v3:Release", "autoscaling-prometheus-adapter")
    namespaces = {r.urn for r in prod.kubernetes_objects() if r.kind == "Namespace"}
    assert namespaces and namespaces <= set(adapter.dependencies)
