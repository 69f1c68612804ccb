"""The program's keys with a syntax of their own, read into the settings by the pipeline's generic reader.

The generic reader (``model_pipeline/schema_reader.py``) reads every declared field and records each problem
with its full key; the parsers here handle tolerations, images, sources and the like, and ``models`` is read
with the pipeline's own schema (``model_pipeline/entry.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from components.settings import IMAGE, IMAGE_RULE, ScalingPolicy
from components.versions import TRITON_IMAGE
from model_pipeline.entry import ModelEntry, read_models
from model_pipeline.schema import DNS_LABEL
from model_pipeline.schema_reader import Section, read

# --------------------------------------------------------------------------------------------------------------
# Keys with a syntax of their own


def _kubernetes_version(s: Section, key: str, default: str) -> str:
    version = s.string(
        key,
        default,
        pattern=re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+$"),
        allowed="the control plane's version, e.g. 1.31.4",
    )
    return version.lstrip("v")


def _image(s: Section, key: str, default: str | None) -> str | None:
    image = s.string(key, default, pattern=IMAGE, allowed=IMAGE_RULE)
    match = IMAGE.match(image or "")
    if match and not match.group("tag") and "@sha256:" not in (image or ""):
        s.problem(key, image, "must carry an explicit version tag or digest")
    elif match and match.group("tag") == "latest":
        s.problem(key, image, f"must not use the 'latest' tag: pin a release such as {TRITON_IMAGE}")
    return image


# A label key as the API server validates a toleration's: an optional DNS-subdomain prefix and "/", then a name
# of at most 63 characters. A toleration's value is a label value: such a name, or empty.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME})?$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_OPERATOR = re.compile(r"^(Equal|Exists)?$")  # empty: Equal
_EFFECT = re.compile(r"^(NoSchedule|PreferNoSchedule|NoExecute)?$")  # empty: every effect


def _tolerations(s: Section, key: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
    """Tolerations checked as the API server checks them, each problem named by its full key."""
    if not s.has(key):
        s.raw_value(key)
        return default
    tolerations = []
    for index, item in enumerate(s.object_list(key)):
        t = Section(s.full(f"{key}[{index}]"), item, s.problems, s.context)
        if not isinstance(item, dict):
            continue  # reported by Section
        t.string("key", "", pattern=_LABEL_KEY, allowed="a label key such as nvidia.com/gpu")
        operator = t.string("operator", "", pattern=_OPERATOR, allowed="Equal or Exists") or "Equal"
        t.string("value", "", pattern=_LABEL_VALUE, allowed="a label value (63 characters at most)")
        effect = t.string("effect", "", pattern=_EFFECT, allowed="NoSchedule, PreferNoSchedule or NoExecute")
        seconds = t.integer("tolerationSeconds", None, low=0)
        t.finish()
        # The rules between keys, each only on values that were read as written (a bad one is reported already).
        if not item.get("key") and operator == "Equal" and item.get("operator") in (None, "", "Equal"):
            t.problem("key", item.get("key"), "is required with operator Equal (only Exists tolerates every key)")
        if operator == "Exists" and item.get("value"):
            t.problem("value", item["value"], "must be empty with operator Exists (Equal matches a value)")
        if seconds is not None and effect != "NoExecute" and item.get("effect") in (None, effect):
            t.problem("tolerationSeconds", seconds, f"only applies with effect NoExecute (here {effect or 'unset'})")
        tolerations.append(item if seconds is None else {**item, "tolerationSeconds": seconds})
    return tuple(tolerations)


def _namespaces(s: Section, key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """A list of namespace names, each problem named by its index."""
    value = s.raw_value(key)
    if value is None:
        return default
    if not isinstance(value, list):
        s.problem(key, value, "must be a list of namespace names ([] for none)")
        return default
    for index, name in enumerate(value):
        if not isinstance(name, str) or not DNS_LABEL.match(name):
            s.problem(f"{key}[{index}]", name, "must be a namespace name (a DNS label)")
    return tuple(dict.fromkeys(n for n in value if isinstance(n, str)))


def _status_codes(s: Section, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    codes = s.object_list(key) if s.has(key) else list(default)
    if not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        s.problem(key, codes, "must be a list of HTTP status codes (100-599)")
        return default
    return tuple(codes)


def _scaling_policies(s: Section, key: str, default: tuple[ScalingPolicy, ...]) -> tuple[ScalingPolicy, ...]:
    if not s.has(key):
        s.raw_value(key)
        return default
    policies = []
    for index, item in enumerate(s.object_list(key)):
        policy = read(ScalingPolicy, Section(s.full(f"{key}[{index}]"), item, s.problems, s.context))
        if policy.type and policy.value and policy.period_seconds:
            policies.append(policy)
    return tuple(policies)


def _models(s: Section, key: str, default: Any) -> tuple[ModelEntry, ...]:
    return read_models(s.raw_value(key), s.problems, s.context.root, key)


_CHARTS_ALLOWED = (
    "a folder holding the pinned chart archives (<chart>-<version>.tgz, relative to the project "
    "root) or the http(s):// URL of a Helm chart repository"
)
_CRDS_ALLOWED = (
    "a local file (relative to the project root) or an http(s):// URL of the Gateway API standard-install manifest"
)


def _url_problem(text: str) -> str | None:
    """Why ``text`` is not a usable http(s) URL, or None."""
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "has an invalid port"
    if parts.scheme not in ("http", "https"):
        return "must use http:// or https://"
    if not parts.hostname or re.search(r"\s", text):
        return "must name a host and contain no spaces"
    return None


def _local_source(s: Section, key: str, value: str, *, folder: bool, allowed: str) -> str | None:
    """A local source as an absolute path, or None (with a problem) when it is missing or of the wrong kind."""
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else s.context.root / path).resolve()
    if not (path.is_dir() if folder else path.is_file()):
        what = "an existing folder" if folder else "an existing file"
        s.problem(key, value, f"must be {allowed}: {path} is not {what}")
        return None
    return str(path)


def _source(
    s: Section, key: str, default: Any, *, folder: bool, allowed: str, url_problem: Callable[[str], Any]
) -> Any:
    value = s.string(key, None)
    if value is None:
        return default
    if not value.strip():
        s.problem(key, value, "must not be empty; leave it unset for the upstream source")
        return default
    if "://" not in value:
        return _local_source(s, key, value, folder=folder, allowed=allowed) or default
    why = url_problem(value)
    if why:
        s.problem(key, value, f"{why}: {allowed}")
        return default
    return value


def _chart_source(s: Section, key: str, default: str | None) -> str | None:
    def why(url: str) -> str | None:
        problem = _url_problem(url)
        if problem is None and url.rstrip("/").endswith("index.yaml"):
            return "must be the repository's URL, without /index.yaml"
        return problem

    return _source(s, key, default, folder=True, allowed=_CHARTS_ALLOWED, url_problem=why)


def _crd_source(s: Section, key: str, default: str) -> str:
    def why(url: str) -> str | None:
        return _url_problem(url) or (None if urlsplit(url).path.strip("/") else "must name the manifest's path")

    return _source(s, key, default, folder=False, allowed=_CRDS_ALLOWED, url_problem=why)


PARSERS: dict[str, Callable[[Section, str, Any], Any]] = {
    "kubernetes_version": _kubernetes_version,
    "image": _image,
    "tolerations": _tolerations,
    "namespaces": _namespaces,
    "status_codes": _status_codes,
    "scaling_policies": _scaling_policies,
    "models": _models,
    "chart_source": _chart_source,
    "crd_source": _crd_source,
}
