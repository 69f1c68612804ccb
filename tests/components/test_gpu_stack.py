"""GpuStack: the operator's features per stack, HAMi wiring, and what GPU pods must request."""

from __future__ import annotations

from pathlib import Path

from components import versions
from components.gpu_stack import (
    HAMI_SCHEDULER,
    dcgm_interval_ms,
    gpu_operator_values,
    gpu_placement,
    hami_values,
)
from components.settings import GpuSettings, HamiSettings
from offline.harness import Recording, run_program
from offline.validate import load_values
from tests._stack_repository import config_with_build_dir

HAMI = GpuSettings(sharing="hami", hami=HamiSettings(gpu_memory_mib=8000, gpu_cores_percent=30))


def test_whole_gpu_mode_requests_nvidia_gpus_with_the_default_scheduler() -> None:
    placement = gpu_placement(GpuSettings(gpus_per_pod=2))
    assert placement.limits == {"nvidia.com/gpu": "2"}
    assert "schedulerName" not in placement.pod_fields()
    assert placement.pod_fields()["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_hami_mode_requests_slices_through_hamis_scheduler_on_the_gpu_node_group() -> None:
    placement = gpu_placement(HAMI)
    assert placement.limits == {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8000", "nvidia.com/gpucores": "30"}
    fields = placement.pod_fields()
    assert fields["schedulerName"] == HAMI_SCHEDULER
    assert fields["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # what the settings say, as they say it
    assert fields["runtimeClassName"] == "nvidia"


def test_operator_device_plugin_is_off_exactly_when_hami_shares_gpus() -> None:
    assert gpu_operator_values(GpuSettings())["devicePlugin"] == {"enabled": True}
    assert gpu_operator_values(HAMI)["devicePlugin"] == {"enabled": False}


def test_driver_and_toolkit_follow_the_stack() -> None:
    values = gpu_operator_values(GpuSettings(driver=False, toolkit=False))
    assert values["driver"] == {"enabled": False} and values["toolkit"] == {"enabled": False}


def test_mig_strategy_drives_the_operator_and_its_mig_manager() -> None:
    assert gpu_operator_values(GpuSettings(mig_strategy="mixed"))["mig"] == {"strategy": "mixed"}
    assert gpu_operator_values(GpuSettings(mig_strategy="mixed"))["migManager"] == {"enabled": True}
    assert gpu_operator_values(GpuSettings())["migManager"] == {"enabled": False}


def test_dcgm_exporter_ships_its_service_monitor() -> None:
    dcgm = gpu_operator_values(GpuSettings(dcgm_interval="10s"))["dcgmExporter"]
    assert dcgm["enabled"] and dcgm["serviceMonitor"] == {"enabled": True, "interval": "10s"}


def test_dcgm_exporter_collects_at_the_interval_prometheus_scrapes_it(shared_dir: Path) -> None:
    """dcgm-exporter's own default is 30 s: without DCGM_EXPORTER_INTERVAL a 10 s scrape reads stale samples."""
    dcgm = gpu_operator_values(GpuSettings(dcgm_interval="10s"))["dcgmExporter"]
    assert dcgm["env"] == [{"name": "DCGM_EXPORTER_INTERVAL", "value": "10000"}]
    assert dcgm["serviceMonitor"]["interval"] == "10s"
    assert [dcgm_interval_ms(i) for i in ("15s", "1m30s", "500ms")] == [15000, 90000, 500]
    # The chart's key: a list of name/value pairs the operator adds to the exporter's container.
    defaults = load_values(shared_dir / "helm-values" / versions.GPU_OPERATOR.values_fixture)
    assert defaults["dcgmExporter"]["env"] == []


def test_hami_scheduler_image_comes_from_upstream_at_the_cluster_version() -> None:
    image = hami_values(HAMI, "1.31.4")["scheduler"]["kubeScheduler"]["image"]
    assert image == {"registry": "registry.k8s.io", "repository": "kube-scheduler", "tag": "v1.31.4"}


def test_hami_uses_the_operators_runtime_class_and_waits_for_its_toolkit() -> None:
    plugin = hami_values(HAMI, "1.31.4")["devicePlugin"]
    assert plugin["runtimeClassName"] == "nvidia" and plugin["createRuntimeClass"] is False
    assert plugin["gpuOperatorToolkitReady"] == {"enabled": True}


def test_hami_metrics_are_on() -> None:
    assert hami_values(HAMI, "1.31.4")["prometheus"] == {"enabled": True}


def test_dev_installs_only_the_operator(dev: Recording) -> None:
    releases = {
        r.inputs["name"]
        for r in dev.children_of("inference:platform:GpuStack")
        if r.type == "kubernetes:helm.sh/v3:Release"
    }
    assert releases == {"gpu-operator"}


def test_prod_patches_no_node_and_installs_hami_after_the_operator(prod: Recording) -> None:
    """GPU nodes are found by their node-group label: a server-side apply patch to a node name that does not
    exist (EKS names change on every replacement) would create a phantom Node."""
    assert not prod.of_type("kubernetes:core/v1:NodePatch") and not prod.of_type("kubernetes:core/v1:Node")
    hami = prod.one("kubernetes:helm.sh/v3:Release", "gpu-hami")
    operator = prod.one("kubernetes:helm.sh/v3:Release", "gpu-gpu-operator")
    assert operator.urn in hami.dependencies


def test_hamis_device_plugin_runs_where_gpu_pods_are_placed() -> None:
    group = {"eks.amazonaws.com/nodegroup": "gpu", "gpu": "on"}
    settings = GpuSettings(sharing="hami", node_selector=group)
    assert hami_values(settings, "1.31.4")["devicePlugin"]["nvidiaNodeSelector"] == group
    assert gpu_placement(settings).node_selector == group


def test_cdi_is_off_exactly_when_hami_hands_out_gpus_by_envvar() -> None:
    assert gpu_operator_values(HAMI)["cdi"] == {"enabled": False}
    assert gpu_operator_values(GpuSettings())["cdi"] == {"enabled": True}


def test_gpu_namespaces_allow_the_privileged_daemonsets(prod: Recording) -> None:
    namespaces = [r for r in prod.children_of("inference:platform:GpuStack") if r.kind == "Namespace"]
    assert {n.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for n in namespaces} == {"privileged"}


def test_hami_pods_get_a_runtime_class_where_the_operator_does_not_create_one(
    stack_repositories: dict[str, Path], prod: Recording
) -> None:
    """Found by the real engine: with the node image's toolkit nobody created `nvidia`, and the API server
    rejected the engine-build pods ("RuntimeClass nvidia not found")."""
    config = config_with_build_dir("prod", stack_repositories["prod"])
    config["inference-platform:gpu"] = {**config["inference-platform:gpu"], "toolkit": True}
    operator_toolkit = run_program("prod", config=config)
    assert operator_toolkit.of_type("kubernetes:node.k8s.io/v1:RuntimeClass") == []  # the operator's toolkit makes it
    recording = prod  # the AMI's toolkit: nobody else creates it
    (runtime,) = recording.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
    assert runtime.inputs["metadata"]["name"] == runtime.inputs["handler"] == "nvidia"
    job = next(r for r in recording.kubernetes_objects() if r.kind == "Job")
    assert job.inputs["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert runtime.urn in job.dependencies


def test_hamis_device_plugin_tolerates_the_gpu_taint() -> None:
    """Without it the DaemonSet never lands on tainted GPU nodes (the real run checks it runs on every one)."""
    assert hami_values(HAMI, "1.31.4")["devicePlugin"]["tolerations"] == [dict(t) for t in HAMI.tolerations]
    assert HAMI.tolerations  # the default: nvidia.com/gpu NoSchedule


def test_one_component_alone_under_the_recording_mocks() -> None:
    """A variation of GpuStack, declared without the rest of the program (offline.harness.run_component)."""
    from components.gpu_stack import GpuStack, GpuStackArgs
    from offline.harness import run_component

    settings = GpuSettings(sharing="hami", toolkit=False, node_selector={"gpu": "on"})
    recording = run_component(lambda: GpuStack("gpu", GpuStackArgs(settings=settings, kubernetes_version="1.31.4")))
    assert {r.inputs["name"] for r in recording.helm_releases()} == {"gpu-operator", "hami"}
    (runtime_class,) = recording.of_type("kubernetes:node.k8s.io/v1:RuntimeClass")
    assert runtime_class.inputs["handler"] == "nvidia"
    assert not recording.of_type("kubernetes:apps/v1:Deployment"), "nothing of the other components"
