"""What a Pulumi stack serves, read from its stack file: the build's one source for which models, and how.

``python -m model_pipeline build --stack prod`` builds exactly the models of ``Pulumi.prod.yaml`` with their
settings (backend, precision, batch profile, queue delay, instances) into that stack's own build folder; the
program refuses a build whose settings differ from the stack's, naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_pipeline.errors import SpecError
from model_pipeline.specs import ModelSpec, spec_for_stack_model

DEFAULT_STACK_MODELS: tuple[dict[str, Any], ...] = ({"name": "mnist"},)  # a stack that lists no models


def default_build_dir(stack: str) -> str:
    """Each stack builds into its own folder, so building prod never makes dev's build stale."""
    return f"build/{stack}/model_repository"


@dataclass(frozen=True)
class StackBuild:
    """The models one stack serves and where its build goes."""

    stack: str
    models: tuple[ModelSpec, ...]
    out: Path


def _config(stack: str, root: Path) -> tuple[str, dict[str, Any]]:
    import yaml

    try:
        project = yaml.safe_load((root / "Pulumi.yaml").read_text())["name"]
        document = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    except FileNotFoundError as missing:
        raise SpecError(f"stack {stack!r}: {missing.filename} does not exist") from None
    return str(project), dict(document.get("config") or {})


def stack_build(stack: str, root: Path = Path(".")) -> StackBuild:
    """The stack's models as specs, and its build folder (``modelRepository.buildDir``, else its own)."""
    project, config = _config(stack, root)
    entries = config.get(f"{project}:models") or list(DEFAULT_STACK_MODELS)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("name") for e in entries):
        raise SpecError(f"stack {stack!r}: {project}:models must be a list of models, each with a name")
    build_dir = (config.get(f"{project}:modelRepository") or {}).get("buildDir") or default_build_dir(stack)
    return StackBuild(stack, tuple(spec_for_stack_model(e) for e in entries), root / build_dir)
