"""MonitoringStack: kube-prometheus-stack (Prometheus, Alertmanager, Grafana), Triton scraping, rules and dashboards."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.chart_crds import chart_crds
from components.generated_secret import GeneratedSecret
from components.kube import PART_OF, after, namespace
from components.prometheus_rules import (
    AlertSettings,
    alert_rule_group,
    recording_rule_group,
    rule_file,
)
from components.settings import MonitoringSettings
from model_pipeline.syntax import duration_seconds

DASHBOARDS_DIR = Path(__file__).resolve().parents[1] / "dashboards"
PROMETHEUS_PORT = 9090
POD_MONITOR_NAME = "triton"
GRAFANA_ADMIN_SECRET = "grafana-admin"
RECEIVERS_SECRET = "alertmanager-receivers"
# Alertmanager mounts each Secret listed in alertmanagerSpec.secrets here; URLs are read from files, never values.
RECEIVERS_DIR = f"/etc/alertmanager/secrets/{RECEIVERS_SECRET}"
RECEIVER_KEYS = {"webhook": "webhook-url", "slack": "slack-url"}
DASHBOARD_LABEL = ("grafana_dashboard", "1")


@dataclass(frozen=True)
class MonitoringStackArgs:
    """Inputs of :class:`MonitoringStack`."""

    settings: MonitoringSettings
    triton_namespace: str
    triton_pod_selector: Mapping[str, str]  # triton_cluster.pod_selector(...): known before Triton exists
    triton_deployment: str = "triton"
    hpa_name: str = "triton"
    startup_budget_seconds: int = 600  # Triton's startup probe budget: pods not ready for longer alert
    mig: bool = False
    dashboards_dir: Path = DASHBOARDS_DIR


def kps_fullname(release: str) -> str:
    """The chart's ``fullname``: the release name if it names the chart, else ``<release>-kube-prometheus-stack``."""
    chart = versions.KUBE_PROMETHEUS_STACK.chart
    name = release if chart in release else f"{release}-{chart}"
    return name[:26].rstrip("-")


def prometheus_url(settings: MonitoringSettings) -> str:
    """In-cluster Prometheus URL without the port (prometheus-adapter takes the port separately)."""
    return f"http://{kps_fullname(settings.release_name)}-prometheus.{settings.namespace}.svc"


def scrape_job(settings: MonitoringSettings) -> str:
    """The ``job`` label the Prometheus Operator gives PodMonitor targets: ``<namespace>/<name>``."""
    return f"{settings.namespace}/{POD_MONITOR_NAME}"


def alert_settings(args: MonitoringStackArgs) -> AlertSettings:
    """Alert thresholds from config, aimed at this stack's Triton Deployment, HPA and scrape job."""
    s = args.settings
    return AlertSettings(
        **dataclasses.asdict(s.alerts),
        interval=s.rule_interval,
        window=s.alert_window,
        namespace=args.triton_namespace,
        deployment=args.triton_deployment,
        hpa=args.hpa_name,
        job=scrape_job(s),
        mig=args.mig,
        # A pod may take its whole startup budget to load models; alert only once it is clearly exceeded.
        not_ready_for=f"{args.startup_budget_seconds + 300}s",
        runbook_base_url=s.runbook_base_url,
    )


def rule_groups(args: MonitoringStackArgs) -> list[dict[str, Any]]:
    """The recording group (the HPA's metric) and the alert group, as deployed."""
    s = args.settings
    recording = recording_rule_group(window=s.recording_window, interval=s.rule_interval)
    return [recording, alert_rule_group(alert_settings(args))]


def pod_monitor_spec(args: MonitoringStackArgs) -> dict[str, Any]:
    """Scrape every Triton pod's ``metrics`` container port; namespace and pod labels come with each target."""
    interval = args.settings.scrape_interval
    timeout = min(duration_seconds(interval), 10.0)
    return {
        "selector": {"matchLabels": dict(args.triton_pod_selector)},
        "namespaceSelector": {"matchNames": [args.triton_namespace]},
        "podMetricsEndpoints": [
            {
                "port": "metrics",
                "path": "/metrics",
                "interval": interval,
                "scrapeTimeout": f"{timeout:g}s",
            }
        ],
    }


def alertmanager_config(settings: MonitoringSettings) -> dict[str, Any]:
    """Routing: Watchdog and everything without a receiver go to 'null'; warnings and criticals to ours."""
    routes: list[dict[str, Any]] = [{"receiver": "null", "matchers": ['alertname = "Watchdog"']}]
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    if settings.receivers:
        platform: dict[str, Any] = {"name": "platform"}
        if "webhook" in settings.receivers:
            platform["webhook_configs"] = [
                {"url_file": f"{RECEIVERS_DIR}/{RECEIVER_KEYS['webhook']}", "send_resolved": True}
            ]
        if "slack" in settings.receivers:
            platform["slack_configs"] = [
                {
                    "api_url_file": f"{RECEIVERS_DIR}/{RECEIVER_KEYS['slack']}",
                    "channel": settings.slack_channel,
                    "send_resolved": True,
                    "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                    "text": "{{ range .Alerts }}*{{ .Annotations.summary }}*\n{{ .Annotations.description }}\n"
                    "Runbook: {{ .Annotations.runbook_url }}\n{{ end }}",
                }
            ]
        receivers.append(platform)
        routes.append({"receiver": "platform", "matchers": ['severity =~ "warning|critical"']})
    return {
        "route": {
            "receiver": "null",
            "group_by": ["namespace", "alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": receivers,
    }


def _storage(size: str, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"volumeClaimTemplate": {"spec": spec}}


def _prometheus_values(settings: MonitoringSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # Select every ServiceMonitor, PodMonitor and PrometheusRule in the cluster, not only those labelled
        # release=<name>: our PodMonitor and rules, the GPU Operator's DCGM ServiceMonitor and HAMi's monitors
        # (prometheus.enabled in its chart) carry no such label.
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
        "probeSelectorNilUsesHelmValues": False,
        "scrapeConfigSelectorNilUsesHelmValues": False,
        "scrapeInterval": settings.scrape_interval,
        "evaluationInterval": settings.rule_interval,
        "retention": settings.retention,
        "storageSpec": _storage(settings.storage_size, settings.storage_class),
    }
    if settings.retention_size:
        spec["retentionSize"] = settings.retention_size
    return {"prometheusSpec": spec}


def _grafana_values(settings: MonitoringSettings) -> dict[str, Any]:
    label, value = DASHBOARD_LABEL
    values: dict[str, Any] = {
        "enabled": True,
        # The password lives in a Secret built from a Pulumi secret; the values carry only its name.
        "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
        "sidecar": {"dashboards": {"enabled": True, "label": label, "labelValue": value, "searchNamespace": "ALL"}},
    }
    if settings.grafana_storage_size:
        values["persistence"] = {"enabled": True, "size": settings.grafana_storage_size}
        if settings.storage_class:
            values["persistence"]["storageClassName"] = settings.storage_class
    return values


def ebs_storage_class(name: str, class_name: str, opts: pulumi.ResourceOptions) -> k8s.storage.v1.StorageClass:
    """An encrypted gp3 class of the EBS CSI driver. EKS >= 1.30 creates no default class, and Helm waits for
    Grafana's PVC to bind: without a class the whole release times out."""
    return k8s.storage.v1.StorageClass(
        name,
        metadata={"name": class_name, "labels": {"app.kubernetes.io/part-of": PART_OF}},
        provisioner="ebs.csi.aws.com",
        parameters={"type": "gp3", "encrypted": "true"},
        volume_binding_mode="WaitForFirstConsumer",  # the volume is made in the zone the pod lands in
        allow_volume_expansion=True,
        reclaim_policy="Delete",
        opts=opts,
    )


def kps_values(settings: MonitoringSettings) -> dict[str, Any]:
    """Helm values for kube-prometheus-stack; secret-free by construction."""
    alertmanager_spec: dict[str, Any] = {}
    if settings.receivers:
        alertmanager_spec["secrets"] = [RECEIVERS_SECRET]
    return {
        # The CRDs are Pulumi's (components/chart_crds.py), so the chart's CRD subchart and its upgrade job are off;
        # the job's busybox stays pinned all the same, so that no values name a moving tag.
        "crds": {
            "enabled": False,
            "upgradeJob": {"enabled": False, "image": {"busybox": {"tag": versions.CRD_JOB_BUSYBOX_TAG}}},
        },
        "prometheus": _prometheus_values(settings),
        "alertmanager": {
            "enabled": True,
            "config": alertmanager_config(settings),
            "alertmanagerSpec": alertmanager_spec,
        },
        "grafana": _grafana_values(settings),
    }


def dashboard_files(directory: Path) -> dict[str, str]:
    """Dashboard JSON by file name; each must parse and carry a uid so Grafana links stay stable."""
    dashboards = {}
    for path in sorted(directory.glob("*.json")):
        text = path.read_text()
        if not json.loads(text).get("uid"):
            raise ValueError(f"dashboard {path} has no uid; give it a stable one")
        dashboards[path.name] = text
    if not dashboards:
        raise ValueError(f"no dashboards (*.json) found in {directory}")
    return dashboards


@dataclass(frozen=True)
class PrometheusEndpoint:
    """The platform's Prometheus, as its clients (prometheus-adapter) need it."""

    url: str  # http://<service>.<namespace>.svc:<port>
    namespace: str  # where it runs: the adapter is installed beside it


class MonitoringStack(pulumi.ComponentResource):
    """kube-prometheus-stack plus the platform's PodMonitor, PrometheusRule and Grafana dashboards."""

    release: k8s.helm.v3.Release
    prometheus_url: str
    prometheus: PrometheusEndpoint
    grafana_url: str
    alertmanager_url: str
    grafana_admin_password: pulumi.Output[str]
    rule_groups: list[dict[str, Any]]

    def __init__(self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:MonitoringStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        # node-exporter needs host namespaces and paths: this namespace cannot be restricted.
        ns = namespace(f"{name}-ns", s.namespace, "privileged", child)
        meta: dict[str, Any] = {"namespace": ns.metadata.name, "labels": {"app.kubernetes.io/part-of": PART_OF}}

        self.grafana_admin_password = _admin_password(name, s, child)
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata={**meta, "name": GRAFANA_ADMIN_SECRET},
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": self.grafana_admin_password},
            opts=child,
        )
        before_release: list[pulumi.Resource] = [admin]
        if s.receivers:
            before_release.append(_receivers_secret(name, s, meta, child))
        else:
            pulumi.log.warn(
                f"{s.namespace}: no alert receiver configured (alertWebhookUrl / alertSlackWebhookUrl "
                "secrets); Alertmanager routes every alert to 'null'",
                resource=self,
            )

        if s.create_storage_class:
            before_release.append(ebs_storage_class(f"{name}-storage-class", s.storage_class or "", child))
        before_release.append(
            chart_crds(f"{name}-kube-prometheus-stack-crds", versions.KUBE_PROMETHEUS_STACK, s.sources.charts, child)
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack",
            name=s.release_name,
            **s.sources.release_args(versions.KUBE_PROMETHEUS_STACK, kps_values(s)),
            namespace=ns.metadata.name,
            skip_crds=True,
            opts=after(child, before_release),
        )
        # Custom resources need the CRDs the release installs: no data links them, so depend explicitly.
        after_release = after(child, [self.release])
        k8s.apiextensions.CustomResource(
            f"{name}-triton-podmonitor",
            api_version="monitoring.coreos.com/v1",
            kind="PodMonitor",
            metadata={**meta, "name": POD_MONITOR_NAME},
            spec=pod_monitor_spec(args),
            opts=after_release,
        )
        self.rule_groups = rule_groups(args)
        k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={**meta, "name": "inference-platform"},
            spec=rule_file(*self.rule_groups),
            opts=after_release,
        )
        label, value = DASHBOARD_LABEL
        for file_name, text in dashboard_files(args.dashboards_dir).items():
            stem = file_name.removesuffix(".json")
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{stem}",
                metadata={**meta, "name": f"dashboard-{stem}", "labels": {**meta["labels"], label: value}},
                data={file_name: text},
                opts=child,
            )

        self.prometheus_url = prometheus_url(s)
        self.prometheus = PrometheusEndpoint(f"{self.prometheus_url}:{PROMETHEUS_PORT}", s.namespace)
        self.grafana_url = f"http://{s.release_name}-grafana.{s.namespace}.svc"
        self.alertmanager_url = f"http://{kps_fullname(s.release_name)}-alertmanager.{s.namespace}.svc:9093"
        self.register_outputs(
            {
                "prometheus_url": self.prometheus_url,
                "prometheus_endpoint": self.prometheus.url,
                "grafana_url": self.grafana_url,
                "alertmanager_url": self.alertmanager_url,
                "grafana_admin_password": self.grafana_admin_password,
            }
        )


def _admin_password(name: str, s: MonitoringSettings, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The configured secret, or a generated one kept in the stack state (stable across updates)."""
    if s.grafana_admin_password is not None:
        return s.grafana_admin_password  # a secret Output already (config.get_secret)
    generated = GeneratedSecret(f"{name}-grafana-admin-password", length=32, opts=child)
    return pulumi.Output.secret(generated.result)


def _receivers_secret(
    name: str, s: MonitoringSettings, meta: dict[str, Any], child: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    urls = {"webhook": s.alert_webhook_url, "slack": s.alert_slack_webhook_url}
    # The Outputs are secrets already (config.get_secret), and the provider keeps Secret data secret.
    data: dict[str, pulumi.Input[str]] = {RECEIVER_KEYS[r]: url for r, url in urls.items() if url is not None}
    return k8s.core.v1.Secret(
        f"{name}-alert-receivers",
        metadata={**meta, "name": RECEIVERS_SECRET},
        type="Opaque",
        string_data=data,
        opts=child,
    )
