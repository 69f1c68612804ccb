"""The generic reader: every declared field of a settings dataclass, read from one config object.

Getters record problems instead of raising, so every problem of a stack is reported at once; each names the
full key, the value as written and what is allowed. Keys nobody declared are reported with the closest match.
The program reads its stack configuration with it, and the pipeline its model entries: one reader for both.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model_pipeline import syntax
from model_pipeline.schema import MISSING, Setting, field_default, settings_of

T = TypeVar("T")
Rules = Mapping[type, Callable[[Any, "Section"], Any]]
Parser = Callable[["Section", str, Any], Any]


@dataclass(frozen=True)
class ReadContext:
    """What reading needs beyond the values: the secrets, the folder relative paths start at, the rules."""

    secrets: Mapping[str, Any] = field(default_factory=dict)  # pulumi Outputs, for the program's secret keys
    root: Path = Path(".")
    rules: Rules = field(default_factory=dict)
    parsers: Mapping[str, Parser] = field(default_factory=dict)  # custom keys' parsers, by name


class Section:
    """One config object (``triton``, ``gpu.hami``); getters validate and remember which keys were used."""

    def __init__(self, key: str, raw: Any, problems: list[str], context: ReadContext | None = None) -> None:
        self.key, self.problems, self.context = key, problems, context or ReadContext()
        self._used: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem("", raw, "must be an object")
            raw = {}
        self.raw: dict[str, Any] = raw

    def full(self, name: str) -> str:
        return f"{self.key}.{name}" if name else self.key

    def problem(self, name: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{self.full(name)} ({value!r}) {allowed}")

    def _get(self, name: str) -> Any:
        self._used.add(name)
        return self.raw.get(name)

    def raw_value(self, name: str) -> Any:
        """The value as written, unvalidated (for keys checked by hand)."""
        return self._get(name)

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def string(
        self,
        name: str,
        default: T,
        *,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        allowed: str = "",
    ) -> str | T:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(name, value, "must be a string" + (f": one of {', '.join(choices)}" if choices else ""))
        elif choices and value not in choices:
            self.problem(name, value, f"must be one of {', '.join(choices)}")
        elif pattern is not None and not pattern.match(value):
            self.problem(name, value, f"must be {allowed or 'of the form ' + pattern.pattern}")
        else:
            return value
        return default

    def integer(self, name: str, default: T, *, low: float | None = None, high: float | None = None) -> int | T:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, value, "must be an integer")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(name, value, f"must be {bounds}")
            return default
        return value

    def number(self, name: str, default: T, *, low: float, high: float) -> float | T:
        """A decimal number in [low, high] (e.g. milliseconds); integers are accepted as numbers."""
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]*)?", value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(name, value, "must be a number")
            return default
        if not low <= value <= high:
            self.problem(name, value, f"must be between {low:g} and {high:g}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.problem(name, value, "must be true or false")
            return default
        return value

    def quantity(self, name: str, default: T) -> str | T:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not syntax.QUANTITY.match(value):
            self.problem(name, value, f"must be {syntax.QUANTITY_RULE}")
            return default
        return value

    def str_map(self, name: str, default: Mapping[str, str]) -> dict[str, str]:
        value = self._get(name)
        if value is None:
            return dict(default)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problem(name, value, "must be an object of string values")
            return dict(default)
        return dict(value)

    def str_list(self, name: str, default: tuple[str, ...] = (), choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(name, value, "must be a list of non-empty strings")
            return default
        if choices and any(v not in choices for v in value):
            self.problem(name, value, f"may only contain {', '.join(choices)}")
            return default
        return tuple(value)

    def object_list(self, name: str) -> list[Any]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(name, value, "must be a list")
            return []
        return value

    def section(self, name: str) -> Section:
        return Section(self.full(name), self._get(name), self.problems, self.context)

    def finish(self) -> None:
        """Report keys nobody asked for: usually typos, so suggest the closest allowed key."""
        for unknown in sorted(set(self.raw) - self._used):
            close = difflib.get_close_matches(unknown, sorted(self._used), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(self._used))}"
            self.problems.append(f"{self.full(unknown)} is not a known key; {hint}")


# --------------------------------------------------------------------------------------------------------------
# Reading a settings dataclass


def read(cls: type[T], s: Section, *, base: Any = None, defaults: Mapping[str, Any] | None = None) -> T:
    """``cls`` from section ``s``: each declared field by its kind, defaults from ``base`` (an instance) or the
    field, overridden by ``defaults``; then the section's own rule (``context.rules[cls]``), then unknown keys."""
    nested: dict[str, Section] = {}
    values: dict[str, Any] = {}
    for f, setting in settings_of(cls):
        default = (defaults or {}).get(f.name, getattr(base, f.name) if base is not None else field_default(f))
        *path, key = setting.key.split(".")
        section = s
        for part in path:
            section = nested.setdefault(part, section.section(part))
        values[f.name] = _value(section, key, setting, default)
        if setting.required is not None and not section.has(key):
            section.problem(key, None, "is required" + (f": {setting.required}" if setting.required else ""))
    settings = cls(**{k: v for k, v in values.items() if v is not MISSING})
    rule = s.context.rules.get(cls)
    if rule is not None:
        settings = rule(settings, s)
    for section in nested.values():
        section.finish()
    s.finish()
    return settings


def _value(s: Section, key: str, setting: Setting, default: Any) -> Any:
    kind = setting.kind
    if kind == "string":
        return s.string(key, default, choices=setting.choices, pattern=setting.pattern, allowed=setting.allowed)
    if kind == "integer":
        return s.integer(key, default, low=setting.low, high=setting.high)
    if kind == "number":
        assert setting.low is not None and setting.high is not None
        return s.number(key, default, low=setting.low, high=setting.high)
    if kind == "boolean":
        return s.boolean(key, default)
    if kind == "quantity":
        return s.quantity(key, default)
    if kind == "map":
        return s.str_map(key, default)
    if kind == "list":
        return s.str_list(key, default, setting.choices)
    if kind == "secret":
        return s.context.secrets.get(key)
    if kind == "section":
        return read(type(default), s.section(key), base=default)
    assert kind == "custom" and setting.parse is not None, setting
    return s.context.parsers[setting.parse](s, key, default)
