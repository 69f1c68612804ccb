"""A generated password kept in the stack's state as a secret: a Pulumi dynamic resource, no pulumi-random.

Generated once, on create, with :mod:`secrets` (letters and digits, so it survives any shell, URL or YAML
quoting); every later ``pulumi up`` keeps it (no diff, no update), refresh reads it back from the state, and only
asking for another length replaces it. The value exists only in the ``result`` output, which is registered in
``additional_secret_outputs``: the state encrypts it and the CLI shows ``[secret]``. Nothing here logs it and the
resource id does not contain it.

Like components/s3_publication.py, the provider is pickled by reference (dill) and run in Pulumi's
dynamic-provider process: this module imports only the standard library and ``pulumi.dynamic``.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

ALPHABET = string.ascii_letters + string.digits
DEFAULT_LENGTH = 32
MIN_LENGTH = 16
RESULT = "result"
_PROVIDER_KEY = "__provider"  # pulumi.dynamic: the pickled provider, carried in inputs and outputs


def generate(length: int) -> str:
    """``length`` characters drawn from ALPHABET by the operating system's CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


class GeneratedSecretProvider(dynamic.ResourceProvider):
    """Create draws the value; nothing else ever changes it."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        length = news.get("length")
        failures = []
        if not isinstance(length, int | float) or int(length) != length or int(length) < MIN_LENGTH:
            failures.append(dynamic.CheckFailure("length", f"must be a whole number of at least {MIN_LENGTH}"))
        return dynamic.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        length = int(props["length"])
        # The id names the resource, never the value.
        return dynamic.CreateResult(f"generated-{secrets.token_hex(8)}", {"length": length, RESULT: generate(length)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """No change, ever, except a request for another length, which draws a new value (replace)."""
        if int(olds.get("length", 0)) != int(news.get("length", 0)):
            return dynamic.DiffResult(changes=True, replaces=["length"], delete_before_replace=False)
        return dynamic.DiffResult(changes=False)

    def update(self, _id: str, olds: dict[str, Any], _news: dict[str, Any]) -> dynamic.UpdateResult:
        # Never asked for by diff; if it were, the value would be kept all the same.
        return dynamic.UpdateResult({k: v for k, v in olds.items() if k != _PROVIDER_KEY})

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        # Nothing outside the state holds the value: refresh reads back exactly what is there.
        return dynamic.ReadResult(id_, {k: v for k, v in props.items() if k != _PROVIDER_KEY})


class GeneratedSecret(dynamic.Resource):
    """A random password of ``length`` characters, kept in the state; read it from ``result`` (a secret)."""

    length: pulumi.Output[int]
    result: pulumi.Output[str]

    def __init__(self, name: str, length: int = DEFAULT_LENGTH, opts: pulumi.ResourceOptions | None = None) -> None:
        secret_outputs = pulumi.ResourceOptions(additional_secret_outputs=[RESULT])
        super().__init__(
            GeneratedSecretProvider(),
            name,
            {"length": length, RESULT: None},
            pulumi.ResourceOptions.merge(opts, secret_outputs),
        )
