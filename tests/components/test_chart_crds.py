"""Chart CRDs owned by Pulumi: read from the pinned archive the release installs, fetched and checked once."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components import versions
from components.chart_crds import ChartArchiveError, chart_archive, crd_documents
from offline.harness import Recording
from tests._pipeline_helpers import serve_directory

RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"


def _names(archive: Path) -> set[str]:
    return {d["metadata"]["name"] for d in crd_documents(archive)}


def test_the_crds_of_the_pinned_charts_and_their_subcharts(shared_dir: Path) -> None:
    kps = _names(shared_dir / "charts" / versions.KUBE_PROMETHEUS_STACK.archive)
    assert len(kps) == 10 and all(n.endswith(".monitoring.coreos.com") for n in kps)
    operator = _names(shared_dir / "charts" / versions.GPU_OPERATOR.archive)
    assert "clusterpolicies.nvidia.com" in operator
    assert "nodefeaturerules.nfd.k8s-sigs.io" in operator, "node-feature-discovery's, a subchart's crds/"
    assert len(operator) == 8


@pytest.mark.parametrize(
    ("release", "group", "pin"),
    [
        ("gpu-gpu-operator", "gpu-gpu-operator-crds", versions.GPU_OPERATOR),
        ("monitoring-kube-prometheus-stack", "monitoring-kube-prometheus-stack-crds", versions.KUBE_PROMETHEUS_STACK),
    ],
)
def test_releases_skip_their_crds_and_install_after_pulumis(
    prod: Recording, shared_dir: Path, release: str, group: str, pin: versions.ChartPin
) -> None:
    """Helm never upgrades or deletes a crds/ folder: destroy left 18 CRDs on the simulated cluster."""
    helm = prod.one(RELEASE, release)
    crds = prod.one(CONFIG_GROUP, group)
    assert helm.inputs["skipCrds"] is True
    assert crds.urn in helm.dependencies
    assert {o["metadata"]["name"] for o in crds.inputs["objs"]} == _names(shared_dir / "charts" / pin.archive)


def test_the_charts_own_crd_machinery_is_off(prod: Recording) -> None:
    kps = prod.one(RELEASE, "monitoring-kube-prometheus-stack").inputs["values"]
    assert kps["crds"]["enabled"] is False and kps["crds"]["upgradeJob"]["enabled"] is False
    assert prod.one(RELEASE, "gpu-gpu-operator").inputs["values"]["operator"]["upgradeCRD"] is False


@pytest.fixture
def chart_repository(tmp_path: Path, shared_dir: Path) -> Iterator[tuple[str, Path]]:
    """A Helm chart repository on 127.0.0.1 serving index.yaml and the pinned kube-prometheus-stack archive."""
    pin = versions.KUBE_PROMETHEUS_STACK
    served = tmp_path / "repo"
    served.mkdir()
    shutil.copy(shared_dir / "charts" / pin.archive, served / pin.archive)
    digest = hashlib.sha256((served / pin.archive).read_bytes()).hexdigest()
    index = {
        "apiVersion": "v1",
        "entries": {pin.name: [{"version": pin.version, "urls": [pin.archive], "digest": digest}]},
    }
    (served / "index.yaml").write_text(yaml.safe_dump(index))

    with serve_directory(served) as url:
        yield url, served


def test_a_remote_chart_is_fetched_once_and_checked_against_its_index_digest(
    chart_repository: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = chart_repository
    monkeypatch.setenv("INFERENCE_PLATFORM_CHART_CACHE", str(tmp_path / "cache"))
    archive = chart_archive(versions.KUBE_PROMETHEUS_STACK, url)
    assert archive.parent == tmp_path / "cache" and len(crd_documents(archive)) == 10
    (served / versions.KUBE_PROMETHEUS_STACK.archive).unlink()
    assert chart_archive(versions.KUBE_PROMETHEUS_STACK, url) == archive  # from the cache, no request


def test_an_archive_that_does_not_match_the_index_is_refused(
    chart_repository: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = chart_repository
    monkeypatch.setenv("INFERENCE_PLATFORM_CHART_CACHE", str(tmp_path / "cache"))
    (served / versions.KUBE_PROMETHEUS_STACK.archive).write_bytes(b"not the chart")
    with pytest.raises(ChartArchiveError, match="does not match its index digest"):
        chart_archive(versions.KUBE_PROMETHEUS_STACK, url)
    assert not (tmp_path / "cache" / versions.KUBE_PROMETHEUS_STACK.archive).exists()
