"""The toolchain's cache key: the same pins and Go give the same key in every process (a warm machine rebuilds
nothing), and a changed pin gives another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import toolchain.build as build
from tests.paths import ROOT

KEYS = "import toolchain.build as b; print(' '.join(t.key('go1.26.8') for t in b.TOOLS))"


def test_keys_are_the_same_in_every_process() -> None:
    runs = {
        subprocess.run([sys.executable, "-c", KEYS], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_a_changed_pin_or_go_version_changes_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kwok").mkdir()
    for name in ("go.mod", "go.sum", "tools.go"):
        (tmp_path / "kwok" / name).write_bytes((ROOT / "toolchain" / "kwok" / name).read_bytes())
    monkeypatch.setattr(build, "PINS", tmp_path)
    tool = next(t for t in build.TOOLS if t.name == "kwok")
    before = tool.key("go1.26.8")
    assert tool.key("go1.26.9") != before
    with (tmp_path / "kwok" / "go.sum").open("a") as sums:
        sums.write("example.com/x v1.0.0 h1:AAAA=\n")
    assert tool.key("go1.26.8") != before


def test_the_language_host_is_built_from_the_locked_source_and_a_changed_file_changes_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from offline import fixtures

    tool = next(t for t in build.TOOLS if t.name == "language-host")
    locked = {entry.path for entry in fixtures.load_lock()}
    assert set(tool.fixtures) <= locked and any(p.endswith("main.go") for p in tool.fixtures)
    before = tool.key("go1.26.8")
    changed = tuple(
        dataclasses.replace(e, sha256="0" * 64) if e.path.endswith("main.go") else e for e in fixtures.load_lock()
    )
    monkeypatch.setattr(fixtures, "load_lock", lambda: changed)
    assert tool.key("go1.26.8") != before
