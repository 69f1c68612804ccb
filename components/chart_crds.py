"""The CRDs a chart ships in its crds/ folders, owned by Pulumi instead of Helm.

Helm installs a chart's crds/ once and never upgrades or deletes them ("CRDs are never deleted"): a pin that
moves keeps the old schemas, and `pulumi destroy` left 18 CRDs behind. The releases skip them (``skip_crds``) and
Pulumi declares each one from the pinned archive: they move with the pin, are applied server-side before the
release that needs them, and go on destroy after it.

The archive is the one the release installs: from the stack's chart folder, or downloaded once from the chart
repository into ``$XDG_CACHE_HOME/inference-platform/charts`` (``INFERENCE_PLATFORM_CHART_CACHE`` overrides it) and
checked against the digest in the repository's index.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import versions
from components.errors import PlatformError


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader reads a bare `=` (an enum value in the Prometheus CRDs) as the YAML 1.1 `value` tag,
    which it cannot construct; Kubernetes reads it as the string "="."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


class ChartArchiveError(PlatformError, RuntimeError):
    """The pinned chart archive could not be found or fetched."""


def chart_cache() -> Path:
    override = os.environ.get("INFERENCE_PLATFORM_CHART_CACHE")
    if override:
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inference-platform" / "charts"


def _fetch(pin: versions.ChartPin, repository: str) -> Path:
    target = chart_cache() / pin.archive
    if target.is_file():
        return target
    index_url = f"{repository.rstrip('/')}/index.yaml"
    try:
        with urllib.request.urlopen(index_url, timeout=60) as response:
            index = yaml.safe_load(response.read())
        entry = next(
            e
            for e in index["entries"][pin.name]
            if str(e["version"]) == pin.version.lstrip("v") or str(e["version"]) == pin.version
        )
        with urllib.request.urlopen(urljoin(f"{repository.rstrip('/')}/", entry["urls"][0]), timeout=300) as response:
            data = response.read()
    except (OSError, KeyError, StopIteration, yaml.YAMLError) as exc:
        raise ChartArchiveError(
            f"chart {pin.name} {pin.version}: cannot fetch it from {repository} ({exc}); set "
            "sources.charts to a folder holding its archive"
        ) from None
    if hashlib.sha256(data).hexdigest() != entry.get("digest"):
        raise ChartArchiveError(f"chart {pin.name} {pin.version} from {repository} does not match its index digest")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def chart_archive(pin: versions.ChartPin, charts: str | None) -> Path:
    """The archive of ``pin`` from the stack's chart source (a folder, a repository URL, or the pin's upstream)."""
    if charts is not None and not versions.is_http_url(charts):
        return Path(charts) / pin.archive
    repository = charts or pin.repository
    if repository is None:
        raise ChartArchiveError(f"chart {pin.name} is an OCI chart: its CRDs cannot be read from a repository index")
    return _fetch(pin, repository)


def _is_crd_file(name: str) -> bool:
    """``<chart>/crds/...yaml`` or ``<chart>/charts/<subchart>/crds/...yaml``, never a template."""
    parts = PurePosixPath(name).parts
    if not name.endswith((".yaml", ".yml")) or "templates" in parts:
        return False
    return (len(parts) > 2 and parts[1] == "crds") or (len(parts) > 4 and parts[1] == "charts" and parts[3] == "crds")


@functools.lru_cache(maxsize=8)
def crd_documents(archive: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the chart's (and its subcharts') crds/ folders, in archive order."""
    documents: list[dict[str, Any]] = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and _is_crd_file(member.name):
                stream = tar.extractfile(member)
                assert stream is not None
                documents += [
                    d
                    for d in yaml.load_all(stream.read(), Loader=_CrdLoader)
                    if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
                ]
    return documents


def chart_crds(
    name: str, pin: versions.ChartPin, charts: str | None, opts: pulumi.ResourceOptions
) -> k8s.yaml.v2.ConfigGroup:
    """The chart's CRDs as Pulumi resources (server-side applied), to be installed before its release."""
    return k8s.yaml.v2.ConfigGroup(name, objs=crd_documents(chart_archive(pin, charts)), opts=opts)
