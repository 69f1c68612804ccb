"""The generated Grafana password (components/generated_secret.py): drawn once, never changed, never shown."""

from __future__ import annotations

import base64
import json
import string
import subprocess
import sys

import pytest

from components.generated_secret import DEFAULT_LENGTH, RESULT, GeneratedSecretProvider, generate
from tests.paths import ROOT


def test_create_draws_32_letters_and_digits_and_the_id_does_not_contain_them() -> None:
    created = GeneratedSecretProvider().create({"length": DEFAULT_LENGTH})
    assert created.outs is not None
    value = created.outs[RESULT]
    assert len(value) == 32 and set(value) <= set(string.ascii_letters + string.digits)
    assert value not in created.id
    assert GeneratedSecretProvider().create({"length": 32}).outs != created.outs  # a new draw each create


def test_the_value_is_stable_across_diff_update_and_refresh() -> None:
    provider = GeneratedSecretProvider()
    created = provider.create({"length": 32})
    assert created.outs is not None
    state = {**created.outs, "__provider": "pickled"}
    assert provider.diff(created.id, state, {"length": 32, "__provider": "pickled again"}).changes is False
    assert provider.update(created.id, state, {"length": 32}).outs == created.outs
    read = provider.read(created.id, state)
    assert (read.id, read.outs) == (created.id, created.outs)


def test_only_another_length_draws_a_new_value() -> None:
    diff = GeneratedSecretProvider().diff("id", {"length": 32, RESULT: "x" * 32}, {"length": 48})
    assert (diff.changes, diff.replaces) == (True, ["length"])


@pytest.mark.parametrize("length", [8, 32.5, "32", None])
def test_check_refuses_short_or_odd_lengths(length: object) -> None:
    assert [f.property for f in GeneratedSecretProvider().check({}, {"length": length}).failures] == ["length"]
    assert GeneratedSecretProvider().check({}, {"length": 32}).failures == []


def test_generate_uses_the_whole_alphabet() -> None:
    drawn = set(generate(4000))
    assert drawn == set(string.ascii_letters + string.digits)


def test_the_provider_is_pickled_by_reference_and_loads_in_a_fresh_process() -> None:
    """What Pulumi's provider process does with it: dill.loads in the project directory, then create."""
    from pulumi.dynamic.dynamic import serialize_provider

    serialized = serialize_provider(GeneratedSecretProvider())
    assert b"components.generated_secret" in base64.b64decode(serialized)
    code = (
        "import base64, json, sys, dill; p = dill.loads(base64.b64decode(sys.argv[1])); "
        "outs = p.create({'length': 32}).outs; print(json.dumps(len(outs['result'])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, serialized], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == 32
