"""offline/fixtures.py: the fixtures root comes from $SHARED_DIR, ../shared or a verified download, never unchecked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components import versions
from offline import fixtures as fx
from offline.fixtures import FixturesError, LockedFile, load_lock, resolve
from tests._pipeline_helpers import serve_directory

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(path: str, data: bytes, url: str | None = None, **extra: Any) -> LockedFile:
    return LockedFile(path=path, sha256=_sha(data), url=url, **extra)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root


FILES = {"crds/a.yaml": b"kind: CustomResourceDefinition\n", "helm-values/c-1.0.0.values.yaml": b"replicas: 1\n"}
LOCK = tuple(_entry(p, d, f"{UNREACHABLE}/{p}") for p, d in FILES.items())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A file server on 127.0.0.1 (an ephemeral port) over a temporary folder, standing in for upstream."""
    served = tmp_path / "served"
    served.mkdir()
    with serve_directory(served) as url:
        yield url, served


# --- local copies --------------------------------------------------------------------------------------------------


def test_the_shared_folder_beside_the_project_is_used_when_present(tmp_path: Path) -> None:
    sibling = _tree(tmp_path / "shared", FILES)
    found = resolve(LOCK, shared_dir=None, sibling=sibling, cache=tmp_path / "cache")
    assert (found.root, found.source) == (sibling.resolve(), "../shared")
    assert found.message == f"fixtures: using ../shared {sibling.resolve()} (2 locked files verified)"
    assert not (tmp_path / "cache").exists()  # nothing was downloaded


def test_shared_dir_wins_over_the_folder_beside_the_project(tmp_path: Path) -> None:
    chosen = _tree(tmp_path / "chosen", FILES)
    sibling = _tree(tmp_path / "shared", {p: b"other bytes" for p in FILES})
    found = resolve(LOCK, shared_dir=str(chosen), sibling=sibling, cache=tmp_path / "cache")
    assert (found.root, found.source) == (chosen.resolve(), "SHARED_DIR")


@pytest.mark.parametrize("where", ["../shared", "SHARED_DIR"])
def test_a_locked_file_whose_bytes_differ_is_refused(tmp_path: Path, where: str) -> None:
    folder = _tree(tmp_path / "shared", {**FILES, "crds/a.yaml": b"kind: CustomResourceDefinition # edited\n"})
    with pytest.raises(FixturesError) as raised:
        resolve(
            LOCK, shared_dir=str(folder) if where == "SHARED_DIR" else None, sibling=folder, cache=tmp_path / "cache"
        )
    message = str(raised.value)
    assert f"{folder.resolve()} does not match fixtures.lock.json: crds/a.yaml has sha256 " in message
    assert f"the lock says {LOCK[0].sha256}" in message
    assert "helm-values" not in message  # the file that matches is not blamed


def test_a_locked_file_missing_from_the_shared_folder_is_refused(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "shared", {"crds/a.yaml": FILES["crds/a.yaml"]})
    with pytest.raises(FixturesError, match=r"helm-values/c-1\.0\.0\.values\.yaml is missing"):
        resolve(LOCK, shared_dir=None, sibling=folder, cache=tmp_path / "cache")


def test_the_real_shared_folder_matches_the_lock() -> None:
    if not fx.SIBLING.is_dir():
        pytest.skip("no ../shared beside this clone")
    found = resolve(load_lock(), shared_dir=None, sibling=fx.SIBLING, cache=fx.CACHE)
    assert found.source == "../shared" and found.missing == {}


# --- downloads -----------------------------------------------------------------------------------------------------


def test_without_network_or_shared_the_message_names_the_first_url_that_failed(tmp_path: Path) -> None:
    with pytest.raises(FixturesError) as raised:
        resolve(LOCK, shared_dir=None, sibling=tmp_path / "no-shared", cache=tmp_path / "cache", timeout=2)
    message = str(raised.value)
    assert message.startswith(f"cannot fetch crds/a.yaml: {UNREACHABLE}/crds/a.yaml failed: ")
    assert "refused" in message.lower()
    assert "no ../shared" in message and "$SHARED_DIR" in message
    assert not (tmp_path / "cache" / "crds" / "a.yaml").exists()


def test_the_command_prints_one_line_naming_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "fixtures.lock.json"
    lock.write_text(
        json.dumps({"files": [{"path": "crds/a.yaml", "sha256": LOCK[0].sha256, "url": f"{UNREACHABLE}/crds/a.yaml"}]})
    )
    monkeypatch.delenv("SHARED_DIR", raising=False)
    monkeypatch.setattr(fx, "LOCK_FILE", lock)
    monkeypatch.setattr(fx, "SIBLING", tmp_path / "no-shared")
    monkeypatch.setattr(fx, "CACHE", tmp_path / "cache")
    fx.forget()
    try:
        assert fx.main() == 1
    finally:
        fx.forget()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"fixtures: cannot fetch crds/a.yaml: {UNREACHABLE}/crds/a.yaml failed: ")


def test_a_download_is_verified_and_kept_in_the_cache(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, served = server
    _tree(served, FILES)
    lock = tuple(_entry(p, d, f"{url}/{p}") for p, d in FILES.items())
    cache = tmp_path / "cache"
    found = resolve(lock, shared_dir=None, sibling=tmp_path / "no-shared", cache=cache)
    assert (found.root, found.source) == (cache, "download")
    assert {p: (cache / p).read_bytes() for p in FILES} == FILES
    assert found.message == f"fixtures: fetched 2 file(s) into {cache} (0 already there, all verified)"
    again = resolve(lock, shared_dir=None, sibling=tmp_path / "no-shared", cache=cache)
    assert "fetched 0 file(s)" in again.message and "(2 already there" in again.message


def test_a_download_with_other_bytes_is_refused(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, served = server
    _tree(served, {"crds/a.yaml": b"tampered\n"})
    lock = (_entry("crds/a.yaml", FILES["crds/a.yaml"], f"{url}/crds/a.yaml"),)
    with pytest.raises(FixturesError) as raised:
        resolve(lock, shared_dir=None, sibling=tmp_path / "no-shared", cache=tmp_path / "cache")
    assert f"{url}/crds/a.yaml served sha256 {_sha(b'tampered' + bytes([10]))}" in str(raised.value)
    assert not (tmp_path / "cache" / "crds" / "a.yaml").exists()


def test_a_mirror_is_tried_after_the_upstream_fails(tmp_path: Path, server: tuple[str, Path]) -> None:
    url, served = server
    _tree(served, {"charts/c-1.0.0.tgz": b"archive"})
    lock = (
        _entry("charts/c-1.0.0.tgz", b"archive", f"{url}/missing/c-1.0.0.tgz", mirrors=(f"{url}/charts/c-1.0.0.tgz",)),
    )
    found = resolve(lock, shared_dir=None, sibling=tmp_path / "no-shared", cache=tmp_path / "cache")
    assert (found.root / "charts/c-1.0.0.tgz").read_bytes() == b"archive"


def test_upstream_bytes_that_differ_from_our_copy_are_checked_against_the_upstream_sha(
    tmp_path: Path, server: tuple[str, Path]
) -> None:
    url, served = server
    _tree(served, {"values.tmpl.yaml": b"image: ${Image}\n", "published.tgz": b"published"})
    lock = (
        _entry(
            "helm-values/g.values.yaml",
            b"image: docker.io/g:v1\n",
            f"{url}/values.tmpl.yaml",
            substitute={"${Image}": "docker.io/g:v1"},
        ),
        LockedFile(
            "charts/k.tgz", sha256=_sha(b"rebuilt"), url=f"{url}/published.tgz", upstream_sha256=_sha(b"published")
        ),
        LockedFile("charts/oci-only.tgz", sha256=_sha(b"x"), not_fetchable="OCI only"),
    )
    found = resolve(lock, shared_dir=None, sibling=tmp_path / "no-shared", cache=tmp_path / "cache")
    assert (found.root / "helm-values/g.values.yaml").read_bytes() == b"image: docker.io/g:v1\n"
    assert (found.root / "charts/k.tgz").read_bytes() == b"published"
    assert found.missing == {"charts/oci-only.tgz": "OCI only"}
    assert found.message.endswith("; 1 not fetchable, tests that need them skip: charts/oci-only.tgz")


# --- the lock itself -----------------------------------------------------------------------------------------------


def test_the_lock_covers_every_fixture_the_pins_need_and_says_where_each_comes_from() -> None:
    lock = {entry.path: entry for entry in load_lock()}
    pins = [p for p in vars(versions).values() if isinstance(p, versions.ChartPin)]
    released = [p for p in pins if p is not versions.ENVOY_GATEWAY_CRDS]  # a v4 Chart: its values are not checked
    needed = {f"charts/{p.archive}" for p in pins} | {f"helm-values/{p.values_fixture}" for p in released}
    needed |= {
        "helm-values/grafana-12.11.1.values.yaml",
        f"manifests/gateway-api-{versions.GATEWAY_API_VERSION}-standard-install.yaml",
    }
    assert needed <= set(lock)
    assert sum(p.startswith("crds/") for p in lock) == 12
    for entry in lock.values():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        assert bool(entry.url) != bool(entry.not_fetchable), entry.path  # a source, or the reason there is none
        assert all(u.startswith("https://") for u in entry.urls), entry.path
