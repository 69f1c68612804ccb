"""How a setting is declared: its key, kind, bounds or choices and one line of doc, on its dataclass field.

A settings field is written once, for example::

    replicas: int = integer("replicas", 1, 1, 64, "Triton pods; ignored when autoscaling is on")

The field's default is the setting's default. :mod:`model_pipeline.schema_reader` reads every declared field,
``offline/project_file.py`` writes the ``config:`` block of Pulumi.yaml from the same declarations. It lives in
the pipeline because the pipeline declares the stack's model entries (:mod:`model_pipeline.entry`) with it; the
program declares the rest of its settings the same way (``components/settings.py``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from model_pipeline import syntax

MISSING: Any = dataclasses.MISSING
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Envoy Gateway's duration syntax (no days), as its CRDs validate it.
ENVOY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
ENVOY_DURATION_RULE = "a duration such as 500ms, 5s or 1m (no days)"


@dataclass(frozen=True)
class Setting:
    """One configuration key of a settings dataclass.

    ``key`` is relative to the section; a dotted key ("batch.min") reads a nested object into a flat field.
    ``kind`` picks the reader's getter. ``parse`` replaces the getter for the few keys with their own syntax.
    """

    key: str
    kind: str
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    pattern: re.Pattern[str] | None = None
    allowed: str = ""
    required: str | None = None  # why it is required ("" for no reason given); None: optional
    parse: str | None = None  # the name of the reader's parser for a key with its own syntax
    default_doc: str | None = None  # the default as the docs state it, when it is computed

    @property
    def secret(self) -> bool:
        """A top-level key set only with `pulumi config set --secret`."""
        return self.kind == "secret"


def _declare(default: Any, setting: Setting, factory: Callable[[], Any] | None = None) -> Any:
    metadata = {"setting": setting}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def text(
    key: str,
    default: str | None,
    doc: str,
    *,
    pattern: re.Pattern[str] | None = None,
    allowed: str = "",
    required: str | None = None,
    default_doc: str | None = None,
) -> Any:
    """A string, optionally matching ``pattern`` (``allowed`` says what that means to a user)."""
    setting = Setting(key, "string", doc, pattern=pattern, allowed=allowed, required=required, default_doc=default_doc)
    return _declare(default, setting)


def dns_label(key: str, default: str | None, doc: str, *, allowed: str = "a DNS label") -> Any:
    """A namespace or object name."""
    return text(key, default, doc, pattern=DNS_LABEL, allowed=allowed)


def choice(
    key: str,
    default: str,
    choices: tuple[str, ...],
    doc: str,
    *,
    required: str | None = None,
    default_doc: str | None = None,
) -> Any:
    return _declare(default, Setting(key, "string", doc, choices=choices, required=required, default_doc=default_doc))


def integer(
    key: str,
    default: int | None,
    low: int,
    high: int,
    doc: str,
    *,
    required: str | None = None,
    default_doc: str | None = None,
) -> Any:
    return _declare(
        default, Setting(key, "integer", doc, low=low, high=high, required=required, default_doc=default_doc)
    )


def number(
    key: str, default: float | None, low: float, high: float, doc: str, *, default_doc: str | None = None
) -> Any:
    return _declare(default, Setting(key, "number", doc, low=low, high=high, default_doc=default_doc))


def boolean(key: str, default: bool, doc: str) -> Any:
    return _declare(default, Setting(key, "boolean", doc))


def quantity(key: str, default: str | None, doc: str) -> Any:
    return _declare(default, Setting(key, "quantity", doc, allowed=syntax.QUANTITY_RULE))


def duration(key: str, default: str, doc: str) -> Any:
    """A Prometheus duration (the scrape, rule and retention keys)."""
    return text(key, default, doc, pattern=syntax.DURATION, allowed=syntax.DURATION_RULE)


def envoy_duration(key: str, default: str, doc: str) -> Any:
    """A duration in Envoy Gateway's syntax (the gateway's timeouts)."""
    return text(key, default, doc, pattern=ENVOY_DURATION, allowed=ENVOY_DURATION_RULE)


def labels(key: str, default: Mapping[str, str], doc: str, *, default_doc: str | None = None) -> Any:
    """An object of string values (node selectors)."""
    return _declare(None, Setting(key, "map", doc, default_doc=default_doc), factory=lambda: dict(default))


def names(key: str, default: tuple[str, ...], doc: str, *, choices: tuple[str, ...] = ()) -> Any:
    """A list of non-empty strings, optionally each one of ``choices``."""
    return _declare(default, Setting(key, "list", doc, choices=choices))


def section(key: str, default: Any, doc: str) -> Any:
    """A nested object read into its own settings dataclass; ``default`` supplies the defaults of its keys."""
    return _declare(default, Setting(key, "section", doc))


def secret(key: str, doc: str) -> Any:
    """A top-level key that may only be set as a secret; it arrives as an ``Output``."""
    return _declare(None, Setting(key, "secret", doc))


def custom(key: str, default: Any, doc: str, parse: str, *, default_doc: str | None = None) -> Any:
    """A key with its own syntax, read by the reader's parser named ``parse`` (components/config_reader.py)."""
    return _declare(default, Setting(key, "custom", doc, parse=parse, default_doc=default_doc))


def settings_of(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Setting]]:
    """The declared fields of a settings dataclass, in order (fields without a declaration are not config)."""
    for f in dataclasses.fields(cls):
        if "setting" in f.metadata:
            yield f, f.metadata["setting"]


def all_settings(cls: type) -> Iterator[Setting]:
    """Every declaration under ``cls``, nested sections included, in order."""
    for f, setting in settings_of(cls):
        yield setting
        if setting.kind == "section":
            yield from all_settings(type(field_default(f)))


def field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()  # type: ignore[operator]  # mypy does not narrow the MISSING sentinel
    return MISSING
