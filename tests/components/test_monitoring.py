"""MonitoringStack: the kps release, what Prometheus selects, secrets, the PodMonitor, the rules and the dashboards."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from components import monitoring, versions
from components.monitoring import MonitoringStackArgs, kps_fullname
from components.prometheus_rules import rule_file
from components.settings import MonitoringSettings
from components.triton_cluster import pod_selector
from offline.harness import RecordedResource, Recording, run_program
from offline.validate import UNLISTED_VALUES, custom_resource_errors, load_values, unknown_values_keys
from tests._stack_repository import config_with_build_dir, stack_entries, stack_repository
from tests.paths import ROOT

COMPONENT = "inference:platform:MonitoringStack"
RELEASE = "kubernetes:helm.sh/v3:Release"
CUSTOM = "kubernetes:monitoring.coreos.com/v1:"
GRAFANA_PASSWORD = "grafana-pw-from-config-7f3a"
WEBHOOK = "https://hooks.example.org/alerts/T0KEN-4f9c"
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
DASHBOARDS = ROOT / "dashboards"


@pytest.fixture(scope="module")
def with_secrets(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """The prod stack with a configured Grafana password and both alert receivers, set as secrets."""
    build = stack_repository(tmp_path_factory.mktemp("prod-models"), stack_entries("prod"))
    secrets = {
        "inference-platform:grafanaAdminPassword": GRAFANA_PASSWORD,
        "inference-platform:alertWebhookUrl": WEBHOOK,
        "inference-platform:alertSlackWebhookUrl": SLACK,
    }
    return run_program("prod", config=config_with_build_dir("prod", build), secrets=secrets)


def kps(stack: Recording) -> RecordedResource:
    return next(r for r in stack.helm_releases() if r.inputs["chart"] == versions.KUBE_PROMETHEUS_STACK.chart)


def values(stack: Recording) -> dict[str, Any]:
    return kps(stack).inputs["values"]


def child(stack: Recording, kind: str, name: str) -> RecordedResource:
    found = [r for r in stack.children_of(COMPONENT) if r.kind == kind and r.metadata_name == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {[r.metadata_name for r in found]}"
    return found[0]


def plain_inputs(stack: Recording) -> str:
    """Every input that was sent in the clear, as one text."""
    texts = []
    for r in stack.resources:
        inputs = json.loads(json.dumps(r.inputs))
        for path in r.secret_paths:
            _drop(inputs, path)
        texts.append(json.dumps(inputs))
    return "\n".join(texts)


def _drop(tree: Any, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.get(key, {}) if isinstance(tree, dict) else {}
    if isinstance(tree, dict):
        tree.pop(last, None)


# --- the release ------------------------------------------------------------------------------------------------


def test_kps_is_a_named_pinned_release_in_the_monitoring_namespace(stack):
    release = kps(stack)
    assert release.inputs["name"] == "monitoring"
    assert release.inputs["version"] == versions.KUBE_PROMETHEUS_STACK.version
    assert release.inputs["repositoryOpts"]["repo"] == versions.KUBE_PROMETHEUS_STACK.repository
    assert release.inputs["namespace"] == "monitoring"


def test_prometheus_selects_monitors_and_rules_without_the_release_label(stack):
    # DCGM's ServiceMonitor (created by the GPU Operator), HAMi's (its chart, prometheus.enabled) and our own
    # PodMonitor/PrometheusRule carry no `release: monitoring` label: only these switches make Prometheus see them.
    spec = values(stack)["prometheus"]["prometheusSpec"]
    for key in (
        "serviceMonitorSelectorNilUsesHelmValues",
        "podMonitorSelectorNilUsesHelmValues",
        "ruleSelectorNilUsesHelmValues",
    ):
        assert spec[key] is False, key
    for selector in ("serviceMonitorSelector", "podMonitorSelector", "ruleSelector"):
        assert selector not in spec  # left at {} = everything, in every namespace


def test_gpu_metrics_sources_are_turned_on_for_prometheus_to_find(stack):
    operator = next(r for r in stack.helm_releases() if r.inputs["chart"] == versions.GPU_OPERATOR.chart)
    assert operator.inputs["values"]["dcgmExporter"]["serviceMonitor"]["enabled"] is True
    hami = [r for r in stack.helm_releases() if r.inputs["chart"] == versions.HAMI.chart]
    for release in hami:
        assert release.inputs["values"]["prometheus"]["enabled"] is True
        # HAMi renders its ServiceMonitors only if the CRD exists at install: it waits for kube-prometheus-stack.
        assert kps(stack).urn in release.dependencies


def test_hami_waits_for_kps_in_prod(prod):
    assert any(r.inputs["chart"] == versions.HAMI.chart for r in prod.helm_releases())


def test_retention_storage_and_intervals_come_from_config(dev, prod):
    dev_spec, prod_spec = (values(s)["prometheus"]["prometheusSpec"] for s in (dev, prod))
    assert dev_spec["retention"] == "3d" and prod_spec["retention"] == "30d"
    claim = prod_spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "200Gi" and claim["storageClassName"] == "gp3"
    assert prod_spec["retentionSize"] == "180GB"
    assert dev_spec["scrapeInterval"] == "15s" and dev_spec["evaluationInterval"] == "15s"


def test_every_pvc_names_the_storage_class_and_prod_creates_it_before_the_release(prod):
    """EKS >= 1.30 has no default StorageClass: a PVC without a class stays Pending, and Helm, waiting for
    Grafana's, times the whole release out."""
    grafana = values(prod)["grafana"]["persistence"]
    assert grafana == {"enabled": True, "size": "10Gi", "storageClassName": "gp3"}
    storage_class = prod.one("kubernetes:storage.k8s.io/v1:StorageClass", "monitoring-storage-class")
    assert storage_class.inputs["metadata"]["name"] == "gp3"
    assert storage_class.inputs["provisioner"] == "ebs.csi.aws.com"
    assert storage_class.inputs["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert storage_class.inputs["volumeBindingMode"] == "WaitForFirstConsumer"
    release = prod.one("kubernetes:helm.sh/v3:Release", "monitoring-kube-prometheus-stack")
    assert storage_class.urn in release.dependencies


def test_dev_leaves_pvcs_to_the_clusters_default_class(dev):
    assert not dev.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    claim = values(dev)["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert "storageClassName" not in claim


def test_creating_a_storage_class_needs_its_name():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as error:
        _parse({"createStorageClass": True})
    assert error.value.problems == [
        "monitoring.createStorageClass (True) needs monitoring.storageClass: the name of the class to create"
    ]


def test_helm_values_keys_exist_in_the_pinned_charts(stack, shared_dir):
    defaults = load_values(shared_dir / "helm-values" / versions.KUBE_PROMETHEUS_STACK.values_fixture)
    grafana = load_values(shared_dir / "helm-values" / "grafana-12.11.1.values.yaml")
    assert (
        unknown_values_keys(
            values(stack), defaults, subcharts={"grafana": grafana}, allowed=UNLISTED_VALUES["kube-prometheus-stack"]
        )
        == []
    )
    assert unknown_values_keys({"prometheus": {"prometheusSpec": {"retentionn": "1d"}}}, defaults)


def test_grafana_runs_the_dashboard_sidecar_on_our_label(stack):
    sidecar = values(stack)["grafana"]["sidecar"]["dashboards"]
    assert sidecar == {"enabled": True, "label": "grafana_dashboard", "labelValue": "1", "searchNamespace": "ALL"}


# --- secrets ----------------------------------------------------------------------------------------------------


def test_configured_grafana_password_reaches_only_a_secret_input(with_secrets):
    secret = child(with_secrets, "Secret", "grafana-admin")
    assert secret.inputs["stringData"]["admin-password"] == GRAFANA_PASSWORD
    assert secret.is_secret("stringData")
    grafana = values(with_secrets)["grafana"]
    assert "adminPassword" not in grafana
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    clear = plain_inputs(with_secrets)
    assert GRAFANA_PASSWORD not in clear
    assert base64.b64encode(GRAFANA_PASSWORD.encode()).decode() not in clear
    assert "grafana_admin_password" in with_secrets.secret_outputs


def test_a_random_password_is_generated_when_none_is_configured(dev):
    generated = dev.dynamic("components.generated_secret.GeneratedSecretProvider", "monitoring-grafana-admin-password")
    assert generated.inputs == {"length": 32}
    assert generated.additional_secret_outputs == ("result",), "the state keeps the value encrypted"
    assert dev.component_of(generated).type == COMPONENT
    assert child(dev, "Secret", "grafana-admin").is_secret("stringData")
    assert "grafana_admin_password" in dev.secret_outputs
    assert not [r for r in dev.resources if r.type.startswith(("random:", "pulumi:providers:random"))]


def test_a_configured_password_generates_none(with_secrets):
    assert with_secrets.dynamic_resources("components.generated_secret.GeneratedSecretProvider") == []


def test_without_receiver_secrets_every_alert_goes_to_the_null_receiver(dev):
    config = values(dev)["alertmanager"]["config"]
    assert config["route"]["receiver"] == "null"
    assert [r["name"] for r in config["receivers"]] == ["null"]
    assert {r["receiver"] for r in config["route"]["routes"]} == {"null"}
    assert not [r for r in dev.children_of(COMPONENT) if r.metadata_name == monitoring.RECEIVERS_SECRET]


def test_receiver_urls_come_from_a_mounted_secret_never_from_values(with_secrets):
    config = values(with_secrets)["alertmanager"]["config"]
    platform = next(r for r in config["receivers"] if r["name"] == "platform")
    assert platform["webhook_configs"][0]["url_file"] == f"{monitoring.RECEIVERS_DIR}/webhook-url"
    assert platform["slack_configs"][0]["api_url_file"] == f"{monitoring.RECEIVERS_DIR}/slack-url"
    assert platform["slack_configs"][0]["channel"] == "#inference-alerts"
    assert {"receiver": "platform", "matchers": ['severity =~ "warning|critical"']} in config["route"]["routes"]
    assert config["route"]["routes"][0] == {"receiver": "null", "matchers": ['alertname = "Watchdog"']}
    assert values(with_secrets)["alertmanager"]["alertmanagerSpec"]["secrets"] == [monitoring.RECEIVERS_SECRET]
    secret = child(with_secrets, "Secret", monitoring.RECEIVERS_SECRET)
    assert secret.inputs["stringData"] == {"webhook-url": WEBHOOK, "slack-url": SLACK}
    assert secret.is_secret("stringData")
    clear = plain_inputs(with_secrets)
    for url in (WEBHOOK, SLACK):
        assert url not in clear and base64.b64encode(url.encode()).decode() not in clear
    assert secret.urn in kps(with_secrets).dependencies  # mounted by Alertmanager: must exist first


# --- the PodMonitor ---------------------------------------------------------------------------------------------


def test_pod_monitor_scrapes_tritons_metrics_port_on_its_pods(stack, shared_dir):
    podmonitor = child(stack, "PodMonitor", monitoring.POD_MONITOR_NAME)
    spec = podmonitor.inputs["spec"]
    deployment = next(r for r in stack.kubernetes_objects() if r.kind == "Deployment" and r.metadata_name == "triton")
    template = deployment.inputs["spec"]["template"]
    selector = spec["selector"]["matchLabels"]
    assert selector == pod_selector("triton")
    assert selector.items() <= template["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [deployment.inputs["metadata"]["namespace"]]}
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
    endpoint = spec["podMetricsEndpoints"][0]
    assert ports[endpoint["port"]] == 8002
    assert endpoint["interval"] == "15s" and endpoint["path"] == "/metrics"
    assert custom_resource_errors(podmonitor.inputs, shared_dir / "crds") == []
    assert kps(stack).urn in podmonitor.dependencies


def test_scrape_interval_and_timeout_follow_config():
    args = _args(MonitoringSettings(scrape_interval="5s"))
    endpoint = monitoring.pod_monitor_spec(args)["podMetricsEndpoints"][0]
    assert endpoint["interval"] == "5s" and endpoint["scrapeTimeout"] == "5s"
    assert monitoring.pod_monitor_spec(_args(MonitoringSettings()))["podMetricsEndpoints"][0]["scrapeTimeout"] == "10s"


def test_alerts_watch_the_job_the_pod_monitor_produces(stack):
    podmonitor = child(stack, "PodMonitor", monitoring.POD_MONITOR_NAME)
    job = f"{podmonitor.inputs['metadata']['namespace']}/{podmonitor.inputs['metadata']['name']}"
    rules = child(stack, "PrometheusRule", "inference-platform").inputs["spec"]["groups"][1]["rules"]
    target_down = next(r for r in rules if r["alert"] == "TritonTargetDown")
    assert target_down["expr"] == f'up{{job="{job}"}} == 0'


# --- the rules --------------------------------------------------------------------------------------------------


def test_prometheus_rule_carries_both_groups_and_validates(stack, shared_dir):
    rule = child(stack, "PrometheusRule", "inference-platform")
    groups = rule.inputs["spec"]["groups"]
    assert [g["name"] for g in groups] == ["triton-latency.rules", "inference-platform.alerts"]
    assert custom_resource_errors(rule.inputs, shared_dir / "crds") == []
    assert kps(stack).urn in rule.dependencies


def test_rendered_prometheus_rule_passes_promtool(stack, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    rule = child(stack, "PrometheusRule", "inference-platform")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule.inputs["spec"], allow_unicode=True))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_thresholds_and_windows_come_from_config(dev, prod):
    def by_name(stack: Recording) -> dict[str, Any]:
        groups = child(stack, "PrometheusRule", "inference-platform").inputs["spec"]["groups"]
        return {r.get("alert") or r["record"]: r for g in groups for r in g["rules"]}

    dev_rules, prod_rules = by_name(dev), by_name(prod)
    assert ") > 200000\n" in dev_rules["TritonQueueTimeAboveSlo"]["expr"]
    assert ") > 100000\n" in prod_rules["TritonQueueTimeAboveSlo"]["expr"]
    assert "[1m]" in prod_rules["pod:triton_queue_time_us:per_request"]["expr"]
    assert prod_rules["TritonPodNotReady"]["for"] == "1200s"  # startupBudgetSeconds 900 + 5m


def test_rule_groups_are_what_the_builders_render():
    args = _args(MonitoringSettings())
    assert rule_file(*monitoring.rule_groups(args))["groups"][0]["interval"] == "15s"


# --- dashboards -------------------------------------------------------------------------------------------------


def test_every_dashboard_file_is_a_labelled_configmap(stack):
    files = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert files == ["autoscaling.json", "gpu.json", "triton.json"]
    for file_name in files:
        configmap = child(stack, "ConfigMap", f"dashboard-{file_name.removesuffix('.json')}")
        assert configmap.inputs["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap.inputs["data"] == {file_name: (DASHBOARDS / file_name).read_text()}


def test_a_dashboard_without_uid_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"title": "x", "panels": []}))
    with pytest.raises(ValueError, match="no uid"):
        monitoring.dashboard_files(tmp_path)


# --- wiring for the autoscaling helper ---------------------------------------------------------------------------


def test_prometheus_url_names_the_charts_service_without_the_port():
    assert (
        monitoring.prometheus_url(MonitoringSettings()) == "http://monitoring-kube-prometheus-prometheus.monitoring.svc"
    )
    assert kps_fullname("kube-prometheus-stack") == "kube-prometheus-stack"
    assert kps_fullname("observability-platform") == "observability-platform-kub"  # 26 characters, like the chart
    assert monitoring.PROMETHEUS_PORT == 9090


def test_stack_exports_grafana_and_prometheus(stack):
    assert stack.outputs["grafana_url"] == "http://monitoring-grafana.monitoring.svc"
    assert stack.outputs["prometheus_url"] == "http://monitoring-kube-prometheus-prometheus.monitoring.svc"


def _args(settings: MonitoringSettings) -> MonitoringStackArgs:
    return MonitoringStackArgs(settings=settings, triton_namespace="triton", triton_pod_selector=pod_selector("triton"))


def test_every_alert_has_a_runbook_heading_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- section:monitoring -->")[1].split("<!-- section:")[0]
    headings = {line.removeprefix("#### ").strip().lower() for line in section.splitlines() if line.startswith("#### ")}
    alerts = {r["alert"] for r in monitoring.rule_groups(_args(MonitoringSettings()))[1]["rules"]}
    anchors = {monitoring.alert_settings(_args(MonitoringSettings())).runbook(a).split("#")[1] for a in alerts}
    assert anchors == headings


# --- config -----------------------------------------------------------------------------------------------------


def _parse(monitoring_values: dict[str, Any], secrets: dict[str, Any] | None = None) -> MonitoringSettings:
    from components.config import parse_config

    values = {"modelRepository": {"uri": "s3://models/triton"}, "monitoring": monitoring_values}
    return parse_config("dev", values, secrets).monitoring


def test_monitoring_config_problems_name_key_value_and_what_is_allowed():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as error:
        _parse(
            {
                "recordingWindow": "30s",
                "retentionSize": "60GB",
                "storageSize": "50Gi",
                "slackChannel": "alerts",
                "alerts": {"failureRatio": 1.5, "gpuUtilisaton": 0.8},
            }
        )
    problems = error.value.problems
    assert "monitoring.recordingWindow ('30s') must be at least 4 x monitoring.scrapeInterval (15s)" in problems
    assert any(
        p.startswith("monitoring.retentionSize ('60GB') must be smaller than monitoring.storageSize") for p in problems
    )
    assert "monitoring.alerts.failureRatio (1.5) must be between 0.0001 and 1" in problems
    assert any(p.startswith("monitoring.slackChannel ('alerts') must be a Slack channel") for p in problems)
    assert any(
        "monitoring.alerts.gpuUtilisaton is not a known key; did you mean 'gpuUtilisation'?" in p for p in problems
    )


def test_receivers_follow_the_secrets_that_are_set():
    assert _parse({}).receivers == ()
    assert _parse({}, {"alertSlackWebhookUrl": "x"}).receivers == ("slack",)
    assert _parse({}, {"alertWebhookUrl": "y", "alertSlackWebhookUrl": "x"}).receivers == ("webhook", "slack")


def test_receiver_urls_and_grafana_password_are_refused_in_plain_config():
    from components.config import ConfigError, parse_config

    values = {
        "modelRepository": {"uri": "s3://models/triton"},
        "alertSlackWebhookUrl": "https://hooks.slack.com/x",
        "grafanaAdminPassword": "hunter2",
    }
    with pytest.raises(ConfigError) as error:
        parse_config("dev", values)
    assert (
        "alertSlackWebhookUrl must be set as a secret: pulumi config set --secret alertSlackWebhookUrl <value>"
        in error.value.problems
    )
    assert any(p.startswith("grafanaAdminPassword must be set as a secret") for p in error.value.problems)


def test_alert_thresholds_reach_the_rules():
    settings = _parse({"alertWindow": "10m", "alerts": {"queueTimeSloMs": 250, "gpuMemoryRatio": 0.8}})
    args = MonitoringStackArgs(settings=settings, triton_namespace="serving", triton_pod_selector=pod_selector("t"))
    alerts = {r["alert"]: r for r in monitoring.rule_groups(args)[1]["rules"]}
    assert ") > 250000\n" in alerts["TritonQueueTimeAboveSlo"]["expr"]
    assert "[10m]" in alerts["TritonQueueTimeAboveSlo"]["expr"]
    assert alerts["GpuMemoryNearHamiLimit"]["expr"].endswith("> 0.8")
    assert 'namespace="serving"' in alerts["TritonNoReadyReplicas"]["expr"]


def test_alert_durations_are_stack_settings():
    """A stack can make an alert fire sooner (the local stack's autoscaling loop) or later than prod's defaults."""
    alerts = {r["alert"]: r["for"] for r in monitoring.rule_groups(_args(_parse({})))[1]["rules"]}
    assert (alerts["TritonQueueTimeAboveSlo"], alerts["TritonHpaAtMaxReplicas"]) == ("5m", "15m")
    settings = _parse({"alerts": {"queueTimeFor": "30s", "hpaMaxFor": "1m", "targetDownFor": "2m"}})
    alerts = {r["alert"]: r["for"] for r in monitoring.rule_groups(_args(settings))[1]["rules"]}
    assert (alerts["TritonQueueTimeAboveSlo"], alerts["TritonHpaAtMaxReplicas"]) == ("30s", "1m")
    assert alerts["TritonTargetDown"] == alerts["TritonMetricsMissing"] == "2m"
    assert alerts["TritonFailureRatioHigh"] == "5m"


def test_a_bad_alert_duration_names_its_key():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as error:
        _parse({"alerts": {"queueTimeFor": "5 minutes"}})
    assert any(
        p.startswith("monitoring.alerts.queueTimeFor ('5 minutes') must be a Prometheus duration")
        for p in error.value.problems
    ), error.value.problems


def _args(settings: MonitoringSettings) -> MonitoringStackArgs:
    return MonitoringStackArgs(settings=settings, triton_namespace="triton", triton_pod_selector=pod_selector("t"))
