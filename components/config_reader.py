"""The generic reader: every declared field of a settings dataclass, read from one config object.

Getters record problems instead of raising, so every problem of a stack is reported at once; each names the
full key, the value as written and what is allowed. Keys nobody declared are reported with the closest match.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pulumi

from components.config_schema import MISSING, Setting, field_default, settings_of
from components.settings import IMAGE, IMAGE_RULE, ModelSettings, ScalingPolicy
from components.versions import TRITON_IMAGE
from model_pipeline import syntax
from model_pipeline.specs import DEFAULT_SPECS, SPECS_BY_ARCHITECTURE
from model_pipeline.stack import DEFAULT_STACK_MODELS

T = TypeVar("T")
Rules = Mapping[type, Callable[[Any, "Section"], Any]]


@dataclass(frozen=True)
class ReadContext:
    """What reading needs beyond the values: the secrets, the folder relative paths start at, the rules."""

    secrets: Mapping[str, pulumi.Output[str] | None] = field(default_factory=dict)
    root: Path = Path(".")
    rules: Rules = field(default_factory=dict)


class Section:
    """One config object (``triton``, ``gpu.hami``); getters validate and remember which keys were used."""

    def __init__(self, key: str, raw: Any, problems: list[str], context: ReadContext | None = None) -> None:
        self.key, self.problems, self.context = key, problems, context or ReadContext()
        self._used: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem("", raw, "must be an object")
            raw = {}
        self.raw: dict[str, Any] = raw

    def full(self, name: str) -> str:
        return f"{self.key}.{name}" if name else self.key

    def problem(self, name: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{self.full(name)} ({value!r}) {allowed}")

    def _get(self, name: str) -> Any:
        self._used.add(name)
        return self.raw.get(name)

    def raw_value(self, name: str) -> Any:
        """The value as written, unvalidated (for keys checked by hand)."""
        return self._get(name)

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def string(
        self,
        name: str,
        default: T,
        *,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        allowed: str = "",
    ) -> str | T:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(name, value, "must be a string" + (f": one of {', '.join(choices)}" if choices else ""))
        elif choices and value not in choices:
            self.problem(name, value, f"must be one of {', '.join(choices)}")
        elif pattern is not None and not pattern.match(value):
            self.problem(name, value, f"must be {allowed or 'of the form ' + pattern.pattern}")
        else:
            return value
        return default

    def integer(self, name: str, default: T, *, low: float | None = None, high: float | None = None) -> int | T:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, value, "must be an integer")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(name, value, f"must be {bounds}")
            return default
        return value

    def number(self, name: str, default: T, *, low: float, high: float) -> float | T:
        """A decimal number in [low, high] (e.g. milliseconds); integers are accepted as numbers."""
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]*)?", value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(name, value, "must be a number")
            return default
        if not low <= value <= high:
            self.problem(name, value, f"must be between {low:g} and {high:g}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.problem(name, value, "must be true or false")
            return default
        return value

    def quantity(self, name: str, default: T) -> str | T:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not syntax.QUANTITY.match(value):
            self.problem(name, value, f"must be {syntax.QUANTITY_RULE}")
            return default
        return value

    def str_map(self, name: str, default: Mapping[str, str]) -> dict[str, str]:
        value = self._get(name)
        if value is None:
            return dict(default)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problem(name, value, "must be an object of string values")
            return dict(default)
        return dict(value)

    def str_list(self, name: str, default: tuple[str, ...] = (), choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(name, value, "must be a list of non-empty strings")
            return default
        if choices and any(v not in choices for v in value):
            self.problem(name, value, f"may only contain {', '.join(choices)}")
            return default
        return tuple(value)

    def object_list(self, name: str) -> list[Any]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(name, value, "must be a list")
            return []
        return value

    def section(self, name: str) -> Section:
        return Section(self.full(name), self._get(name), self.problems, self.context)

    def finish(self) -> None:
        """Report keys nobody asked for: usually typos, so suggest the closest allowed key."""
        for unknown in sorted(set(self.raw) - self._used):
            close = difflib.get_close_matches(unknown, sorted(self._used), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(self._used))}"
            self.problems.append(f"{self.full(unknown)} is not a known key; {hint}")


# --------------------------------------------------------------------------------------------------------------
# Reading a settings dataclass


def read(cls: type[T], s: Section, *, base: Any = None, defaults: Mapping[str, Any] | None = None) -> T:
    """``cls`` from section ``s``: each declared field by its kind, defaults from ``base`` (an instance) or the
    field, overridden by ``defaults``; then the section's own rule (``context.rules[cls]``), then unknown keys."""
    nested: dict[str, Section] = {}
    values: dict[str, Any] = {}
    for f, setting in settings_of(cls):
        default = (defaults or {}).get(f.name, getattr(base, f.name) if base is not None else field_default(f))
        *path, key = setting.key.split(".")
        section = s
        for part in path:
            section = nested.setdefault(part, section.section(part))
        values[f.name] = _value(section, key, setting, default)
        if setting.required is not None and not section.has(key):
            section.problem(key, None, "is required" + (f": {setting.required}" if setting.required else ""))
    settings = cls(**{k: v for k, v in values.items() if v is not MISSING})
    rule = s.context.rules.get(cls)
    if rule is not None:
        settings = rule(settings, s)
    for section in nested.values():
        section.finish()
    s.finish()
    return settings


def _value(s: Section, key: str, setting: Setting, default: Any) -> Any:
    kind = setting.kind
    if kind == "string":
        return s.string(key, default, choices=setting.choices, pattern=setting.pattern, allowed=setting.allowed)
    if kind == "integer":
        return s.integer(key, default, low=setting.low, high=setting.high)
    if kind == "number":
        assert setting.low is not None and setting.high is not None
        return s.number(key, default, low=setting.low, high=setting.high)
    if kind == "boolean":
        return s.boolean(key, default)
    if kind == "quantity":
        return s.quantity(key, default)
    if kind == "map":
        return s.str_map(key, default)
    if kind == "list":
        return s.str_list(key, default, setting.choices)
    if kind == "secret":
        return s.context.secrets.get(key)
    if kind == "section":
        return read(type(default), s.section(key), base=default)
    assert kind == "custom" and setting.parse is not None, setting
    return PARSERS[setting.parse](s, key, default)


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


_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def _tolerations(s: Section, key: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
    raw = s.object_list(key)
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not set(item) <= _TOLERATION_KEYS:
            s.problem(f"{key}[{index}]", item, f"must be an object with keys among {sorted(_TOLERATION_KEYS)}")
            return default
        if item.get("operator", "Equal") not in ("Equal", "Exists"):
            s.problem(f"{key}[{index}].operator", item["operator"], "must be Equal or Exists")
            return default
    return tuple(raw) if s.has(key) else default


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


def _models(s: Section, key: str, default: Any) -> tuple[ModelSettings, ...]:
    raw = s.raw_value(key)
    if raw is None:
        raw = [dict(m) for m in DEFAULT_STACK_MODELS]
    if not isinstance(raw, list) or not raw:
        s.problems.append(f"models ({raw!r}) must be a non-empty list of models")
        return ()
    models = [_model(Section(f"models[{i}]", item, s.problems, s.context)) for i, item in enumerate(raw)]
    return tuple(m for m in models if m is not None)


def _model(s: Section) -> ModelSettings | None:
    """One model: its architecture is named or follows from its name, and its spec gives the defaults."""
    name = s.raw.get("name")
    named = DEFAULT_SPECS.get(name) if isinstance(name, str) else None
    architecture = s.raw.get("architecture") or (named.architecture if named else "")
    spec = SPECS_BY_ARCHITECTURE.get(architecture) if isinstance(architecture, str) else None
    defaults: dict[str, Any] = {"architecture": named.architecture if named else ""}
    if spec is not None:
        low, opt, high = spec.profile.min, spec.profile.opt, spec.profile.max
        defaults.update(batch_min=low, batch_opt=opt, batch_max=high, max_queue_delay_us=spec.max_queue_delay_us)
    settings = read(ModelSettings, s, defaults=defaults)
    return settings if settings.architecture else None


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
    "status_codes": _status_codes,
    "scaling_policies": _scaling_policies,
    "models": _models,
    "chart_source": _chart_source,
    "crd_source": _crd_source,
}
