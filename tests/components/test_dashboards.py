"""Grafana dashboards as code: every panel query parses (promtool) and uses only metrics the platform exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from components import prometheus_rules
from tests.paths import ROOT

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
DATA = ROOT / "tests" / "components" / "data" / "monitoring"
ALLOWLIST = yaml.safe_load((DATA / "metric_allowlist.yaml").read_text())
# What Grafana substitutes before a query reaches Prometheus.
VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "namespace": "triton",
    "model": ".*",
    "hpa": "triton",
}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def recorded_names() -> set[str]:
    return {rule["record"] for rule in prometheus_rules.recording_rule_group()["rules"]}


def allowed_metrics() -> set[str]:
    return {name for names in ALLOWLIST.values() for name in names} | recorded_names()


def substitute(expr: str) -> str:
    """The query as Grafana sends it: ``$var`` / ``${var}`` replaced."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in VARIABLES:
            raise KeyError(f"dashboard variable ${name} has no test value")
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$([a-zA-Z_]\w*)", value, expr)  # $1 is label_replace's, not Grafana's


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: bare names plus ``__name__`` matchers (regex alternatives)."""
    names: set[str] = set()
    for pattern in re.findall(r'__name__\s*=~?\s*"([^"]*)"', expr):
        names.update(pattern.split("|"))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings hold label values and regexes
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if not call and word not in _KEYWORDS:
            names.add(word)
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, expression) for every query target and query variable."""
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


def test_the_three_dashboards_exist_with_stable_unique_uids():
    assert [p.name for p in DASHBOARDS] == ["autoscaling.json", "gpu.json", "triton.json"]
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert all(uids) and len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_prometheus_through_the_datasource_variable(path):
    dashboard = json.loads(path.read_text())
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in dashboard["templating"]["list"])
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_metric_a_panel_uses_is_exported_by_the_platform():
    allowed = allowed_metrics()
    unknown = {
        (name, title, metric)
        for name, title, expr in queries()
        for metric in metric_names(substitute(expr))
        if metric not in allowed
    }
    assert unknown == set()


def test_dashboards_cover_what_operators_need():
    used = {(name, metric) for name, _, expr in queries() for metric in metric_names(substitute(expr))}
    needed = {
        "triton.json": {
            "nv_inference_request_success",
            "nv_inference_request_failure",
            "nv_inference_queue_duration_us",
            "nv_inference_compute_infer_duration_us",
            "nv_inference_pending_request_count",
        },
        "gpu.json": {
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_FB_USED",
            "hami_vgpu_memory_used_bytes",
            "hami_vgpu_memory_limit_bytes",
        },
        "autoscaling.json": {
            "kube_horizontalpodautoscaler_status_current_replicas",
            "kube_horizontalpodautoscaler_status_desired_replicas",
            "kube_horizontalpodautoscaler_spec_target_metric",
            "pod:triton_queue_time_us:per_request",
        },
    }
    for name, metrics in needed.items():
        assert metrics <= {m for n, m in used if n == name}, name


def test_every_panel_query_parses_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`: apt-get install -y prometheus)")
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": substitute(expr)} for i, (_, _, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, allow_unicode=True))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (model) (rate(nv_inference_count{model=~"a|b"}[5m]))', {"nv_inference_count"}),
        ('a / ignoring (pod) group_left sum(b{x="y"})', {"a", "b"}),
        ('rate({__name__=~"x_total|y_total", job="j"}[1m])', {"x_total", "y_total"}),
        ('label_replace(m, "pod", "$1", "exported_pod", "(.+)") > 0.5e3', {"m"}),
        ("max by (Hostname, gpu) (DCGM_FI_DEV_GPU_UTIL) / 100 or on (gpu) vector(0)", {"DCGM_FI_DEV_GPU_UTIL"}),
        ("pod:triton_queue_time_us:per_request offset 5m", {"pod:triton_queue_time_us:per_request"}),
    ],
)
def test_metric_name_extraction(expr, expected):
    assert metric_names(expr) == expected


def test_an_unknown_metric_or_variable_is_caught():
    assert "nv_inference_queue_time_us" not in allowed_metrics()  # a plausible typo of a real name
    with pytest.raises(KeyError, match="modell"):
        substitute('rate(x{model=~"$modell"}[5m])')
