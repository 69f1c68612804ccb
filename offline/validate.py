"""Validators that check what the program declares against upstream sources, not against our own beliefs.

- Kubernetes objects: the upstream OpenAPI schemas shipped by ``kubernetes-validate``, strictly (unknown fields fail).
- Custom resources: the ``openAPIV3Schema`` of the real CRD (``crds/`` of the fixtures root), with unknown fields
  rejected (the API server would silently prune them, which hides typos).
- Helm values: every key we set must exist in the chart's default ``values.yaml`` (``helm-values/`` of the fixtures
  root).

The fixtures root is :func:`offline.fixtures.fixtures_root`: ``$SHARED_DIR``, ``../shared`` or a verified download.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from components.images import merge as deep_merge  # Helm's values merge, one definition
from offline.fixtures import fixtures_root


def kubernetes_errors(obj: Mapping[str, Any], version: str) -> list[str]:
    """Problems with a built-in Kubernetes object at a Kubernetes version ("1.31.0"); empty when valid."""
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path) or "<root>"
        return [f"{obj.get('kind')} {_name(obj)}: {where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{obj.get('kind')} {_name(obj)}: {obj.get('apiVersion')} is not served by Kubernetes {version}"]
    return []


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "<autonamed>"))


def _crd_documents(crd_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                yield doc


@functools.cache
def _crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD in the folder."""
    schemas = {}
    for crd in _crd_documents(crd_dir):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields wherever the CRD lists its properties and does not ask to keep unknown ones."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        if schema.get("nullable"):
            schema.pop("type", None)  # OpenAPI's nullable: accept null as well as the declared type
        for value in schema.values():
            if isinstance(value, dict):
                _strict(value)
            elif isinstance(value, list):
                for item in value:
                    _strict(item)
    return schema


def crds_dir() -> Path:
    """The upstream CRDs every custom resource is checked against."""
    return fixtures_root() / "crds"


def helm_values_dir() -> Path:
    """The pinned charts' default values (``<chart>-<version>.values.yaml``)."""
    return fixtures_root() / "helm-values"


def crd_groups(crd_dir: Path | None = None) -> set[str]:
    """API groups served by the CRDs in a folder (default :func:`crds_dir`): objects in these groups are custom
    resources."""
    crd_dir = crd_dir or crds_dir()
    return {api_version.split("/")[0] for api_version, _ in _crd_schemas(crd_dir.resolve())}


def custom_resource_errors(obj: Mapping[str, Any], crd_dir: Path | None = None) -> list[str]:
    """Problems with a custom resource against its CRD (in ``crd_dir``, default :func:`crds_dir`); a resource with no
    known CRD is itself a problem."""
    crd_dir = crd_dir or crds_dir()
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    schema = _crd_schemas(crd_dir.resolve()).get(key)
    if schema is None:
        return [f"{key[1]} {_name(obj)}: no CRD in {crd_dir} serves {key[0]}"]
    validator = jsonschema.Draft7Validator(schema)
    body = {k: v for k, v in obj.items() if k != "metadata"}  # CRD schemas leave metadata to the API server
    return [
        f"{key[1]} {_name(obj)}: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    ]


# Keys a chart accepts but only documents in comments of its values.yaml; each needs its reason.
UNLISTED_VALUES: dict[str, dict[str, str]] = {
    "hami": {
        "devicePlugin.nvidiaNodeSelector": "a node selector (a map of labels); its default is {gpu: on}",
    },
    "kube-prometheus-stack": {
        "grafana.adminPassword": "commented out in kube-prometheus-stack's values.yaml; read by the grafana chart",
        "grafana.persistence.storageClassName": "commented out in the grafana chart's values.yaml; read by its PVC",
    },
}


def unknown_values_keys(
    values: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    allowed: Mapping[str, str] | None = None,
    subcharts: Mapping[str, Mapping[str, Any]] | None = None,
    _path: str = "",
) -> list[str]:
    """Helm values we set whose key the chart does not have.

    A default that is an empty map (``nodeSelector: {}``) is open: any key below it is accepted. ``allowed``
    names further dotted paths the chart accepts but does not list (commented out in values.yaml), each with the
    reason; ``subcharts`` maps a top-level key to that subchart's own default values.
    """
    allowed = allowed or {}
    subcharts = subcharts or {}
    problems = []
    for key, value in values.items():
        path = f"{_path}.{key}" if _path else key
        if path in allowed:
            continue
        if not _path and key in subcharts:
            if isinstance(value, Mapping):
                merged = deep_merge(subcharts[key], defaults.get(key) or {})
                problems += unknown_values_keys(value, merged, allowed=allowed, _path=path)
            continue
        if key not in defaults:
            problems.append(f"{path}: not a key of the chart's values")
            continue
        default = defaults[key]
        if isinstance(default, Mapping) and default:
            if not isinstance(value, Mapping):
                problems.append(f"{path}: the chart expects a map here, got {type(value).__name__}")
            else:
                problems += unknown_values_keys(value, default, allowed=allowed, _path=path)
    return problems


def load_values(path: Path) -> dict[str, Any]:
    """A chart's default values.yaml."""
    return yaml.safe_load(path.read_text()) or {}


def dynamic_resource_errors(name: str, provider: str | None, root: Path) -> list[str]:
    """Problems with a dynamic resource's provider (``module.Class``, as the harness reads it from the pickle).

    Pulumi runs dynamic providers in a process of their own (``pulumi-resource-pulumi-python``, in the project
    directory with its virtualenv) that unpickles them with dill: the provider must be pickled by reference to a
    ``pulumi.dynamic.ResourceProvider`` class in a module of the project (``root``), never by value (a class from
    ``__main__`` or a closure drags the program's objects, Outputs included, into every resource's state).
    """
    import importlib
    import importlib.util

    if not provider or "." not in provider:
        return [f"dynamic resource {name}: its provider could not be read from the pickle ({provider!r})"]
    module_name, class_name = provider.rsplit(".", 1)
    if module_name == "__main__" or module_name.split(".")[0] == "dill":
        return [
            f"dynamic resource {name}: the provider is pickled by value ({provider}); define its class in a "
            "module of the project so it is pickled by reference"
        ]
    spec = importlib.util.find_spec(module_name)
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is None or not origin.is_relative_to(root.resolve()):
        return [
            f"dynamic resource {name}: {module_name} is not a module of the project under {root}; the provider "
            "process could not import it"
        ]
    from pulumi.dynamic import ResourceProvider

    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ResourceProvider)):
        return [f"dynamic resource {name}: {provider} is not a pulumi.dynamic.ResourceProvider"]
    return []
