"""Chart and manifest sources: upstream by default, a local folder of archives or a chart repository when set."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from components import versions
from components.config import ConfigError, parse_config
from components.settings import SourceSettings
from offline.fixtures import fixtures
from offline.harness import PROJECT, Recording, run_program
from tests._stack_repository import config_with_build_dir

REPO = {"modelRepository": {"uri": "s3://models/triton"}}
# Everything on: each of the six charts is installed.
ALL_CHARTS = {
    "gpu": {"sharing": "hami"},
    "triton": {"cpuRequest": "4", "memoryRequest": "8Gi"},  # HAMi wants Guaranteed QoS
    "autoscaling": {"enabled": True, "maxReplicas": 2},
    "loadBalancer": {"enabled": True},
}
PINS = [p for p in vars(versions).values() if isinstance(p, versions.ChartPin)]
MIRROR = "https://charts.mirror.example.internal/artifactory/api/helm/helm-remote"
MANIFEST = "manifests/gateway-api-v1.6.1-standard-install.yaml"
CHART_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")


def _problems(values: dict[str, Any], root: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config("test", {**REPO, **values}, root=root) if root else parse_config("test", {**REPO, **values})
    return raised.value.problems


def _fixture(relative: str) -> Path:
    """A file of the fixtures root; skips where the lock says it has no HTTP source and no local copy exists."""
    found = fixtures()
    if relative in found.missing:
        pytest.skip(f"{relative} is not fetchable ({found.missing[relative]}) and no ../shared is here")
    return found.root / relative


def _charts(stack: Recording) -> list[Any]:
    return [r for t in CHART_TYPES for r in stack.of_type(t)]


def _pin(release: Any) -> versions.ChartPin:
    name = str(release.inputs["chart"]).rsplit("/", 1)[-1].removesuffix(f"-{release.inputs['version']}.tgz")
    return next(p for p in PINS if p.name == name)


# --- one place turns a pin into Release arguments ----------------------------------------------------------------


@pytest.mark.parametrize("pin", PINS, ids=lambda p: p.name)
def test_by_default_each_chart_comes_from_its_upstream(pin: versions.ChartPin) -> None:
    args = pin.release_args(None)
    assert (args["chart"], args["version"]) == (pin.chart, pin.version)
    if pin.repository is None:  # OCI: the reference is the whole source
        assert pin.chart.startswith("oci://") and "repository_opts" not in args
    else:
        assert args["repository_opts"] == {"repo": pin.repository}


@pytest.mark.parametrize("pin", PINS, ids=lambda p: p.name)
def test_a_folder_gives_the_absolute_path_of_the_pinned_archive(pin: versions.ChartPin) -> None:
    args = pin.release_args("/srv/charts")
    assert args == {"chart": f"/srv/charts/{pin.name}-{pin.version}.tgz", "version": pin.version}


@pytest.mark.parametrize("pin", PINS, ids=lambda p: p.name)
def test_a_repository_url_gives_the_bare_chart_name_from_that_repository(pin: versions.ChartPin) -> None:
    args = pin.release_args(MIRROR)
    assert args == {"chart": pin.name, "version": pin.version, "repository_opts": {"repo": MIRROR}}


# --- config ------------------------------------------------------------------------------------------------------


def test_unset_sources_are_the_upstream_ones_in_every_component() -> None:
    cfg = parse_config("test", {**REPO, **ALL_CHARTS})
    assert cfg.sources == SourceSettings()
    assert cfg.sources.charts is None
    assert cfg.sources.gateway_api_crds == versions.GATEWAY_API_STANDARD_CRDS
    assert {cfg.gpu.sources, cfg.monitoring.sources, cfg.autoscaling.sources, cfg.load_balancer.sources} == {
        SourceSettings()
    }


def test_the_shared_chart_folder_holds_every_chart_and_every_component_gets_it() -> None:
    charts = _fixture("charts/gateway-helm-v1.9.0.tgz").parent
    _fixture("charts/gateway-crds-helm-v1.9.0.tgz")
    manifest = _fixture(MANIFEST)
    cfg = parse_config(
        "test", {**REPO, **ALL_CHARTS, "sources": {"charts": str(charts), "gatewayApiCrds": str(manifest)}}
    )
    assert len(cfg.charts) == 6
    assert cfg.sources == SourceSettings(charts=str(charts.resolve()), gateway_api_crds=str(manifest.resolve()))
    assert cfg.sources.local_charts
    for settings in (cfg.gpu, cfg.monitoring, cfg.autoscaling, cfg.load_balancer):
        assert settings.sources == cfg.sources
    for pin in cfg.charts:
        assert Path(cfg.sources.release_args(pin)["chart"]).is_file()


def test_relative_paths_are_taken_from_the_project_root(tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    for pin in (versions.KUBE_PROMETHEUS_STACK, versions.GPU_OPERATOR):
        (tmp_path / "mirror" / pin.archive).write_bytes(b"archive")
    (tmp_path / "crds.yaml").write_text("---\n")
    cfg = parse_config("test", {**REPO, "sources": {"charts": "mirror", "gatewayApiCrds": "crds.yaml"}}, root=tmp_path)
    assert cfg.sources.charts == str(tmp_path.resolve() / "mirror")
    assert cfg.sources.gateway_api_crds == str(tmp_path.resolve() / "crds.yaml")


def test_a_repository_url_is_kept_as_it_is() -> None:
    crds = "https://mirror.example.internal/gateway-api/v1.6.1/standard-install.yaml"
    cfg = parse_config("test", {**REPO, **ALL_CHARTS, "sources": {"charts": MIRROR, "gatewayApiCrds": crds}})
    assert cfg.sources == SourceSettings(charts=MIRROR, gateway_api_crds=crds)
    assert not cfg.sources.local_charts


def test_a_folder_missing_an_archive_the_stack_installs_names_the_key_and_the_file(tmp_path: Path) -> None:
    shutil.copy(_fixture(f"charts/{versions.KUBE_PROMETHEUS_STACK.archive}"), tmp_path)
    shutil.copy(_fixture(f"charts/{versions.GPU_OPERATOR.archive}"), tmp_path)
    # The two the stack always installs are there: enough without HAMi, autoscaling or the gateway.
    assert parse_config("test", {**REPO, "sources": {"charts": str(tmp_path)}}).sources.local_charts
    problems = _problems({**ALL_CHARTS, "sources": {"charts": str(tmp_path)}})
    assert len(problems) == 4
    missing = (versions.HAMI, versions.PROMETHEUS_ADAPTER, versions.ENVOY_GATEWAY_CRDS, versions.ENVOY_GATEWAY)
    for problem, pin in zip(problems, missing, strict=True):
        assert problem.startswith(f"sources.charts ({str(tmp_path)!r}) must hold {pin.archive}")
        assert str(tmp_path / pin.archive) in problem


def test_a_missing_folder_or_manifest_is_a_config_problem(tmp_path: Path) -> None:
    problems = _problems({"sources": {"charts": "no-such-charts", "gatewayApiCrds": "no/such.yaml"}}, root=tmp_path)
    assert problems == [
        "sources.charts ('no-such-charts') must be a folder holding the pinned chart archives (<chart>-<version>.tgz, "
        "relative to the project root) or the http(s):// URL of a Helm chart repository: "
        f"{tmp_path.resolve() / 'no-such-charts'} is not an existing folder",
        "sources.gatewayApiCrds ('no/such.yaml') must be a local file (relative to the project root) or an http(s):// "
        f"URL of the Gateway API standard-install manifest: {tmp_path.resolve() / 'no/such.yaml'} is not an "
        "existing file",
    ]


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("charts", "ftp://mirror.example.internal/charts", "must use http:// or https://"),
        ("charts", "oci://registry.example.internal/charts", "must use http:// or https://"),
        ("charts", "https://", "must name a host"),
        ("charts", "https://mirror.example.internal:99999/charts", "has an invalid port"),
        ("charts", "https://mirror.example.internal/charts/index.yaml", "without /index.yaml"),
        ("charts", "", "must not be empty"),
        ("charts", 7, "must be a string"),
        ("gatewayApiCrds", "htps://github.com/x.yaml", "must use http:// or https://"),
        ("gatewayApiCrds", "https://mirror.example.internal", "must name the manifest's path"),
    ],
)
def test_a_bad_url_is_a_config_problem_naming_the_key(key: str, value: Any, fragment: str) -> None:
    problems = _problems({"sources": {key: value}})
    assert len(problems) == 1
    assert problems[0].startswith(f"sources.{key} ({value!r}) ")
    assert fragment in problems[0]


def test_an_unknown_sources_key_suggests_the_known_one() -> None:
    assert _problems({"sources": {"chart": MIRROR}}) == ["sources.chart is not a known key; did you mean 'charts'?"]
    assert _problems({"source": {}}) == [f"{PROJECT}:source is not a known configuration key; did you mean 'sources'?"]


# --- the whole stack -----------------------------------------------------------------------------------------------


def test_every_release_of_both_stacks_comes_from_its_upstream_by_default(stack: Recording) -> None:
    releases = _charts(stack)
    assert releases
    for release in releases:
        pin = _pin(release)
        expected = pin.release_args(None)
        assert (release.inputs["chart"], release.inputs["version"]) == (expected["chart"], expected["version"])
        assert release.inputs.get("repositoryOpts") == expected.get("repository_opts"), release.name
    assert stack.one("kubernetes:yaml/v2:ConfigFile").inputs["file"] == versions.GATEWAY_API_STANDARD_CRDS


@pytest.fixture(scope="module")
def local_prod(stack_repositories: dict[str, Path]) -> tuple[Recording, Path, Path]:
    charts = _fixture("charts/gateway-helm-v1.9.0.tgz").parent
    _fixture("charts/gateway-crds-helm-v1.9.0.tgz")
    manifest = _fixture(MANIFEST)
    config = {
        **config_with_build_dir("prod", stack_repositories["prod"]),
        f"{PROJECT}:sources": {"charts": str(charts), "gatewayApiCrds": str(manifest)},
    }
    return run_program("prod", config=config), charts.resolve(), manifest.resolve()


def test_with_a_chart_folder_every_chart_is_its_local_archive(local_prod: tuple[Recording, Path, Path]) -> None:
    stack, charts, manifest = local_prod
    releases = _charts(stack)
    assert len(releases) == 6
    for release in releases:
        pin = _pin(release)
        assert release.inputs["chart"] == str(charts / pin.archive)
        assert Path(release.inputs["chart"]).is_file()
        assert release.inputs["version"] == pin.version
        assert "repositoryOpts" not in release.inputs, release.name
    assert stack.one("kubernetes:yaml/v2:ConfigFile").inputs["file"] == str(manifest)


def test_with_a_repository_url_every_chart_is_taken_by_name(stack_repositories: dict[str, Path]) -> None:
    config = {**config_with_build_dir("prod", stack_repositories["prod"]), f"{PROJECT}:sources": {"charts": MIRROR}}
    stack = run_program("prod", config=config)
    releases = _charts(stack)
    assert {r.inputs["chart"] for r in releases} == {p.name for p in PINS}
    for release in releases:
        assert release.inputs["repositoryOpts"] == {"repo": MIRROR}, release.name
        assert release.inputs["version"] == _pin(release).version
    assert stack.one("kubernetes:yaml/v2:ConfigFile").inputs["file"] == versions.GATEWAY_API_STANDARD_CRDS
