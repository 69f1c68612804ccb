"""Every image comes from one place: upstream, or the stack's mirror (sources.imageRegistry).

The list of each chart's images (components/images.py) is checked against the chart itself: the values.yaml of
the pinned archive and of each subchart in it. A stack with a mirror is then rendered, and every image in every
release's values (the chart's defaults merged with ours), in the Triton Deployment and in the engine Job must name
the mirror.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import versions
from components.images import CHART_IMAGES, ChartImage, merge
from offline.fixtures import fixtures_root
from offline.harness import Recording, run_program
from tests._stack_repository import config_with_build_dir
from tests.paths import ROOT

MIRROR = "harbor.example.com/mirror"
SHARED_CHARTS = Path(fixtures_root()) / "charts"
PINS = [p for p in vars(versions).values() if isinstance(p, versions.ChartPin)]


def _chart_defaults(archive: Path) -> dict[str, Any]:
    """The chart's values.yaml with each subchart's own defaults below the subchart's name."""
    with tarfile.open(archive) as tar:
        files = {m.name: m for m in tar.getmembers() if m.name.endswith("/values.yaml")}
        root = min(files, key=lambda name: name.count("/"))
        values = yaml.safe_load(tar.extractfile(files[root]).read()) or {}  # type: ignore[union-attr]
        for name, member in files.items():
            parts = name.split("/")
            if len(parts) == 4 and parts[1] == "charts" and parts[2] != "crds":
                sub = yaml.safe_load(tar.extractfile(member).read()) or {}  # type: ignore[union-attr]
                values[parts[2]] = merge(sub, values.get(parts[2]) or {})
    return values


def _images(values: Any, path: str = "") -> list[ChartImage]:
    """Every image a values tree names: maps with a registry, or a repository that carries its registry, and
    full references under an `image` key."""
    found: list[ChartImage] = []
    if isinstance(values, dict):
        repository = values.get("repository")
        if isinstance(values.get("registry"), str) and values["registry"] and isinstance(repository, str):
            found.append(ChartImage(path, "registry", values["registry"]))
        elif isinstance(repository, str) and "." in repository.split("/", 1)[0]:
            found.append(ChartImage(path, "repository", repository))
        elif isinstance(values.get("image"), str) and "/" in values["image"] and "." in values["image"].split("/")[0]:
            found.append(ChartImage(path, "image", values["image"]))
        for key, value in values.items():
            found += _images(value, f"{path}.{key}" if path else key)
    return found


def _installed(recording: Recording, pin: versions.ChartPin) -> dict[str, Any]:
    """The values ``pin``'s chart runs with in ``recording``: its defaults with the platform's values over them."""
    values = next((r.inputs.get("values") or {} for r in recording.helm_releases() if _pin_of(r.inputs) == pin), {})
    return merge(_chart_defaults(SHARED_CHARTS / pin.archive), values)


def _pin_of(inputs: dict[str, Any]) -> versions.ChartPin:
    return next(p for p in PINS if p.chart == inputs["chart"] or str(inputs["chart"]).endswith(f"/{p.archive}"))


@pytest.mark.parametrize("pin", PINS, ids=lambda p: p.name)
def test_the_image_list_is_exactly_the_charts_images(pin: versions.ChartPin, prod: Recording) -> None:
    """Prod installs every chart that runs images; the list must name each of them, as prod sets them."""
    in_chart = {(i.path, i.key, i.upstream) for i in _images(_installed(prod, pin))}
    listed = {(i.path, i.key, i.upstream) for i in CHART_IMAGES[pin.name]}
    # Images the chart leaves unset (Envoy's proxy) are pinned in components/versions.py instead.
    unset = {(i.path, i.key, i.upstream) for i in CHART_IMAGES[pin.name] if i.key == "image"} - in_chart
    assert in_chart - listed == set(), "images of the chart that no mirror would serve"
    assert listed - in_chart - unset == set(), "listed images that the chart does not have"


@pytest.fixture(scope="module")
def mirrored(stack_repositories: dict[str, Path]) -> Recording:
    config = config_with_build_dir("prod", stack_repositories["prod"])
    config["inference-platform:sources"] = {"imageRegistry": MIRROR, "pythonIndex": "https://pypi.example.com/simple"}
    config["inference-platform:loadBalancer"] = {"enabled": True}
    # Without prod's own engine image: the engine Job then runs the TensorRT image, which must come through the mirror.
    repository = config["inference-platform:modelRepository"]
    config["inference-platform:modelRepository"] = {k: v for k, v in repository.items() if k != "engineImage"}
    return run_program("prod", config=config)


def test_every_chart_image_of_a_mirrored_stack_names_the_mirror(mirrored: Recording) -> None:
    outside = [
        f"{pin.name}: {i.path} = {i.upstream}"
        for pin in PINS
        for i in _images(_installed(mirrored, pin))
        if not i.upstream.startswith(f"{MIRROR}/")
    ]
    assert outside == []


def test_the_platforms_own_images_come_through_the_mirror(mirrored: Recording) -> None:
    triton = mirrored.one("kubernetes:apps/v1:Deployment", "triton-deployment")
    assert triton.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == f"{MIRROR}/{versions.TRITON_IMAGE}"
    jobs = [r for r in mirrored.kubernetes_objects() if r.kind == "Job"]
    assert jobs
    for job in jobs:
        (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{MIRROR}/{versions.TENSORRT_IMAGE}"
        assert "--index-url https://pypi.example.com/simple" in container["command"][2]


def test_an_engine_image_runs_the_build_without_installing_anything(stack_repositories: dict[str, Path]) -> None:
    config = config_with_build_dir("prod", stack_repositories["prod"])
    config["inference-platform:modelRepository"] = {
        **config["inference-platform:modelRepository"],
        "engineImage": "registry.example.com/engine-build:26.07",
    }
    recording = run_program("prod", config=config)
    (job,) = [r for r in recording.kubernetes_objects() if r.kind == "Job"]
    (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/engine-build:26.07"
    assert container["command"][:3] == ["python3", "-m", "model_pipeline"], "no pip install, no shell"


def test_the_engine_dockerfile_preinstalls_the_jobs_requirements_on_tritons_tensorrt() -> None:
    dockerfile = (ROOT / "model_pipeline" / "engine.Dockerfile").read_text()
    assert f"ARG TENSORRT_IMAGE={versions.TENSORRT_IMAGE}" in dockerfile
    assert "-r /tmp/requirements-engine.txt" in dockerfile
    assert "COPY model_pipeline/requirements-engine.txt" in dockerfile


def test_a_pypi_mirror_on_its_own_port_is_reachable_from_the_engine_job() -> None:
    from components.engine_build import egress_policy_spec

    spec = egress_policy_spec(None, {"app": "engine"}, "http://nexus.example.com:8081/repository/pypi/simple")
    assert spec["egress"][1]["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8081}]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"sources": {"imageRegistry": "https://harbor.example.com"}},
            "sources.imageRegistry ('https://harbor.example.com') must be a registry host and optional path",
        ),
        (
            {"sources": {"pythonIndex": "pypi.example.com/simple"}},
            "sources.pythonIndex ('pypi.example.com/simple') must be the http(s) URL of a PyPI simple index",
        ),
        (
            {"modelRepository": {"uri": "s3://m/x", "engineImage": "registry.example.com/engine-build"}},
            "modelRepository.engineImage ('registry.example.com/engine-build') must carry an explicit version tag",
        ),
    ],
)
def test_bad_sources_are_one_clear_error(values: dict[str, Any], problem: str) -> None:
    from components.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as error:
        parse_config("dev", {"modelRepository": {"uri": "s3://models/triton"}, **values})
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems
