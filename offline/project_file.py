"""The ``config:`` block of Pulumi.yaml, written from the setting declarations (components/settings.py).

``python -m offline.project_file`` rewrites Pulumi.yaml below its ``config:`` line; a test fails when the file
differs from what the declarations say, so a documented default, range or choice cannot drift from the code.
The block is what the real CLI validates: every object key has ``default: {}``, ``models`` has ``items``, and
secrets are listed in a comment (the CLI treats a declared key without a default as required, and refuses a
plaintext default for a secret).
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.settings import PlatformConfig
from model_pipeline.entry import ModelEntry
from model_pipeline.schema import Setting, all_settings, field_default, settings_of

PROJECT_FILE = Path(__file__).resolve().parents[1] / "Pulumi.yaml"
_WIDTH = 116
_INTRO = (
    "  # Written by `python -m offline.project_file` from the declarations in components/settings.py: edit those.\n"
    "  # Stack files set only what differs. Secrets are set with `pulumi config set --secret <key> <value>`.\n"
)


def config_block() -> str:
    """Everything from ``config:`` to the end of Pulumi.yaml."""
    lines = ["config:\n", _INTRO]
    for f, setting in settings_of(PlatformConfig):
        if setting.kind == "section":
            cls = type(field_default(f))
            lines.append(_entry(setting.key, "object", "{}", _describe(cls, field_default(f))))
        else:  # models
            entry = _entry(setting.key, "array", None, _models_doc())
            lines.append(entry.replace("    type: array\n", "    type: array\n    items:\n      type: object\n"))
    lines.append(_secrets_comment())
    return "".join(lines)


def render(text: str) -> str:
    """``text`` (a Pulumi.yaml) with its config block as the declarations say."""
    head, found, _ = text.partition("\nconfig:\n")
    if not found:
        raise ValueError("Pulumi.yaml has no top-level config: block")
    return head + "\n" + config_block()


def _entry(key: str, kind: str, default: str | None, description: str) -> str:
    body = textwrap.fill(description, _WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
    text = f"  {key}:\n    type: {kind}\n"
    if default is not None:
        text += f"    default: {default}\n"
    elif key == "models":
        text += "    default:\n      - name: mnist\n"
    return text + f"    description: >-\n{body}\n"


def _describe(cls: type, base: Any) -> str:
    summary = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
    return f"{summary} Keys: {', '.join(_keys(cls, base))}."


def _models_doc() -> str:
    return (
        "Served models, default [{name: mnist}]: a built-in by name (mnist, resnet50), or a model the team brings "
        "(source). Tensors, the batch dimension and dynamic axes are derived from the model (model_pipeline/entry.py, "
        f"README 'Bring your own model'). Keys: {', '.join(_keys(ModelEntry, None))}."
    )


def _keys(cls: type, base: Any) -> Iterator[str]:
    """One phrase per key of ``cls``; dotted keys grouped under their object, nested sections in braces."""
    groups: dict[str, list[str]] = {}
    for f, setting in settings_of(cls):
        if setting.secret:
            continue
        default = getattr(base, f.name) if base is not None else field_default(f)
        outer, _, inner = setting.key.rpartition(".")
        if setting.kind == "section":
            inside = ", ".join(_keys(type(default), default))
            phrase = f"{setting.key} {{{setting.doc + ': ' if setting.doc else ''}{inside}}}"
        else:
            phrase = _phrase(inner, setting, default)
        groups.setdefault(outer, []).append(phrase)
    for outer, phrases in groups.items():
        if outer:
            yield f"{outer} {{{', '.join(phrases)}}}"
        else:
            yield from phrases


def _phrase(key: str, setting: Setting, default: Any) -> str:
    facts = [setting.doc]
    if setting.choices and setting.kind == "string":
        facts.append(" | ".join(setting.choices))
    elif setting.choices:
        facts.append("among " + ", ".join(setting.choices))
    if setting.low is not None:
        facts.append(f"{_show(setting.low)}-{_show(setting.high)}")
    if setting.required is not None:
        facts.append("required")
    shown = setting.default_doc if setting.default_doc is not None else _show(default)
    if shown:
        facts.append(f"default {shown}")
    return f"{key} ({'; '.join(x for x in facts if x)})"


def _show(value: Any) -> str:
    if value is None or value == "" or value == ():
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value):
        shown = (f"{s.key}: {_show(getattr(value, f.name))}" for f, s in settings_of(type(value)))
        return "{" + ", ".join(shown) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _secrets_comment() -> str:
    lines = [
        "# Secrets are not declared above: each is optional and read only as a secret",
        "# (`pulumi config set --secret <key> <value>`; the program refuses a plaintext value):",
    ]
    lines += [f"#   {s.key}: {s.doc}" for s in all_settings(PlatformConfig) if s.secret]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    del argv
    text = PROJECT_FILE.read_text()
    updated = render(text)
    if updated != text:
        PROJECT_FILE.write_text(updated)
        print(f"rewrote the config block of {PROJECT_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
