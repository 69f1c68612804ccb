"""The offline render: a file per component, Helm releases as chart/version/values, secrets never in clear."""

from __future__ import annotations

from pathlib import Path

import yaml

from offline.harness import Recording, run_program
from offline.render import SECRET, render
from tests._stack_repository import config_with_build_dir


def test_writes_a_manifest_per_component_and_a_file_per_release(stack: Recording, tmp_path: Path) -> None:
    written = render(stack, tmp_path)
    triton = list(yaml.safe_load_all((tmp_path / "triton.yaml").read_text()))
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= {o["kind"] for o in triton}
    releases = {p.stem: yaml.safe_load(p.read_text()) for p in (tmp_path / "helm").glob("*.yaml")}
    assert len(releases) == len(stack.helm_releases())
    assert all(r["chart"] and r["version"] for r in releases.values())
    assert "summary" in written


def test_summary_lists_charts_images_and_outputs(prod: Recording, tmp_path: Path) -> None:
    render(prod, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    for release in prod.helm_releases():
        assert f"| {release.inputs['chart']} | {release.inputs['version']} |" in summary
    assert "nvcr.io/nvidia/tritonserver:" in summary
    assert "| triton_service |" in summary


def test_secrets_are_shown_as_secret_and_never_in_clear(stack_repositories: dict[str, Path], tmp_path: Path) -> None:
    recording = run_program(
        "dev",
        config=config_with_build_dir("dev", stack_repositories["dev"]),
        secrets={
            "inference-platform:s3AccessKeyId": "minio-user-7f3a",
            "inference-platform:s3SecretAccessKey": "minio-password-91c2",
        },
    )
    render(recording, tmp_path)
    text = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "minio-password-91c2" not in text and "minio-user-7f3a" not in text
    assert SECRET in text


def test_dynamic_resources_are_rendered_with_their_provider_and_without_the_pickle(
    dev: Recording, tmp_path: Path
) -> None:
    render(dev, tmp_path)
    cloud = {entry["name"]: entry for entry in yaml.safe_load((tmp_path / "cloud.yaml").read_text())}
    assert set(cloud) == {"models-files", "models-manifest", "monitoring-grafana-admin-password"}, "no aws in dev"
    files = cloud["models-files"]
    assert files["provider"] == "components.s3_publication.S3PublicationProvider"
    assert files["inputs"]["phase"] == "files" and files["inputs"]["digest"] == dev.outputs["model_repository_digest"]
    assert cloud["monitoring-grafana-admin-password"]["secret_outputs"] == ["result"]
    assert "__provider" not in (tmp_path / "cloud.yaml").read_text()
    summary = (tmp_path / "summary.md").read_text()
    assert "| models-manifest | `components.s3_publication.S3PublicationProvider` |" in summary
