"""CrossGuard policy pack: the platform's guard rails (policy/rules.py) run by `pulumi preview --policy-pack policy`.

Every rule is mandatory. Values unknown during preview make CrossGuard report "can't run policy during preview"
(advisory) for that resource; the same rule runs again, with known values, during `pulumi up`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rules  # the pack directory is on sys.path when the CLI runs it (runpy.run_path)
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PACK_NAME = "inference-platform-guardrails"

DESCRIPTIONS = {
    "pinned-images": "No latest or untagged container images (workloads, custom resources, Helm values we set).",
    "container-resources": "Every container sets CPU and memory requests and limits.",
    "gpu-resource-names": "GPU pods request GPUs in limits through the configured resource names "
    "(nvidia.com/gpu; with HAMi also a memory share, and Guaranteed QoS).",
    "triton-probes": "Triton has startup, readiness (/v2/health/ready) and liveness (/v2/health/live) probes.",
    "no-static-aws-keys": "No static AWS keys outside Secrets: no literal AWS_* env values, none in ConfigMaps, "
    "none as inputs of a dynamic provider.",
    "no-load-balancer-services": "No Service of type LoadBalancer; only the gateway (EnvoyProxy envoyService) is "
    "exposed.",
    "no-removed-api-versions": "No Kubernetes API versions that are no longer served (v2beta2 HPA, v1beta1 PDB, ...).",
}

GPU_NAMES_SCHEMA = PolicyConfigSchema(
    properties={
        "gpu": {"type": "string", "default": rules.DEFAULT_GPU_NAMES.gpu},
        "hamiMemory": {
            "type": "array",
            "items": {"type": "string"},
            "default": list(rules.DEFAULT_GPU_NAMES.hami_memory),
        },
        "hamiCores": {"type": "string", "default": rules.DEFAULT_GPU_NAMES.hami_cores},
        "hamiScheduler": {"type": "string", "default": rules.DEFAULT_GPU_NAMES.hami_scheduler},
    }
)


def gpu_names(config: Any) -> rules.GpuResourceNames:
    """The resource names from the pack's config (`--policy-pack-config`), defaulting to the platform's."""
    config = config or {}
    d = rules.DEFAULT_GPU_NAMES
    return rules.GpuResourceNames(
        gpu=config.get("gpu", d.gpu),
        hami_memory=tuple(config.get("hamiMemory", d.hami_memory)),
        hami_cores=config.get("hamiCores", d.hami_cores),
        hami_scheduler=config.get("hamiScheduler", d.hami_scheduler),
    )


def resource_policy(name: str, rule: rules.ResourceRule) -> ResourceValidationPolicy:
    """A mandatory CrossGuard policy that reports each message of a plain rule."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if name == "gpu-resource-names":
            found = rules.gpu_requests(args.resource_type, args.props, gpu_names(args.get_config()))
        else:
            found = rule(args.resource_type, args.props)
        for message in found:
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=DESCRIPTIONS[name],
        enforcement_level=EnforcementLevel.MANDATORY,
        validate=validate,
        config_schema=GPU_NAMES_SCHEMA if name == "gpu-resource-names" else None,
    )


def stack_policy(name: str, description: str, rule: Callable[[Any], list[str]]) -> StackValidationPolicy:
    """A mandatory stack policy over (type, inputs) of every resource."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule([(r.resource_type, r.props) for r in args.resources]):
            report_violation(message, None)

    return StackValidationPolicy(
        name=name, description=description, enforcement_level=EnforcementLevel.MANDATORY, validate=validate
    )


PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        *(resource_policy(name, rule) for name, rule in rules.RESOURCE_RULES.items()),
        stack_policy(
            "triton-disruption-budget",
            "Every Triton workload has a policy/v1 PodDisruptionBudget selecting its pods.",
            rules.triton_disruption_budget,
        ),
    ],
)
