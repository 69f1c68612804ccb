"""Pulumi.yaml's config block is what the setting declarations say, in the shape the real CLI accepts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from components.config import SECRET_KEYS, parse_config
from components.settings import PlatformConfig
from model_pipeline.schema import field_default, settings_of
from offline import project_file

REPOSITORY = {"uri": "s3://models-bucket/serving"}


def test_pulumi_yaml_config_block_is_written_from_the_declarations():
    text = project_file.PROJECT_FILE.read_text()
    assert project_file.render(text) == text, "Pulumi.yaml is stale: run `python -m offline.project_file`"


def test_every_object_key_has_an_empty_default_and_models_has_items():
    config = yaml.safe_load(project_file.PROJECT_FILE.read_text())["config"]
    for key, entry in config.items():
        if entry["type"] == "object":
            assert entry["default"] == {}, key  # the CLI otherwise reports the key missing on every stack
        else:
            assert entry == {**entry, "type": "array", "items": {"type": "object"}}, key
    assert not set(config) & set(SECRET_KEYS)  # the CLI refuses a plaintext default for a secret


def _declared(cls: type, base: Any) -> list[tuple[str, Any]]:
    """(dotted key, default) for every declared non-secret leaf of ``cls``."""
    keys = []
    for f, setting in settings_of(cls):
        default = getattr(base, f.name) if base is not None else field_default(f)
        if setting.secret:
            continue
        if setting.kind == "section":
            keys += [(f"{setting.key}.{k}", v) for k, v in _declared(type(default), default)]
        else:
            keys.append((setting.key, default))
    return keys


def test_every_declared_key_is_documented_under_its_object():
    config = yaml.safe_load(project_file.config_block())["config"]
    for f, setting in settings_of(PlatformConfig):
        if setting.kind != "section":
            continue
        description = config[setting.key]["description"]
        for key, _ in _declared(type(field_default(f)), field_default(f)):
            *objects, leaf = key.split(".")
            assert f"{leaf} (" in description, f"{setting.key}.{key}"
            assert all(f"{name} {{" in description for name in objects), f"{setting.key}.{key}"


def _as_config(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_config(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {s.key: _as_config(getattr(value, f.name)) for f, s in settings_of(type(value))}
    if isinstance(value, dict):
        return dict(value)
    return value


def _nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in pairs:
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        if value is not None:
            node[leaf] = _as_config(value)
    return tree


@pytest.mark.parametrize("section", ["kubernetes", "gpu", "triton", "monitoring", "autoscaling", "loadBalancer"])
def test_each_documented_default_written_out_gives_the_same_settings(section):
    """Every documented key, written out with its documented default, is accepted where the docs put it (nested
    objects and dotted keys included) and changes nothing."""
    f, _ = next((f, s) for f, s in settings_of(PlatformConfig) if s.key == section)
    written = _nest(_declared(type(field_default(f)), field_default(f)))
    implicit = parse_config("dev", {"modelRepository": REPOSITORY})
    explicit = parse_config("dev", {"modelRepository": REPOSITORY, section: written})
    assert getattr(explicit, f.name) == getattr(implicit, f.name)
