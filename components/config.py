"""Stack configuration, read once: ``load_platform_config()`` is the only place that touches ``pulumi.Config``.

It reports every problem in one :class:`ConfigError` (each naming the full key, the bad value and what is
allowed) before any resource is declared. The keys are declared on the settings types (components/settings.py),
read by components/config_reader.py and checked across keys by components/config_checks.py; components receive
the frozen settings and never read config themselves.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi

from components import images
from components.config_checks import SECTION_RULES, check_platform
from components.config_reader import PARSERS
from components.errors import PlatformError
from components.settings import NAMESPACE, ModelRepositorySettings, PlatformConfig, TritonSettings
from model_pipeline.schema import all_settings, field_default, settings_of
from model_pipeline.schema_reader import ReadContext, Section, read
from model_pipeline.stack import default_build_dir

ROOT = Path(__file__).resolve().parents[1]  # the project root (Pulumi.yaml): relative config paths start here
SECRET_KEYS = tuple(s.key for s in all_settings(PlatformConfig) if s.secret)
_TOP_LEVEL = {setting.key: (f, setting) for f, setting in settings_of(PlatformConfig)}


class ConfigError(PlatformError, ValueError):
    """The stack configuration is invalid; ``problems`` lists every issue found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


def parse_config(
    stack: str,
    values: Mapping[str, Any],
    secrets: Mapping[str, pulumi.Output[str] | None] | None = None,
    *,
    root: Path = ROOT,
) -> PlatformConfig:
    """Validate raw config values (top-level key -> decoded value) into :class:`PlatformConfig`.

    Relative paths in the config are taken from ``root``. Raises :class:`ConfigError` listing every problem found.
    """
    problems = _top_level_problems(values)
    context = ReadContext(secrets=secrets or {}, root=root, rules=SECTION_RULES, parsers=PARSERS)
    top = Section("", dict(values), problems, context)
    per_stack = {ModelRepositorySettings: {"build_dir": default_build_dir(stack)}}
    parsed: dict[str, Any] = {}
    for key, (f, setting) in _TOP_LEVEL.items():
        default = field_default(f)
        if setting.kind == "section":
            section = Section(key, values.get(key), problems, context)
            parsed[f.name] = read(type(default), section, base=default, defaults=per_stack.get(type(default)))
        else:
            assert setting.parse is not None
            parsed[f.name] = PARSERS[setting.parse](top, key, default)
    cfg = PlatformConfig(stack=stack, **parsed)
    sources = values.get("sources")
    check_platform(cfg, sources.get("charts") if isinstance(sources, dict) else None, problems)
    if problems:
        raise ConfigError(problems)
    return _with_sources(cfg)


def _top_level_problems(values: Mapping[str, Any]) -> list[str]:
    """Unknown top-level keys (with the closest known one), and secrets written in plain text."""
    problems: list[str] = []
    known = [*_TOP_LEVEL, *SECRET_KEYS]
    for key in sorted(set(values) - set(known)):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(f"{NAMESPACE}:{key} is not a known configuration key{hint}")
    for key in SECRET_KEYS:
        if key in values:
            problems.append(f"{key} must be set as a secret: pulumi config set --secret {key} <value>")
    return problems


def _with_sources(cfg: PlatformConfig) -> PlatformConfig:
    """Every component that installs a chart or runs an image gets the stack's sources in its settings; the
    default Triton image comes through the image mirror (an image the stack names itself is taken as it is)."""
    triton_image = cfg.triton.image
    if triton_image == TritonSettings.image:
        triton_image = images.mirrored(triton_image, cfg.sources.image_registry)
    return dataclasses.replace(
        cfg,
        triton=dataclasses.replace(cfg.triton, image=triton_image),
        model_repository=dataclasses.replace(cfg.model_repository, sources=cfg.sources),
        gpu=dataclasses.replace(cfg.gpu, sources=cfg.sources),
        monitoring=dataclasses.replace(cfg.monitoring, sources=cfg.sources),
        autoscaling=dataclasses.replace(cfg.autoscaling, sources=cfg.sources),
        load_balancer=dataclasses.replace(cfg.load_balancer, sources=cfg.sources),
    )


def load_platform_config() -> PlatformConfig:
    """Read this stack's configuration once from the Pulumi runtime and validate it."""
    import json

    from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

    prefix = f"{NAMESPACE}:"
    raw = {**get_config_env(), **CONFIG.get()}
    config = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    for full_key in raw:
        key = full_key.removeprefix(prefix)
        if not full_key.startswith(prefix) or (key in SECRET_KEYS and is_config_secret(full_key)):
            continue
        text = config.get(key)
        try:
            values[key] = json.loads(text) if text is not None else None
        except json.JSONDecodeError:
            values[key] = text
    secrets = {key: config.get_secret(key) for key in SECRET_KEYS}
    return parse_config(pulumi.get_stack(), values, secrets)
