"""The repository's content address, shared by the pipeline and the Pulumi program.

Standard library only: the program verifies a build with it without importing numpy, onnx or torch, and the
Pulumi program's publication provider re-checks a build with :func:`verify_hashes` before it uploads anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_pipeline.errors import RepositoryError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (ResNet-50's ONNX is ~100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except manifest.json, as sorted POSIX paths relative to ``root``."""
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(f for f in found if f != MANIFEST_FILE)


def content_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 of the sorted ``[path, sha256]`` list as compact JSON; manifest.json is not part of it."""
    pairs = sorted([path, str(entry["sha256"])] for path, entry in files.items())
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def read_manifest(root: Path) -> dict[str, Any]:
    """Load and shape-check manifest.json."""
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise RepositoryError(f"{root}: not a directory")
    if not path.is_file():
        raise RepositoryError(f"{root}: no {MANIFEST_FILE}; not a built model repository (or a partial one)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise RepositoryError(f"{path}: unsupported manifest format; expected format {MANIFEST_FORMAT}")
    for key in ("digest", "models", "files", "tools"):
        if key not in manifest:
            raise RepositoryError(f"{path}: manifest has no '{key}'")
    return manifest


def verify_file_hashes(root: Path, manifest: Mapping[str, Any]) -> int:
    """Every listed file is on disk with its size and SHA-256, nothing else is, and the digest matches them."""
    recorded: Mapping[str, Mapping[str, Any]] = manifest["files"]
    on_disk = set(list_files(root))
    missing = sorted(set(recorded) - on_disk)
    extra = sorted(on_disk - set(recorded))
    if missing:
        raise RepositoryError(f"{root}: files listed in {MANIFEST_FILE} are missing: {missing}")
    if extra:
        raise RepositoryError(f"{root}: files not in {MANIFEST_FILE} (would be served unverified): {extra}")
    for rel, entry in sorted(recorded.items()):
        size = (root / rel).stat().st_size
        actual = file_sha256(root / rel)
        if actual != entry.get("sha256") or size != entry.get("size"):
            raise RepositoryError(
                f"{root}: {rel} changed since the build (sha256 {actual[:12]}…, {size} bytes; manifest has "
                f"{str(entry.get('sha256'))[:12]}…, {entry.get('size')} bytes)"
            )
    if content_digest(recorded) != manifest["digest"]:
        raise RepositoryError(f"{root}: manifest digest does not match the files it lists")
    return len(recorded)


def verify_hashes(root: Path) -> dict[str, Any]:
    """The manifest of a repository whose files match it byte for byte; hashlib only (no onnx, no tritonclient).

    What :func:`model_pipeline.repository.verify_repository` checks first, without re-checking each config
    against its model file: for publishing a build that was fully verified when it was written.
    """
    manifest = read_manifest(Path(root))
    verify_file_hashes(Path(root), manifest)
    return manifest
