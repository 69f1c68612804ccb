"""The simulated cluster's nodes, modelled on the node types a stack runs on.

A fake node is an ordinary Node object that kwok keeps alive: labels, taints, capacity and allocatable are what
a real node of that type reports on EKS (allocatable = capacity minus the EKS AMI's kube-reserved and eviction
threshold: CPU 6 % of the first core, 1 % of the second, 0.5 % of the next two, 0.25 % of the rest; memory
11 MiB per pod + 255 MiB, plus 100 MiB eviction; pods = the VPC CNI's max-pods of that instance type), so every
scheduling decision the real kube-scheduler makes here is the one it would make there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
ZONE = "eu-west-1a"


@dataclass(frozen=True)
class NodeType:
    """An instance type as the kubelet reports it."""

    name: str
    cpus: int
    memory_ki: int  # capacity.memory as the kubelet reads it from the instance (below the nominal GiB)
    max_pods: int
    gpus: int = 0
    gpu_product: str = ""
    gpu_memory_mib: int = 0
    ephemeral_storage_ki: int = 20959212  # a 20 GiB root volume, the EKS managed node group default

    def allocatable_cpu_millis(self) -> int:
        reserved = 60 + (10 if self.cpus > 1 else 0) + 5 * min(max(self.cpus - 2, 0), 2)
        reserved += int(2.5 * max(self.cpus - 4, 0))
        return self.cpus * 1000 - reserved

    def allocatable_memory_ki(self) -> int:
        return self.memory_ki - (11 * self.max_pods + 255) * 1024 - 100 * 1024


NODE_TYPES: dict[str, NodeType] = {
    t.name: t
    for t in (
        NodeType("m5.xlarge", 4, 15896988, 58),
        NodeType("m5.2xlarge", 8, 32408132, 58),
        NodeType("g4dn.xlarge", 4, 16116152, 29, 1, "Tesla-T4", 15360),
        NodeType("g5.xlarge", 4, 16069156, 58, 1, "NVIDIA-A10G", 23028),
        NodeType("g5.2xlarge", 8, 32386544, 58, 1, "NVIDIA-A10G", 23028),
        NodeType("g5.12xlarge", 48, 195833208, 234, 4, "NVIDIA-A10G", 23028),
        NodeType("g6.2xlarge", 8, 32370268, 58, 1, "NVIDIA-L4", 23034),
    )
}
SYSTEM_NODE_TYPE = "m5.xlarge"  # the node group that runs monitoring, the gateway and the operators


@dataclass(frozen=True)
class NodePlan:
    """Which nodes to create for a stack: GPU nodes of its instance type, plus system nodes."""

    gpu_type: NodeType
    gpu_nodes: tuple[str, ...]
    gpu_labels: Mapping[str, str]
    gpu_taints: tuple[Mapping[str, str], ...]
    gpu_resources: Mapping[str, str]  # extended resources each GPU node advertises
    system_nodes: tuple[str, ...] = ("system-1", "system-2")


def plan_for_stack(config: Mapping[str, Any], gpu_node_count: int = 2) -> NodePlan:
    """The nodes that a stack's `gpu` settings expect (raw values of Pulumi.<stack>.yaml, namespace stripped)."""
    gpu = config.get("gpu") or {}
    selector = dict(gpu.get("nodeSelector") or {"nvidia.com/gpu.present": "true"})
    type_name = selector.get("node.kubernetes.io/instance-type", "g5.2xlarge")
    if type_name not in NODE_TYPES:
        raise ValueError(f"no model of instance type {type_name!r} (gpu.nodeSelector); known: {sorted(NODE_TYPES)}")
    node_type = NODE_TYPES[type_name]
    names = tuple(f"gpu-node-{i}" for i in range(1, gpu_node_count + 1))
    hami = gpu.get("sharing") == "hami"
    resources = {
        "nvidia.com/gpu": str(node_type.gpus * int((gpu.get("hami") or {}).get("splitCount", 10)))
        if hami
        else str(node_type.gpus)
    }
    tolerations = gpu.get("tolerations")
    taints = (GPU_TAINT,) if tolerations is None or tolerations else ()
    return NodePlan(node_type, names, selector, taints, resources)


def _labels(name: str, node_type: NodeType, group: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": node_type.name,
        "beta.kubernetes.io/instance-type": node_type.name,
        "topology.kubernetes.io/region": ZONE[:-1],
        "topology.kubernetes.io/zone": ZONE,
        "eks.amazonaws.com/nodegroup": group,
        "eks.amazonaws.com/capacityType": "ON_DEMAND",
        "type": "kwok",
    }


def _gpu_labels(node_type: NodeType) -> dict[str, str]:
    """What NFD and GPU Feature Discovery put on a GPU node."""
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": str(node_type.gpus),
        "nvidia.com/gpu.product": node_type.gpu_product,
        "nvidia.com/gpu.memory": str(node_type.gpu_memory_mib),
        "feature.node.kubernetes.io/pci-10de.present": "true",
    }


def node_manifest(
    name: str,
    node_type: NodeType,
    *,
    labels: Mapping[str, str] | None = None,
    taints: tuple[Mapping[str, str], ...] = (),
    extended: Mapping[str, str] | None = None,
    group: str = "system",
) -> dict[str, Any]:
    capacity = {
        "cpu": str(node_type.cpus),
        "memory": f"{node_type.memory_ki}Ki",
        "pods": str(node_type.max_pods),
        "ephemeral-storage": f"{node_type.ephemeral_storage_ki}Ki",
        **(extended or {}),
    }
    allocatable = {
        **capacity,
        "cpu": f"{node_type.allocatable_cpu_millis()}m",
        "memory": f"{node_type.allocatable_memory_ki()}Ki",
        "ephemeral-storage": str(int(node_type.ephemeral_storage_ki * 1024 * 0.9)),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
            "labels": {**_labels(name, node_type, group), **(labels or {})},
        },
        "spec": {"taints": [dict(t) for t in taints]},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "containerRuntimeVersion": "containerd://2.1.4",
                "osImage": "Amazon Linux 2023",
                "kernelVersion": "6.1.112-124.190.amzn2023.x86_64",
            },
        },
    }


def manifests(plan: NodePlan) -> list[dict[str, Any]]:
    """Every Node of the plan."""
    gpu_labels = {**_gpu_labels(plan.gpu_type), **plan.gpu_labels}
    nodes = [
        node_manifest(
            n, plan.gpu_type, labels=gpu_labels, taints=plan.gpu_taints, extended=plan.gpu_resources, group="gpu"
        )
        for n in plan.gpu_nodes
    ]
    nodes += [node_manifest(n, NODE_TYPES[SYSTEM_NODE_TYPE]) for n in plan.system_nodes]
    return nodes
