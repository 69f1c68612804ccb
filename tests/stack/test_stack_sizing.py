"""Prod's sizing fits its node type, and the local stack (which `make real-engine` deploys) is that sizing.

The real proof is the real-engine run: the real kube-scheduler places prod's pods on simulated g5.2xlarge nodes
with their real allocatable, through a first `up` and a model change. kwok's nodes do not model GPU memory or
cores (HAMi's scheduler does that on a real cluster), so those two are checked here by arithmetic, along with
the rule the run relies on: maxReplicas serving pods plus one slot for a surge pod or an engine build.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from local_cluster.nodes import NODE_TYPES, NodeType
from model_pipeline.syntax import quantity_value
from tests.paths import ROOT

PROJECT = "inference-platform"
GPU_NODES = 2  # prod's node group in the example, and the simulated cluster's GPU nodes
# Everything that decides whether the pods fit, as (section, key).
FIT_KEYS = (
    ("gpu", "nodeSelector"),
    ("gpu", "sharing"),
    ("gpu", "hami"),
    ("triton", "cpuRequest"),
    ("triton", "cpuLimit"),
    ("triton", "memoryRequest"),
    ("triton", "memoryLimit"),
    ("triton", "shmSize"),
    ("triton", "maxSurge"),
    ("triton", "maxUnavailable"),
    ("autoscaling", "minReplicas"),
    ("autoscaling", "maxReplicas"),
    ("modelRepository", "engineCpu"),
    ("modelRepository", "engineMemory"),
)


def _stack(name: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in config.items()}


def _get(config: dict[str, Any], section: str, key: str) -> Any:
    return (config.get(section) or {}).get(key)


def triton_slots_per_node(config: dict[str, Any], node: NodeType) -> int:
    """How many Triton pods one GPU node holds: the tightest of CPU, memory, GPU memory and GPU cores."""
    cpu = quantity_value(_get(config, "triton", "cpuRequest"))
    memory = quantity_value(_get(config, "triton", "memoryRequest"))
    hami = _get(config, "gpu", "hami") or {}
    fits = [int(node.allocatable_cpu_millis() / 1000 // cpu), int(node.allocatable_memory_ki() * 1024 // memory)]
    if hami.get("gpuMemoryMiB"):
        fits.append(node.gpus * (node.gpu_memory_mib // hami["gpuMemoryMiB"]))
    if hami.get("gpuCoresPercent"):
        fits.append(node.gpus * (100 // hami["gpuCoresPercent"]))
    return min(fits)


def sizing_problems(config: dict[str, Any], nodes: int = GPU_NODES) -> list[str]:
    node = NODE_TYPES[config["gpu"]["nodeSelector"]["node.kubernetes.io/instance-type"]]
    slots = nodes * triton_slots_per_node(config, node)
    serving = _get(config, "autoscaling", "maxReplicas") or _get(config, "triton", "replicas")
    surge = _get(config, "triton", "maxSurge")
    problems = []
    if serving + max(surge if surge is not None else 1, 1) > slots:
        problems.append(
            f"{serving} serving pods and a rollout's surge (or an engine build) need more than the "
            f"{slots} Triton slots of {nodes} {node.name}"
        )
    for engine, triton in (("engineCpu", "cpuRequest"), ("engineMemory", "memoryRequest")):
        wanted = _get(config, "modelRepository", engine) or {"engineCpu": "4", "engineMemory": "16Gi"}[engine]
        if quantity_value(wanted) > quantity_value(_get(config, "triton", triton)):
            problems.append(f"modelRepository.{engine} ({wanted}) is larger than a Triton slot (triton.{triton})")
    return problems


def test_prod_fits_its_node_group_with_room_for_one_rollout_or_engine_build() -> None:
    assert sizing_problems(_stack("prod")) == []


def test_the_sizing_prod_had_before_deadlocks_and_the_check_says_so() -> None:
    """4 CPU / 16 Gi pods, 12000 MiB of the A10G each, a 4 CPU / 16 Gi engine build and maxReplicas 8 on two
    g5.2xlarge: one pod per node, so the surge pod and the engine Job stayed Pending for ever."""
    before = _stack("prod")
    before["triton"] = {**before["triton"], "cpuRequest": "4", "memoryRequest": "16Gi"}
    before["gpu"] = {**before["gpu"], "hami": {"gpuMemoryMiB": 12000, "gpuCoresPercent": 50}}
    before["autoscaling"] = {**before["autoscaling"], "maxReplicas": 8}
    before["modelRepository"] = {**before["modelRepository"], "engineCpu": "4", "engineMemory": "16Gi"}
    problems = sizing_problems(before)
    assert problems == [
        "8 serving pods and a rollout's surge (or an engine build) need more than the 2 Triton slots of 2 g5.2xlarge"
    ]


@pytest.mark.parametrize(("section", "key"), FIT_KEYS)
def test_the_local_stack_deploys_prods_sizing(section: str, key: str) -> None:
    assert _get(_stack("local"), section, key) == _get(_stack("prod"), section, key)
