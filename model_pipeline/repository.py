"""The Triton model repository on disk: layout, manifest.json (hashes, versions, digest) and its verification.

Layout (CONTRACTS.md)::

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.onnx        always
    <repo>/<model>/<version>/model.plan        only when TensorRT really built it
    <repo>/<model>/golden.npz                  golden inputs + ONNX Runtime reference outputs
    <repo>/manifest.json                       written last

The manifest digest covers every other file, so a repository is identified by its content: the S3 prefix is
the digest, and ``verify_repository`` re-hashes and re-checks everything before it is served or uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from model_pipeline.digest import (
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    content_digest,
    file_sha256,
    list_files,
    read_manifest,
    verify_file_hashes,
)
from model_pipeline.errors import ModelValidationError, RepositoryError
from model_pipeline.release import TRITON_IMAGE, TRITON_TENSORRT_VERSION
from model_pipeline.specs import MODEL_FILE_BY_PLATFORM, ModelSpec, TensorSpec
from model_pipeline.triton_config import (
    CONFIG_FILE,
    check_config_against_onnx,
    check_config_against_plan,
    load_config,
    render_config,
    validate_config,
)

GOLDEN_FILE = "golden.npz"
TENSORRT_STATUSES = ("built", "skipped", "pending")


@dataclass(frozen=True)
class TensorRTStatus:
    """What happened to the TensorRT engine of one model; ``reason`` says why it was skipped or pending."""

    status: str
    reason: str = ""
    version: str | None = None
    compute_capability: str | None = None

    def __post_init__(self) -> None:
        if self.status not in TENSORRT_STATUSES:
            allowed = list(TENSORRT_STATUSES)
            raise RepositoryError(f"TensorRT status '{self.status}' is unknown; allowed: {allowed}")

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``tensorrt`` object."""
        return {
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "compute_capability": self.compute_capability,
        }


@dataclass(frozen=True)
class ModelArtifacts:
    """Everything one model contributes to the repository, produced by the build steps."""

    spec: ModelSpec
    onnx_path: Path
    golden_path: Path
    tensorrt: TensorRTStatus
    plan_path: Path | None = None
    accuracy: float | None = None
    weights: str = ""  # where the weights came from, e.g. "trained on MNIST (60000 images)" or "random init"
    entry: dict[str, Any] = field(default_factory=dict)  # the stack entry it was built for (ModelEntry.record)
    source_sha256: str | None = None  # a brought model's file, so that a changed file tells a stale build

    @property
    def platform(self) -> str:
        """``tensorrt_plan`` only when an engine was really built, otherwise ONNX Runtime serves the ONNX."""
        return "tensorrt_plan" if self.tensorrt.status == "built" and self.plan_path else "onnxruntime_onnx"


@dataclass
class VerifiedRepository:
    """The outcome of ``verify_repository``: the manifest and what was checked."""

    path: Path
    manifest: dict[str, Any]
    files_checked: int = 0
    models: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])


# ---------------------------------------------------------------------------------------------------------
# Hashing


def hash_files(root: Path, relative_paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{path: {"sha256", "size"}}`` for the given files under ``root``."""
    return {
        rel: {"sha256": file_sha256(root / rel), "size": (root / rel).stat().st_size} for rel in sorted(relative_paths)
    }


# ---------------------------------------------------------------------------------------------------------
# Tool versions


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def collect_tool_versions(
    tensorrt_version: str | None = None, gpu_compute_capability: str | None = None
) -> dict[str, str | None]:
    """Versions of the tools that produced the artefacts; TensorRT and GPU are None when not used."""
    return {
        "torch": _package_version("torch"),
        "onnx": _package_version("onnx"),
        "onnxruntime": _package_version("onnxruntime") or _package_version("onnxruntime-gpu"),
        "tensorrt": tensorrt_version,
        "gpu_compute_capability": gpu_compute_capability,
    }


# ---------------------------------------------------------------------------------------------------------
# Writing


def _model_entry(artifacts: ModelArtifacts) -> dict[str, Any]:
    spec = artifacts.spec
    return {
        "version": spec.version,
        "platform": artifacts.platform,
        "backend_requested": spec.backend,
        "precision": spec.precision,
        "instances": spec.instance_count,
        "max_queue_delay_us": spec.max_queue_delay_us,
        "max_batch_size": spec.max_batch_size,
        **spec.profile_record(),
        "inputs": [_tensor_record(t) for t in spec.inputs],
        "outputs": [_tensor_record(t) for t in spec.outputs],
        "tensorrt": artifacts.tensorrt.to_dict(),
        "accuracy": artifacts.accuracy,
        "weights": artifacts.weights,
        "entry": artifacts.entry,
        "source_sha256": artifacts.source_sha256,
    }


def _tensor_record(tensor: TensorSpec) -> dict[str, Any]:
    return {"name": tensor.name, "data_type": tensor.data_type, "dims": list(tensor.dims), "axes": list(tensor.axes)}


def _place_model(root: Path, artifacts: ModelArtifacts) -> None:
    spec = artifacts.spec
    version_dir = root / spec.name / str(spec.version)
    version_dir.mkdir(parents=True)
    _copy(artifacts.onnx_path, version_dir / MODEL_FILE_BY_PLATFORM["onnxruntime_onnx"])
    if artifacts.platform == "tensorrt_plan" and artifacts.plan_path is not None:
        _copy(artifacts.plan_path, version_dir / MODEL_FILE_BY_PLATFORM["tensorrt_plan"])
    _copy(artifacts.golden_path, root / spec.name / GOLDEN_FILE)
    (root / spec.name / CONFIG_FILE).write_text(render_config(spec, artifacts.platform), encoding="utf-8")


def _copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise RepositoryError(f"{source}: build artefact is missing; cannot place it at {target.name}")
    # A hard link is instant for the 100 MB ResNet ONNX; fall back to a copy across file systems.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def build_manifest(root: Path, models: Sequence[ModelArtifacts], tools: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest dict of the files now under ``root`` (CONTRACTS.md format 1)."""
    files = hash_files(root, list_files(root))
    return {
        "format": MANIFEST_FORMAT,
        "digest": content_digest(files),
        "triton_image": TRITON_IMAGE,
        "tensorrt_version_required": TRITON_TENSORRT_VERSION,
        "tools": dict(tools),
        "models": {a.spec.name: _model_entry(a) for a in sorted(models, key=lambda a: a.spec.name)},
        "files": files,
    }


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> Path:
    """Write manifest.json atomically (temp file + rename), so a reader never sees half of it."""
    target = root / MANIFEST_FILE
    temporary = root / f".{MANIFEST_FILE}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(target)
    return target


def write_repository(out: Path, models: Sequence[ModelArtifacts], tools: Mapping[str, Any]) -> VerifiedRepository:
    """Assemble the repository in a staging directory, verify it, then swap it into ``out`` in one rename.

    ``out`` keeps its previous content until the new repository has passed verification.
    """
    names = [a.spec.name for a in models]
    if not models or len(set(names)) != len(names):
        raise RepositoryError(f"a repository needs one or more models with distinct names, got {names}")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        for artifacts in models:
            _place_model(staging, artifacts)
        write_manifest(staging, build_manifest(staging, models, tools))
        verified = verify_repository(staging, replay_golden=False)
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verified.path = out
    return verified


def _swap_into_place(staging: Path, out: Path) -> None:
    if out.exists() and not (out / MANIFEST_FILE).is_file() and any(out.iterdir()):
        raise RepositoryError(
            f"{out}: exists, is not empty and has no {MANIFEST_FILE}; refusing to replace a directory "
            "that is not a model repository"
        )
    retired = out.with_name(f".{out.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if out.exists():
        out.rename(retired)
    staging.rename(out)
    shutil.rmtree(retired, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Verification


def _verify_model(root: Path, name: str, entry: Mapping[str, Any], replay_golden: bool) -> None:
    model_dir = root / name
    config = load_config(model_dir / CONFIG_FILE)
    validate_config(config, name)
    if config.platform != entry.get("platform"):
        raise ModelValidationError(
            f"{name}: config.pbtxt platform '{config.platform}' but the manifest says '{entry.get('platform')}'"
        )
    profile = entry.get("profile") or [None]
    onnx_path = model_dir / str(entry.get("version")) / MODEL_FILE_BY_PLATFORM["onnxruntime_onnx"]
    check_config_against_onnx(config, onnx_path, profile_max=profile[-1])
    if config.platform == "tensorrt_plan":
        plan = onnx_path.with_name(MODEL_FILE_BY_PLATFORM["tensorrt_plan"])
        if not plan.is_file():
            missing = plan.relative_to(root)
            raise ModelValidationError(f"{name}: platform tensorrt_plan but {missing} is missing")
        check_config_against_plan(config, entry, TRITON_TENSORRT_VERSION)
    check_golden_file(model_dir / GOLDEN_FILE, config, onnx_path if replay_golden else None)


def check_golden_file(path: Path, config: Any, onnx_path: Path | None = None) -> int:
    """Check golden.npz covers every config tensor at ``[batch, *dims]``; with ``onnx_path``, replay it.

    Replaying runs the golden inputs through ONNX Runtime and compares with the stored outputs, which proves
    the ONNX file computes what was verified against PyTorch at build time. Returns the number of cases.
    """
    from model_pipeline.verification import read_golden

    try:
        cases = read_golden(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelValidationError(f"{path}: not a readable golden .npz ({exc})") from exc
    for case in cases:
        for tensors, arrays in ((config.input, case.inputs), (config.output, case.outputs)):
            for tensor in tensors:
                _check_golden_array(path, case.label, config.max_batch_size > 0, tensor, arrays.get(tensor.name))
    if onnx_path is not None:
        _replay_golden(path, onnx_path, cases)
    return len(cases)


def _check_golden_array(path: Path, label: str, batched: bool, tensor: Any, array: np.ndarray | None) -> None:
    if array is None:
        raise ModelValidationError(f"{path}: case {label} has no array for tensor '{tensor.name}'")
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    shape = list(array.shape[1:] if batched else array.shape)
    if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape, strict=True)):
        expected = (["batch"] if batched else []) + dims
        raise ModelValidationError(
            f"{path}: '{tensor.name}' in case {label} has shape {list(array.shape)}, expected {expected}"
        )


def _replay_golden(path: Path, onnx_path: Path, cases: Sequence[Any]) -> None:
    from model_pipeline.verification import ONNX_TOLERANCE, check_against, onnx_session, run_onnx

    session = onnx_session(onnx_path)
    model = onnx_path.parent.parent.name
    check_against(
        f"{onnx_path.name} replayed against {path.name}",
        list(cases),
        lambda feeds: run_onnx(session, feeds),
        ONNX_TOLERANCE,
        model,
    )


def verify_repository(path: Path, replay_golden: bool = True) -> VerifiedRepository:
    """Re-hash every file against the manifest and re-check each config against its model file.

    With ``replay_golden`` each ONNX model also reruns its golden inputs in ONNX Runtime (seconds for ResNet).
    """
    root = Path(path)
    manifest = read_manifest(root)
    checked = verify_file_hashes(root, manifest)
    model_dirs = sorted({rel.split("/", 1)[0] for rel in manifest["files"] if "/" in rel})
    unlisted = sorted(set(model_dirs) - set(manifest["models"]))
    if unlisted:
        raise RepositoryError(f"{root}: model directories {unlisted} are not described in {MANIFEST_FILE}")
    for name, entry in sorted(manifest["models"].items()):
        _verify_model(root, name, entry, replay_golden)
    return VerifiedRepository(root, manifest, checked, sorted(manifest["models"]))
