"""What a Pulumi stack serves, read from its stack file: the build's one source for which models, and how.

``python -m model_pipeline build --stack prod`` builds exactly the models of ``Pulumi.prod.yaml`` with their
settings into that stack's own build folder, reading each entry with the same schema the program validates the
stack with (:mod:`model_pipeline.entry`); the program refuses a build whose entries differ, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_pipeline.entry import ModelEntry, read_models
from model_pipeline.errors import SpecError
from model_pipeline.sources import S3Access


def default_build_dir(stack: str) -> str:
    """Each stack builds into its own folder, so building prod never makes dev's build stale."""
    return f"build/{stack}/model_repository"


@dataclass(frozen=True)
class StackBuild:
    """The models one stack serves, where its build goes, and how its s3:// sources are read."""

    stack: str
    models: tuple[ModelEntry, ...]
    out: Path
    root: Path
    s3: S3Access


def _config(stack: str, root: Path) -> tuple[str, dict[str, Any]]:
    import yaml

    try:
        project = yaml.safe_load((root / "Pulumi.yaml").read_text())["name"]
        document = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text()) or {}
    except FileNotFoundError as missing:
        raise SpecError(f"stack {stack!r}: {missing.filename} does not exist") from None
    return str(project), dict(document.get("config") or {})


def stack_build(stack: str, root: Path = Path(".")) -> StackBuild:
    """The stack's model entries (every problem at once), its build folder and its S3 endpoint."""
    project, config = _config(stack, root)
    problems: list[str] = []
    models = read_models(config.get(f"{project}:models"), problems, root)
    if problems:
        raise SpecError(f"stack {stack!r}: " + "; ".join(problems))
    repository = config.get(f"{project}:modelRepository") or {}
    build_dir = repository.get("buildDir") or default_build_dir(stack)
    # The machine building reaches the store as `pulumi up` does: through publishEndpoint when the cluster's differs.
    s3 = S3Access(repository.get("publishEndpoint") or repository.get("endpoint"), repository.get("region"))
    return StackBuild(stack, models, root / build_dir, root, s3)
