"""The repository's content address, shared by the pipeline and the Pulumi program.

Standard library only: the program verifies a build with it without importing numpy, onnx or torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
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
