"""The stack's `models` entries: the pipeline owns their schema, and the program imports it.

An entry either names a built-in model (``mnist``, ``resnet50``) or says where a brought model comes from
(``source``: a ``.onnx``, ``.pt2`` or ``.pt`` file relative to the project, or ``s3://bucket/key``). Each key is
declared once on :class:`ModelEntry`; the program validates the stack with it (``components/config_reader.py``),
``python -m model_pipeline build --stack`` reads the same entries with it, and Pulumi.yaml documents it.
What only the model itself can tell (its tensors, whether it has a batch dimension, its dynamic axes) is derived
from its graph by :mod:`model_pipeline.derive`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_pipeline import syntax
from model_pipeline.errors import SpecError
from model_pipeline.schema import choice, custom, integer, number, settings_of, text
from model_pipeline.schema_reader import ReadContext, Section, read
from model_pipeline.sources import BUILTIN_BY_ARCHITECTURE, BUILTINS, SOURCE_SUFFIXES, is_s3_uri
from model_pipeline.specs import BACKENDS, PRECISIONS, PRECISIONS_BY_BACKEND, Bounds

DEFAULT_MODELS: tuple[dict[str, Any], ...] = ({"name": "mnist"},)  # a stack that lists no models
DEFAULT_BATCH = Bounds(1, 4, 8)  # a brought model with a batch dimension whose entry gives no batch
BOUND_LIMIT = 1 << 20
_AXIS_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*(\[[0-9]+\])?$")


def _architectures() -> tuple[str, ...]:
    return tuple(sorted({b.architecture for b in BUILTINS.values()}))


@dataclass(frozen=True)
class ModelEntry:
    """One served model: a built-in by name, or a model the team brings (source)."""

    name: str = text(
        "name", "", "Triton's model name", pattern=syntax.MODEL_NAME, allowed=syntax.MODEL_NAME_RULE, required=""
    )
    source: str = text(
        "source",
        "",
        "a brought model: a .onnx, .pt2 (torch.export) or .pt (TorchScript) file relative to the project, or "
        "s3://bucket/key",
        default_doc="none: a built-in model (mnist, resnet50)",
    )
    architecture: str = choice("architecture", "", _architectures(), "a built-in architecture under another name")
    backend: str = choice("backend", "onnxruntime", BACKENDS, "Triton backend")
    precision: str = choice(
        "precision", "", PRECISIONS, "the engine's precision", default_doc="fp16 on tensorrt, fp32 on onnxruntime"
    )
    batch_min: int | None = integer("batch.min", None, 1, BOUND_LIMIT, "smallest batch", default_doc="1")
    batch_opt: int | None = integer("batch.opt", None, 1, BOUND_LIMIT, "batch the engine is tuned for")
    batch_max: int | None = integer(
        "batch.max", None, 1, BOUND_LIMIT, "largest batch: max_batch_size", default_doc="8; refused without a batch dim"
    )
    axes: tuple[tuple[str, Bounds], ...] = custom(
        "axes", (), "{min, opt, max} of each dynamic axis other than the batch, by its ONNX dim name", "axes"
    )
    input_ranges: tuple[tuple[str, tuple[float, float]], ...] = custom(
        "inputs", (), "per input name, {range: [low, high]} of generated verification inputs", "input_ranges"
    )
    samples: str = text("samples", "", "an .npz of real inputs, one array per input name (relative to the project)")
    atol: float | None = number("tolerance.atol", None, 0, 1e6, "engine vs ONNX Runtime", default_doc="by precision")
    rtol: float | None = number("tolerance.rtol", None, 0, 1e6, "engine vs ONNX Runtime", default_doc="by precision")
    max_queue_delay_us: int = integer(
        "maxQueueDelayUs", 100, 0, 1_000_000, "dynamic batcher's wait", default_doc="100 (resnet50: 500)"
    )
    instances: int = integer("instances", 1, 1, 16, "instances per Triton pod")

    @property
    def builtin(self) -> str:
        """The built-in architecture this entry serves, or "" for a brought model."""
        if self.source:
            return ""
        return self.architecture or (BUILTINS[self.name].architecture if self.name in BUILTINS else "")

    @property
    def batch_given(self) -> bool:
        return (self.batch_min, self.batch_opt, self.batch_max) != (None, None, None)

    def batch(self) -> Bounds:
        """The batch bounds: the entry's, the missing parts from the built-in's (or the default) profile."""
        builtin = BUILTIN_BY_ARCHITECTURE.get(self.builtin)
        default = builtin.batch if builtin else DEFAULT_BATCH
        low = self.batch_min or default.min
        high = self.batch_max or max(default.max, low)
        opt = self.batch_opt or min(max(default.opt, low), high)
        return Bounds(low, opt, high)

    @property
    def effective_precision(self) -> str:
        """The precision asked for, else the backend's first: fp16 on TensorRT, the exported fp32 on ONNX Runtime."""
        return self.precision or PRECISIONS_BY_BACKEND.get(self.backend, PRECISIONS)[0]

    def record(self) -> dict[str, Any]:
        """The entry as its stack keys say it, defaults included: what the manifest records and the program
        compares, key by key, to tell a stale build."""
        values: dict[str, Any] = {}
        for f, setting in settings_of(ModelEntry):
            value = getattr(self, f.name)
            if setting.parse is not None:
                value = {name: list(v.as_list() if isinstance(v, Bounds) else v) for name, v in value}
            values[setting.key] = value
        values["precision"] = self.effective_precision
        return values


def record_differences(built: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, built, wanted)`` for each stack key whose value in the build is not the stack's."""
    return [(key, built.get(key), value) for key, value in wanted.items() if built.get(key) != value]


# ---------------------------------------------------------------------------------------------------------------
# Reading: the same reader and the same problems for the program and the pipeline


def _bounds(s: Section, name: str, value: Any) -> Bounds | None:
    if not isinstance(value, dict) or set(value) != {"min", "opt", "max"}:
        s.problem(name, value, "must be an object {min, opt, max}")
        return None
    parts = [value[k] for k in ("min", "opt", "max")]
    if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= BOUND_LIMIT for p in parts):
        s.problem(name, value, f"must give min, opt and max as integers between 1 and {BOUND_LIMIT}")
        return None
    if not parts[0] <= parts[1] <= parts[2]:
        s.problem(name, value, "must satisfy min <= opt <= max")
        return None
    return Bounds(*parts)


def _axes(s: Section, key: str, default: Any) -> tuple[tuple[str, Bounds], ...]:
    raw = s.raw_value(key)
    if raw is None:
        return default
    if not isinstance(raw, dict):
        s.problem(key, raw, "must be an object: axis name -> {min, opt, max}")
        return default
    axes = []
    for name, value in raw.items():
        if not isinstance(name, str) or not _AXIS_KEY.match(name):
            s.problem(f"{key}.{name}", value, "must be keyed by an ONNX dim name (or tensor[index] for an unnamed one)")
            continue
        bounds = _bounds(s, f"{key}.{name}", value)
        if bounds is not None:
            axes.append((name, bounds))
    return tuple(sorted(axes))


def _input_ranges(s: Section, key: str, default: Any) -> tuple[tuple[str, tuple[float, float]], ...]:
    raw = s.raw_value(key)
    if raw is None:
        return default
    if not isinstance(raw, dict):
        s.problem(key, raw, "must be an object: input name -> {range: [low, high]}")
        return default
    ranges = []
    for name, value in raw.items():
        bounds = value.get("range") if isinstance(value, dict) and set(value) == {"range"} else None
        numbers = isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)
        if not numbers or bounds[0] > bounds[1]:  # type: ignore[index]
            s.problem(f"{key}.{name}", value, "must be {range: [low, high]} with low <= high")
            continue
        ranges.append((str(name), (float(bounds[0]), float(bounds[1]))))  # type: ignore[index]
    return tuple(sorted(ranges))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(entry: ModelEntry, s: Section) -> ModelEntry:
    """What no single key can say: a built-in or a source, the backend's precisions, files that exist."""
    root = s.context.root
    if entry.source and entry.architecture:
        s.problem("architecture", entry.architecture, "cannot be set with source: a model is built-in or brought")
    if not entry.source and not entry.builtin and entry.name:
        builtins = ", ".join(sorted(BUILTINS))
        s.problem("source", None, f"is required for model {entry.name!r}: it is not a built-in ({builtins})")
    if entry.source:
        _check_source(s, entry.source, root)
    if entry.samples and not (root / entry.samples).is_file():
        s.problem("samples", entry.samples, f"must be an existing .npz file (looked for {root / entry.samples})")
    allowed = PRECISIONS_BY_BACKEND.get(entry.backend, PRECISIONS)
    if entry.precision and entry.precision not in allowed:
        s.problem(
            "precision",
            entry.precision,
            f"is not a precision backend {entry.backend} has: {', '.join(allowed)} (onnxruntime serves the ONNX "
            "as exported; an fp16 engine needs backend tensorrt)",
        )
    try:
        entry.batch()
    except SpecError:
        given = {"min": entry.batch_min, "opt": entry.batch_opt, "max": entry.batch_max}
        s.problem("batch", given, "must satisfy min <= opt <= max")
    return entry


def _check_source(s: Section, source: str, root: Path) -> None:
    if is_s3_uri(source):
        if not re.match(r"^s3://[^/]+/.+[^/]$", source) or not syntax.is_bucket_name(source[5:].split("/")[0]):
            s.problem("source", source, "must be s3://BUCKET/KEY naming one object")
        return
    suffix = Path(source).suffix
    if suffix not in SOURCE_SUFFIXES:
        s.problem("source", source, f"must be a model file ending in {', '.join(SOURCE_SUFFIXES)}, or s3://bucket/key")
    elif not (root / source).is_file():
        s.problem("source", source, f"must be an existing file, relative to the project (looked for {root / source})")


def _defaults(item: Any) -> dict[str, Any]:
    """A built-in's own defaults (its batcher's wait); a brought model takes the declared ones."""
    if not isinstance(item, dict) or item.get("source"):
        return {}
    # Not validated yet: a list here is reported by the reader, and cannot be looked up (unhashable).
    name, architecture = item.get("name"), item.get("architecture")
    builtin = BUILTINS.get(name if isinstance(name, str) else "") or BUILTIN_BY_ARCHITECTURE.get(
        architecture if isinstance(architecture, str) else ""
    )
    return {"max_queue_delay_us": builtin.max_queue_delay_us} if builtin else {}


def read_models(raw: Any, problems: list[str], root: Path, key: str = "models") -> tuple[ModelEntry, ...]:
    """The stack's model entries; each problem is appended to ``problems`` naming ``models[<name>].<key>``."""
    if raw is None:
        raw = [dict(m) for m in DEFAULT_MODELS]
    if not isinstance(raw, list) or not raw:
        problems.append(f"{key} ({raw!r}) must be a non-empty list of models")
        return ()
    context = ReadContext(root=root, rules={ModelEntry: _check}, parsers={"axes": _axes, "input_ranges": _input_ranges})
    entries = []
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        label = name if isinstance(name, str) and syntax.MODEL_NAME.match(name) else str(index)
        entries.append(read(ModelEntry, Section(f"{key}[{label}]", item, problems, context), defaults=_defaults(item)))
    names = [e.name for e in entries]
    repeated = sorted({n for n in names if n and names.count(n) > 1})  # "": a name already reported
    if repeated:
        problems.append(f"{key}: model names {repeated} are used more than once")
    return tuple(entries)
