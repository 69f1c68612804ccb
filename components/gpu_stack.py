"""GpuStack: makes GPUs schedulable — the NVIDIA GPU Operator, and HAMi when GPUs are shared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.chart_crds import chart_crds
from components.kube import after, namespace
from components.settings import GpuSettings
from model_pipeline.syntax import duration_seconds

HAMI_SCHEDULER = "hami-scheduler"
NVIDIA_RUNTIME_CLASS = "nvidia"


@dataclass(frozen=True)
class GpuPlacement:
    """What a GPU workload must request and where it may run."""

    limits: Mapping[str, str]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    scheduler_name: str | None = None
    runtime_class_name: str | None = None
    gpu_metrics: bool = True  # Triton can read its own GPU metrics: not on MIG devices (DCGM covers them)

    def pod_fields(self) -> dict[str, Any]:
        """The pod-spec fields that place a pod on a GPU node."""
        fields: dict[str, Any] = {
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }
        if self.scheduler_name:
            fields["schedulerName"] = self.scheduler_name
        if self.runtime_class_name:
            fields["runtimeClassName"] = self.runtime_class_name
        return fields


@dataclass(frozen=True)
class GpuStackArgs:
    """Inputs of :class:`GpuStack`."""

    settings: GpuSettings
    kubernetes_version: str
    # Objects HAMi's chart must see at install time (the ServiceMonitor CRD renders its monitors).
    wait_for: Sequence[pulumi.Resource] = field(default_factory=tuple)


def gpu_placement(settings: GpuSettings) -> GpuPlacement:
    """Resource limits, scheduler and node placement for one GPU workload pod."""
    gpus = str(settings.gpus_per_pod)
    if not settings.uses_hami:
        return GpuPlacement(
            limits={"nvidia.com/gpu": gpus},
            node_selector=settings.node_selector,
            tolerations=settings.tolerations,
            gpu_metrics=not settings.uses_mig,
        )
    hami = settings.hami
    limits = {"nvidia.com/gpu": gpus}
    if hami.gpu_memory_mib:
        limits["nvidia.com/gpumem"] = str(hami.gpu_memory_mib)
    if hami.gpu_memory_percent:
        limits["nvidia.com/gpumem-percentage"] = str(hami.gpu_memory_percent)
    if hami.gpu_cores_percent:
        limits["nvidia.com/gpucores"] = str(hami.gpu_cores_percent)
    return GpuPlacement(
        limits=limits,
        node_selector=settings.node_selector,
        tolerations=settings.tolerations,
        scheduler_name=HAMI_SCHEDULER,
        runtime_class_name=NVIDIA_RUNTIME_CLASS,
        gpu_metrics=not settings.uses_mig,
    )


def dcgm_interval_ms(interval: str) -> int:
    """``DCGM_EXPORTER_INTERVAL``: dcgm-exporter's collection interval, in milliseconds."""
    return round(duration_seconds(interval) * 1000)


def gpu_operator_values(settings: GpuSettings) -> dict[str, Any]:
    """Helm values for the GPU Operator."""
    return {
        "driver": {"enabled": settings.driver},
        "toolkit": {"enabled": settings.toolkit},
        # HAMi hands GPUs to containers through NVIDIA_VISIBLE_DEVICES (the toolkit's envvar strategy). With
        # the operator's CDI mode, on by default since 26.x, that combination fails (HAMi#1106), and HAMi's own
        # prerequisites turn CDI off. Whole GPUs keep the operator's default: its device plugin speaks CDI.
        "cdi": {"enabled": not settings.uses_hami},
        # Two device plugins advertising nvidia.com/gpu on one node fight; HAMi brings its own.
        "devicePlugin": {"enabled": not settings.uses_hami},
        "mig": {"strategy": settings.mig_strategy},
        # Its CRDs are Pulumi's (components/chart_crds.py); the operator's own CRD upgrade hook would fight them.
        "operator": {"upgradeCRD": False},
        "migManager": {"enabled": settings.uses_mig},
        # gpu.dcgmInterval is both how often dcgm-exporter collects (its own default is 30 s) and how often
        # Prometheus scrapes it: a faster scrape alone would only read the same sample again.
        "dcgmExporter": {
            "enabled": True,
            "env": [{"name": "DCGM_EXPORTER_INTERVAL", "value": str(dcgm_interval_ms(settings.dcgm_interval))}],
            "serviceMonitor": {"enabled": True, "interval": settings.dcgm_interval},
        },
    }


def hami_values(settings: GpuSettings, kubernetes_version: str) -> dict[str, Any]:
    """Helm values for HAMi, wired to the GPU Operator's driver, toolkit and runtime class."""
    return {
        "scheduler": {
            # The chart's default image lives on a mirror and follows Helm's idea of the cluster version;
            # pin the upstream image at the control plane's real version instead.
            "kubeScheduler": {
                "image": {
                    "registry": "registry.k8s.io",
                    "repository": versions.KUBE_SCHEDULER_IMAGE.split("/", 1)[1],
                    "tag": f"v{kubernetes_version}",
                },
            },
            "service": {"type": "ClusterIP"},
            # No GPU tolerations, on purpose: the scheduler is a control-plane service for the system nodes,
            # so draining or replacing GPU nodes never takes GPU scheduling down with them.
        },
        "devicePlugin": {
            # Named on HAMi's daemonset and on every GPU pod, so both get the nvidia runtime whether or not it
            # is the node's default (it is not where the node image brings the toolkit).
            "runtimeClassName": NVIDIA_RUNTIME_CLASS,
            "createRuntimeClass": False,
            "gpuOperatorToolkitReady": {"enabled": settings.toolkit},
            "deviceSplitCount": settings.hami.split_count,
            # The device plugin runs on exactly the nodes GPU pods select (node-group labels), so a replaced or
            # added node gets it without anyone labelling it. Helm merges maps and Pulumi's Python SDK drops
            # nulls (pulumi#12178), so the chart's default `gpu: on` stays required: the config insists that
            # gpu.nodeSelector includes it (the simulated cluster showed 0 plugins without it).
            "nvidiaNodeSelector": dict(settings.node_selector),
            # The chart gives its DaemonSet no tolerations: on tainted GPU nodes no GPU would ever be advertised
            # while Helm reports success. It tolerates what the GPU workloads tolerate.
            "tolerations": [dict(t) for t in settings.tolerations],
            "migStrategy": settings.mig_strategy,
            "service": {"type": "ClusterIP"},
        },
        "prometheus": {"enabled": True},
    }


def runtime_class(name: str, handler: str, opts: pulumi.ResourceOptions) -> k8s.node.v1.RuntimeClass:
    """The RuntimeClass GPU pods name. The operator creates it with its container toolkit; where the node image
    brings the toolkit (gpu.toolkit false) nobody does, and the API server rejects every pod that names it."""
    return k8s.node.v1.RuntimeClass(name, metadata={"name": handler}, handler=handler, opts=opts)


class GpuStack(pulumi.ComponentResource):
    """The NVIDIA GPU Operator, plus HAMi when GPUs are shared."""

    placement: GpuPlacement
    operator: k8s.helm.v3.Release
    hami: k8s.helm.v3.Release | None
    ready: list[pulumi.Resource]  # what a GPU workload must wait for

    def __init__(self, name: str, args: GpuStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:GpuStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        self.placement = gpu_placement(settings)

        operator_ns = namespace(f"{name}-operator-ns", settings.operator_namespace, "privileged", child)
        crds = chart_crds(f"{name}-gpu-operator-crds", versions.GPU_OPERATOR, settings.sources.charts, child)
        self.operator = k8s.helm.v3.Release(
            f"{name}-gpu-operator",
            name="gpu-operator",
            **settings.sources.release_args(versions.GPU_OPERATOR, gpu_operator_values(settings)),
            namespace=operator_ns.metadata.name,
            skip_crds=True,
            opts=after(child, [crds]),
        )
        self.hami = _hami(name, args, self.operator, child) if settings.uses_hami else None
        self.ready = [self.operator, *([self.hami] if self.hami else [])]
        if self.placement.runtime_class_name and not settings.toolkit:
            self.ready.append(runtime_class(f"{name}-runtime-class", self.placement.runtime_class_name, child))
        self.register_outputs(
            {
                "limits": dict(self.placement.limits),
                "scheduler_name": self.placement.scheduler_name,
                "node_selector": dict(self.placement.node_selector),
                "operator_release": self.operator.status.name,
            }
        )


def _hami(
    name: str, args: GpuStackArgs, operator: pulumi.Resource, child: pulumi.ResourceOptions
) -> k8s.helm.v3.Release:
    settings = args.settings
    hami_ns = namespace(f"{name}-hami-ns", settings.hami.namespace, "privileged", child)
    return k8s.helm.v3.Release(
        f"{name}-hami",
        name="hami",
        **settings.sources.release_args(versions.HAMI, hami_values(settings, args.kubernetes_version)),
        namespace=hami_ns.metadata.name,
        # HAMi's device plugin waits for the operator's toolkit; its monitors need the CRDs at render time.
        opts=after(child, [operator, *args.wait_for]),
    )
