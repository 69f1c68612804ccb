"""The fixtures root: the upstream files (CRDs, chart values, chart archives, manifests) the tests validate against.

``fixtures.lock.json`` lists every such file with its sha256 and where it comes from. :func:`fixtures_root` picks,
in order: ``$SHARED_DIR``; ``../shared`` beside the project; else ``.cache/fixtures``, downloading what the lock
names. Local copies and downloads alike are checked against the lock, so a test never runs against a file that
moved. ``python -m offline.fixtures`` does the same and prints one line saying what it used or fetched.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = ROOT / "fixtures.lock.json"
SIBLING = ROOT.parent / "shared"
CACHE = ROOT / ".cache" / "fixtures"
TIMEOUT_SECONDS = 10.0  # per connect and per read: an unreachable host fails fast
DEADLINE_SECONDS = 60.0  # per file, however slowly a server trickles bytes


class FixturesError(RuntimeError):
    """The fixtures cannot be made available, or a copy differs from the lock; the message says which and why."""


@dataclass(frozen=True)
class LockedFile:
    """One fixture: its path under the fixtures root, our copy's sha256 and its upstream source."""

    path: str
    sha256: str
    url: str | None = None
    mirrors: tuple[str, ...] = ()
    upstream_sha256: str | None = None  # what the url serves, where it differs from our copy
    substitute: Mapping[str, str] = field(default_factory=dict)  # applied to the download before it is checked
    not_fetchable: str | None = None  # why there is no HTTP source

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors) if self.url else ()

    @property
    def fetched_sha256(self) -> str:
        """The sha256 a verified download has (after substitution)."""
        return self.upstream_sha256 or self.sha256


@dataclass(frozen=True)
class Fixtures:
    """Where the fixtures are, how they got there, and the one line that says so."""

    root: Path
    source: str  # "SHARED_DIR" | "../shared" | "download"
    message: str
    missing: Mapping[str, str] = field(default_factory=dict)  # path -> why it could not be fetched


def load_lock(path: Path = LOCK_FILE) -> tuple[LockedFile, ...]:
    """The locked files, in the lock's order."""
    document: dict[str, Any] = json.loads(path.read_text())
    return tuple(
        LockedFile(
            path=entry["path"],
            sha256=entry["sha256"],
            url=entry.get("url"),
            mirrors=tuple(entry.get("mirrors", ())),
            upstream_sha256=entry.get("upstream_sha256"),
            substitute=dict(entry.get("substitute", {})),
            not_fetchable=entry.get("not_fetchable"),
        )
        for entry in document["files"]
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(root: Path, lock: Sequence[LockedFile]) -> None:
    """Every locked file is under ``root`` with the locked sha256; raises :class:`FixturesError` listing each miss."""
    problems = []
    for entry in lock:
        path = root / entry.path
        if not path.is_file():
            problems.append(f"{entry.path} is missing")
        elif (actual := _sha256(path)) != entry.sha256:
            problems.append(f"{entry.path} has sha256 {actual}, the lock says {entry.sha256}")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise FixturesError(
            f"{root} does not match {LOCK_FILE.name}: {'; '.join(problems[:3])}{more} "
            "(restore the files, or move the lock with them)"
        )


def _download(url: str, timeout: float, deadline: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "inference-platform-fixtures"})
    chunks = []
    ends = time.monotonic() + deadline
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while block := response.read(1 << 16):
            chunks.append(block)
            if time.monotonic() > ends:
                raise TimeoutError(f"not complete after {deadline:g}s")
    return b"".join(chunks)


def _why(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _fetch_one(entry: LockedFile, target: Path, timeout: float, deadline: float) -> None:
    """Download ``entry`` from its first URL that answers with the locked bytes; raises naming the first failure."""
    if not entry.urls:
        raise FixturesError(f"cannot fetch {entry.path}: the lock gives it no url and no not_fetchable reason")
    failures = []
    for url in entry.urls:
        try:
            data = _download(url, timeout, deadline)
        except (OSError, http.client.HTTPException, ValueError) as error:  # URLError and timeouts are OSErrors
            failures.append(f"{url} failed: {_why(error)}")
            continue
        for old, new in entry.substitute.items():
            data = data.replace(old.encode(), new.encode())
        if (actual := hashlib.sha256(data).hexdigest()) != entry.fetched_sha256:
            failures.append(f"{url} served sha256 {actual}, the lock says {entry.fetched_sha256}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        return
    raise FixturesError(
        f"cannot fetch {entry.path}: {failures[0]}"
        + (f" (and {len(failures) - 1} mirror(s) failed too)" if len(failures) > 1 else "")
    )


def fetch(
    lock: Sequence[LockedFile], cache: Path, *, timeout: float = TIMEOUT_SECONDS, deadline: float = DEADLINE_SECONDS
) -> Fixtures:
    """Download every fetchable locked file missing from ``cache`` (or not matching the lock) and verify it."""
    fetched, kept, missing = 0, 0, {}
    for entry in lock:
        target = cache / entry.path
        if entry.not_fetchable:
            missing[entry.path] = entry.not_fetchable
            continue
        if target.is_file() and _sha256(target) == entry.fetched_sha256:
            kept += 1
            continue
        try:
            _fetch_one(entry, target, timeout, deadline)
        except FixturesError as error:
            raise FixturesError(
                f"{error}; no ../shared beside {ROOT.name}/ and no $SHARED_DIR, so nothing to fall back on"
            ) from None
        fetched += 1
    where = os.path.relpath(cache, ROOT) if cache.is_relative_to(ROOT) else str(cache)
    message = f"fixtures: fetched {fetched} file(s) into {where} ({kept} already there, all verified)"
    if missing:
        message += f"; {len(missing)} not fetchable, tests that need them skip: {', '.join(missing)}"
    return Fixtures(cache, "download", message, missing)


def resolve(
    lock: Sequence[LockedFile],
    *,
    shared_dir: str | None,
    sibling: Path = SIBLING,
    cache: Path = CACHE,
    timeout: float = TIMEOUT_SECONDS,
) -> Fixtures:
    """Pick the fixtures root: ``shared_dir`` ($SHARED_DIR), else ``sibling`` (../shared), else a verified download."""
    if shared_dir:
        root = Path(shared_dir).expanduser().resolve()
        if not root.is_dir():
            raise FixturesError(f"SHARED_DIR={shared_dir} is not a folder")
        verify(root, lock)
        return Fixtures(root, "SHARED_DIR", f"fixtures: using $SHARED_DIR {root} ({len(lock)} locked files verified)")
    if sibling.is_dir():
        root = sibling.resolve()
        verify(root, lock)
        return Fixtures(root, "../shared", f"fixtures: using ../shared {root} ({len(lock)} locked files verified)")
    return fetch(lock, cache, timeout=timeout)


@functools.cache
def _resolved() -> Fixtures | FixturesError:
    try:
        return resolve(load_lock(LOCK_FILE), shared_dir=os.environ.get("SHARED_DIR"), sibling=SIBLING, cache=CACHE)
    except FixturesError as error:
        return error  # remembered too: a test session without network fails every test at once, not one by one


def fixtures() -> Fixtures:
    """This checkout's fixtures, resolved once per process (see the module docstring)."""
    found = _resolved()
    if isinstance(found, FixturesError):
        raise found
    return found


def forget() -> None:
    """Resolve again on the next call (after $SHARED_DIR or the module's paths changed)."""
    _resolved.cache_clear()


def fixtures_root() -> Path:
    """The folder holding ``crds/``, ``helm-values/``, ``charts/`` and ``manifests/``, verified against the lock."""
    return fixtures().root


def link_cache(root: Path, cache: Path = CACHE) -> None:
    """Make ``.cache/fixtures`` name the chosen root, so a stack file can point at one fixed path
    (Pulumi.local.yaml's sources) whichever root was found."""
    if root.resolve() == cache.resolve():
        return
    if cache.is_symlink():
        cache.unlink()
    elif cache.exists():
        return  # a download folder of an earlier run, already verified
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.symlink_to(root.resolve(), target_is_directory=True)


def main() -> int:
    try:
        found = fixtures()
        link_cache(found.root)
        print(found.message)
    except FixturesError as error:
        print(f"fixtures: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
