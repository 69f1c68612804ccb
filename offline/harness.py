"""Run the Pulumi program under mocks and record every resource it declares.

Needs neither the Pulumi CLI nor a cluster: the program's ``__main__.py`` runs inside a stack exactly as the
language host would run it, against a mock engine that records type, name, inputs, parent, dependencies and
which inputs are secret. Tests and the offline render query the resulting :class:`Recording`.

Dynamic resources (``pulumi.dynamic``: the model repository's publication, the generated Grafana password) are
all of type ``pulumi-python:dynamic:Resource``; the record names each one's provider class instead of keeping
the pickled provider (``__provider``), which is read without being unpickled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import pickletools
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime import stack as pulumi_stack
from pulumi.runtime.config import set_all_config

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "inference-platform"
MOCK_ACCOUNT = "123456789012"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_SIG_KEY = "4dabf18193072939515e22adb298388d"
DYNAMIC_RESOURCE = "pulumi-python:dynamic:Resource"
DYNAMIC_PROVIDER_KEY = "__provider"  # pulumi.dynamic's input holding the dill-pickled provider (base64)


@dataclass(frozen=True)
class RecordedResource:
    """One resource as the engine saw it."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None
    dependencies: tuple[str, ...]
    secret_paths: tuple[str, ...]
    custom: bool
    provider: str | None = None  # "<provider urn>::<id>" for custom resources
    dynamic_provider: str | None = None  # dynamic resources: "module.Class" of the pickled provider
    additional_secret_outputs: tuple[str, ...] = ()
    retain_on_delete: bool = False

    @property
    def kind(self) -> str | None:
        """Kubernetes kind for Kubernetes objects, else None."""
        return self.inputs.get("kind")

    @property
    def metadata_name(self) -> str | None:
        return (self.inputs.get("metadata") or {}).get("name")

    def is_secret(self, path: str) -> bool:
        """True if the input at dotted ``path`` (or a value under it) was sent to the engine as a secret."""
        return any(p == path or p.startswith(path + ".") for p in self.secret_paths)


@dataclass
class Recording:
    """Everything one run of the program declared, in registration order."""

    stack: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def by_urn(self, urn: str) -> RecordedResource | None:
        return next((r for r in self.resources if r.urn == urn), None)

    def of_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> RecordedResource:
        """The single resource of a type (optionally with a given Pulumi name); fails loudly otherwise."""
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise LookupError(f"expected one {type_} named {name!r}, found {len(found)} among {names}")
        return found[0]

    def dynamic_resources(self, provider: str | None = None) -> list[RecordedResource]:
        """Dynamic resources, optionally only those of one provider class ("module.Class")."""
        return [r for r in self.of_type(DYNAMIC_RESOURCE) if provider is None or r.dynamic_provider == provider]

    def dynamic(self, provider: str, name: str) -> RecordedResource:
        """The dynamic resource of that provider class and Pulumi name; fails loudly otherwise."""
        found = [r for r in self.dynamic_resources(provider) if r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.dynamic_resources(provider)]
            raise LookupError(f"expected one {provider} resource named {name!r}, found {len(found)} among {names}")
        return found[0]

    def kubernetes_objects(self) -> list[RecordedResource]:
        """Every Kubernetes object the program declares directly (not Helm releases or providers)."""
        return [
            r
            for r in self.resources
            if r.custom
            and r.type.startswith("kubernetes:")
            and "apiVersion" in r.inputs
            and not r.type.startswith("kubernetes:helm.sh/")
        ]

    def helm_releases(self) -> list[RecordedResource]:
        return self.of_type("kubernetes:helm.sh/v3:Release")

    def component_of(self, resource: RecordedResource) -> RecordedResource | None:
        """The nearest ancestor that is a component (not the stack)."""
        parent = resource.parent
        while parent and (owner := self.by_urn(parent)) is not None:
            if not owner.custom:
                return owner
            parent = owner.parent
        return None

    def children_of(self, component_type: str) -> list[RecordedResource]:
        """Every custom resource whose nearest component ancestor has the given type token."""
        return [
            r
            for r in self.resources
            if r.custom and (c := self.component_of(r)) is not None and c.type == component_type
        ]


def _secret_paths(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            yield path
            return
        for key, child in value.items():
            yield from _secret_paths(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _secret_paths(child, f"{path}[{index}]")


def pickled_class(serialized: str) -> str:
    """The class a base64 pickle of an instance refers to ("module.Class"), read without unpickling it.

    A provider pickled by reference names its own class; one pickled by value (defined in ``__main__``, or
    capturing what dill cannot name) shows dill's constructors instead, e.g. ``dill._dill._create_type``.
    """
    try:
        data = base64.b64decode(serialized, validate=True)
        strings: list[str] = []
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(str(argument))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            elif opcode.name == "GLOBAL":
                return str(argument).replace(" ", ".")
    except (binascii.Error, ValueError):
        pass
    return "<unreadable>"


def _mock_arn(type_: str, name: str) -> str:
    """ARNs in the real formats, so code that parses them is exercised."""
    if type_.startswith("aws:iam/"):
        kind = type_.rsplit(":", 1)[-1]
        return f"arn:aws:iam::{MOCK_ACCOUNT}:{kind[0].lower() + kind[1:]}/{name}"
    if type_.startswith("aws:s3/"):
        return f"arn:aws:s3:::{name}"
    return f"arn:aws:{type_.split(':')[1].split('/')[0]}:us-east-1:{MOCK_ACCOUNT}:{name}"


class _RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs back as outputs, adding the few computed fields the program reads."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        outputs = dict(args.inputs)
        if args.typ == "kubernetes:helm.sh/v3:Release":
            outputs.setdefault("status", {"name": args.inputs.get("name", args.name), "status": "deployed"})
        if args.typ.startswith("aws:"):
            outputs.setdefault("arn", _mock_arn(args.typ, args.inputs.get("name") or args.name))
            outputs.setdefault("bucket", args.inputs.get("bucket", args.name))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/mock", "userId": "mock"}, None
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}, None
        return {}, None


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, plus a record of what each registration carried."""

    def __init__(self, mocks: _RecordingMocks, recording: Recording) -> None:
        super().__init__(mocks)
        self.recording = recording

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        raw = json_format.MessageToDict(request.object)
        inputs = _strip_secrets(raw)
        dynamic_provider = None
        if request.type == DYNAMIC_RESOURCE:
            dynamic_provider = pickled_class(str(inputs.pop(DYNAMIC_PROVIDER_KEY, "")))
        self.recording.resources.append(
            RecordedResource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                inputs=inputs,
                parent=request.parent or None,
                dependencies=tuple(request.dependencies),
                secret_paths=tuple(p for p in _secret_paths(raw) if p != DYNAMIC_PROVIDER_KEY),
                custom=bool(request.custom),
                provider=request.provider or None,
                dynamic_provider=dynamic_provider,
                additional_secret_outputs=tuple(request.additionalSecretOutputs),
                retain_on_delete=bool(request.retainOnDelete),
            )
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if "::pulumi:pulumi:Stack::" in request.urn:
            raw = json_format.MessageToDict(request.outputs)
            self.recording.outputs = _strip_secrets(raw)
            self.recording.secret_outputs = {p.split(".")[0].split("[")[0] for p in _secret_paths(raw)}
        return super().RegisterResourceOutputs(request)


def _strip_secrets(value: Any) -> Any:
    """Plain values: secret envelopes unwrapped (the record keeps *where* secrets were) and integers restored."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return _strip_secrets(value.get("value"))
        return {k: _strip_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secrets(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Structs carry every number as a double
    return value


def stack_config(stack: str) -> dict[str, Any]:
    """The ``config:`` block of ``Pulumi.<stack>.yaml``, keys as written there."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    return dict(document.get("config") or {})


def _offline_chart_cache() -> None:
    """The program reads each chart's CRDs from its pinned archive (components/chart_crds.py); offline, those are
    the locked fixture archives (the same files, by sha256), never a download."""
    if "INFERENCE_PLATFORM_CHART_CACHE" not in os.environ:
        from offline.fixtures import fixtures_root

        os.environ["INFERENCE_PLATFORM_CHART_CACHE"] = str(Path(fixtures_root()) / "charts")


def run_program(
    stack: str,
    *,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    main: Path = ROOT / "__main__.py",
) -> Recording:
    """Run ``__main__.py`` under mocks with a stack's config (or ``config`` instead) and record it.

    ``config`` keys are full keys (``inference-platform:triton``); values are plain Python values.
    ``secrets`` are extra config values marked secret, as ``pulumi config set --secret`` would.
    """
    values = dict(stack_config(stack) if config is None else config)
    values.update(secrets or {})
    return _record(stack, values, list(secrets or {}), lambda: _run_main(main))


def run_component(declare: Callable[[], Any], stack: str = "component") -> Recording:
    """Declare one component (``declare`` builds it from typed args) under the same recording mocks, without
    the rest of the program: a variation of one component does not re-run the whole stack."""
    return _record(stack, {}, [], declare)


def _record(stack: str, values: Mapping[str, Any], secret_keys: list[str], body: Callable[[], Any]) -> Recording:
    _offline_chart_cache()
    recording = Recording(stack=stack)
    mocks = _RecordingMocks()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=_RecordingMonitor(mocks, recording)
        )
        # set_mocks installs a finished root stack; the program gets a fresh one, as under the language host.
        pulumi_settings.set_root_resource(None)  # type: ignore[arg-type]
        # Outputs created earlier on another event loop would never resolve on this one; the runtime waits for
        # every output it tracks, so start clean exactly as @pulumi.runtime.test does.
        pulumi_settings.SETTINGS.rpc_manager.clear()
        pulumi_settings.SETTINGS.outputs.clear()
        set_all_config({key: _config_string(value) for key, value in values.items()}, secret_keys=secret_keys)
        loop.run_until_complete(pulumi_stack.run_in_stack(body))
    finally:
        # The mock monitor runs in the loop's executor threads, each with an event loop of its own: end them now,
        # while the interpreter is intact, rather than at exit.
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        asyncio.set_event_loop(None)
    return recording


def _run_main(main: Path) -> None:
    runpy.run_path(str(main), run_name="__main__")


def _config_string(value: Any) -> str:
    """Config reaches a program as strings; structured values as JSON, exactly as the CLI passes them."""
    return value if isinstance(value, str) else json.dumps(value)
