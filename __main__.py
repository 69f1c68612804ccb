"""The inference platform: GPUs, Triton serving from S3, monitoring, autoscaling and a gateway, per stack."""

import pulumi

from components import autoscaling, gpu_stack, kube, load_balancer, model_repository, monitoring, triton_cluster
from components.config import load_platform_config

cfg = load_platform_config()
on_cluster = kube.cluster_options(cfg.kubernetes.context, cfg.kubernetes.kubeconfig)

metrics = monitoring.MonitoringStack(
    "monitoring",
    monitoring.MonitoringStackArgs(
        settings=cfg.monitoring,
        triton_namespace=cfg.triton.namespace,
        triton_pod_selector=triton_cluster.pod_selector("triton"),
        startup_budget_seconds=cfg.triton.startup_budget_seconds,
        mig=cfg.gpu.uses_mig,
    ),
    on_cluster,
)

# HAMi's chart renders its ServiceMonitors only if the CRD exists when it installs: after kube-prometheus-stack.
gpu_args = gpu_stack.GpuStackArgs(cfg.gpu, kubernetes_version=cfg.kubernetes.version, wait_for=[metrics.release])
gpu = gpu_stack.GpuStack("gpu", gpu_args, on_cluster)

models = model_repository.ModelRepository(
    "models",
    model_repository.ModelRepositoryArgs(
        settings=cfg.model_repository,
        models=cfg.models,
        triton_namespace=cfg.triton.namespace,
        triton_image=cfg.triton.image,
        placement=gpu.placement,
        wait_for=gpu.ready,
    ),
    on_cluster,
)

triton = triton_cluster.TritonCluster(
    "triton",
    triton_cluster.TritonClusterArgs(
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

deployed: list[pulumi.Resource] = [metrics, gpu, models, triton]
if cfg.load_balancer.enabled:
    gateway_args = load_balancer.LoadBalancerArgs(settings=cfg.load_balancer, backend=triton.backend)
    gateway = load_balancer.LoadBalancer("gateway", gateway_args, on_cluster)
    deployed.append(gateway)
    pulumi.export("gateway_address", gateway.address)
    pulumi.export("gateway_http", gateway.http_endpoint)
    pulumi.export("gateway_grpc", gateway.grpc_endpoint)

# Autoscaling last, after everything: its APIService (custom.metrics.k8s.io) breaks API discovery, and with it
# every namespace deletion, once its backend is gone - so destroy must remove it first.
if cfg.autoscaling.enabled:
    scaling = autoscaling.AutoscalingArgs(cfg.autoscaling, metrics.prometheus, triton.backend, wait_for=deployed)
    autoscaling.Autoscaling("autoscaling", scaling, on_cluster)

pulumi.export("triton_namespace", triton.namespace)
pulumi.export("triton_service", triton.service_name)
if cfg.triton.direct_clients:  # in-cluster URLs, for the pods of those namespaces (the NetworkPolicy's rule)
    pulumi.export("triton_http", triton.backend.http_url)
    pulumi.export("triton_grpc", triton.backend.grpc_address)
pulumi.export("gpu_limits", dict(gpu.placement.limits))
pulumi.export("grafana_url", metrics.grafana_url)
pulumi.export("grafana_admin_password", metrics.grafana_admin_password)
pulumi.export("prometheus_url", metrics.prometheus_url)
pulumi.export("model_bucket", models.bucket)
pulumi.export("model_repository_uri", models.repository_uri)
pulumi.export("model_repository_digest", models.digest)
