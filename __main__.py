"""The inference platform: GPUs, Triton serving from S3, monitoring, autoscaling and a gateway, per stack."""

import pulumi

from components.autoscaling import Autoscaling, AutoscalingArgs
from components.config import load_platform_config
from components.gpu_stack import GpuStack, GpuStackArgs
from components.kube import cluster_options
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.model_repository import ModelRepository, ModelRepositoryArgs
from components.monitoring import MonitoringStack, MonitoringStackArgs
from components.triton_cluster import TritonCluster, TritonClusterArgs, pod_selector

cfg = load_platform_config()
on_cluster = cluster_options(cfg.kubernetes.context, cfg.kubernetes.kubeconfig)

monitoring = MonitoringStack(
    "monitoring",
    MonitoringStackArgs(
        settings=cfg.monitoring,
        triton_namespace=cfg.triton.namespace,
        triton_pod_selector=pod_selector("triton"),
        startup_budget_seconds=cfg.triton.startup_budget_seconds,
        mig=cfg.gpu.uses_mig,
    ),
    on_cluster,
)

# HAMi's chart renders its ServiceMonitors only if the CRD exists when it installs: after kube-prometheus-stack.
gpu_args = GpuStackArgs(settings=cfg.gpu, kubernetes_version=cfg.kubernetes.version, wait_for=[monitoring.release])
gpu = GpuStack("gpu", gpu_args, on_cluster)

models = ModelRepository(
    "models",
    ModelRepositoryArgs(
        settings=cfg.model_repository,
        models=cfg.models,
        triton_namespace=cfg.triton.namespace,
        triton_image=cfg.triton.image,
        placement=gpu.placement,
        wait_for=gpu.ready,
    ),
    on_cluster,
)

triton = TritonCluster(
    "triton",
    TritonClusterArgs(
        settings=cfg.triton,
        repository=models.access,
        placement=gpu.placement,
        autoscaled=cfg.autoscaling.enabled,
        rollout_replicas=cfg.rollout_replicas,
        client_namespaces=cfg.triton_clients,
        monitoring_namespace=cfg.monitoring.namespace,
    ),
    on_cluster,
)

deployed: list[pulumi.Resource] = [monitoring, gpu, models, triton]
if cfg.load_balancer.enabled:
    gateway = LoadBalancer("gateway", LoadBalancerArgs(settings=cfg.load_balancer, backend=triton.backend), on_cluster)
    deployed.append(gateway)
    pulumi.export("gateway_address", gateway.address)
    pulumi.export("gateway_http", gateway.http_endpoint)
    pulumi.export("gateway_grpc", gateway.grpc_endpoint)

# Autoscaling last, after everything: its APIService (custom.metrics.k8s.io) breaks API discovery, and with it
# every namespace deletion, once its backend is gone - so destroy must remove it first.
if cfg.autoscaling.enabled:
    scaling = AutoscalingArgs(cfg.autoscaling, monitoring.prometheus, triton.backend, wait_for=deployed)
    Autoscaling("autoscaling", scaling, on_cluster)

pulumi.export("triton_namespace", triton.namespace)
pulumi.export("triton_service", triton.service_name)
pulumi.export("triton_http", triton.backend.http_url)
pulumi.export("triton_grpc", triton.backend.grpc_address)
pulumi.export("gpu_limits", dict(gpu.placement.limits))
pulumi.export("grafana_url", monitoring.grafana_url)
pulumi.export("grafana_admin_password", monitoring.grafana_admin_password)
pulumi.export("prometheus_url", monitoring.prometheus_url)
pulumi.export("model_bucket", models.bucket)
pulumi.export("model_repository_uri", models.repository_uri)
pulumi.export("model_repository_digest", models.digest)
