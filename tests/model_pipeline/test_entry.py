"""The stack's `models` entries: a built-in by name or a brought source, every problem named by its key at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_pipeline.entry import DEFAULT_BATCH, ModelEntry, read_models, record_differences
from model_pipeline.specs import Bounds


def _read(raw: Any, root: Path = Path(".")) -> tuple[tuple[ModelEntry, ...], list[str]]:
    problems: list[str] = []
    return read_models(raw, problems, root), problems


def _one(item: dict[str, Any], root: Path = Path(".")) -> ModelEntry:
    """The entry of a single, valid item."""
    entries, problems = _read([item], root)
    assert problems == []
    return entries[0]


def _problems(item: dict[str, Any], root: Path = Path(".")) -> list[str]:
    return _read([item], root)[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding one brought model file, model.onnx."""
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    return tmp_path


# --- built-in or brought ---------------------------------------------------------------------------------


def test_a_built_in_is_named_and_needs_nothing_else() -> None:
    mnist = _one({"name": "mnist"})
    assert (mnist.builtin, mnist.source) == ("mnist_mlp", "")
    assert _one({"name": "resnet50"}).builtin == "resnet50"


def test_a_stack_without_models_serves_mnist() -> None:
    entries, problems = _read(None)
    assert problems == []
    assert [e.name for e in entries] == ["mnist"]


def test_a_built_in_architecture_may_be_served_under_another_name() -> None:
    digits = _one({"name": "digits", "architecture": "mnist_mlp"})
    assert digits.builtin == "mnist_mlp"


def test_a_name_that_is_not_a_built_in_needs_a_source() -> None:
    assert _problems({"name": "bert"}) == [
        "models[bert].source (None) is required for model 'bert': it is not a built-in (mnist, resnet50)"
    ]


def test_a_brought_model_is_no_built_in_even_under_a_built_in_name(project: Path) -> None:
    entry = _one({"name": "resnet50", "source": "model.onnx"}, project)
    assert (entry.builtin, entry.source) == ("", "model.onnx")


def test_source_and_architecture_together_are_refused(project: Path) -> None:
    assert _problems({"name": "bert", "source": "model.onnx", "architecture": "resnet50"}, project) == [
        "models[bert].architecture ('resnet50') cannot be set with source: a model is built-in or brought"
    ]


def test_a_missing_source_file_is_refused_naming_where_it_was_looked_for(tmp_path: Path) -> None:
    assert _problems({"name": "bert", "source": "models/bert.onnx"}, tmp_path) == [
        f"models[bert].source ('models/bert.onnx') must be an existing file, relative to the project "
        f"(looked for {tmp_path / 'models/bert.onnx'})"
    ]


def test_a_source_with_another_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"keras")
    assert _problems({"name": "bert", "source": "model.h5"}, tmp_path) == [
        "models[bert].source ('model.h5') must be a model file ending in .onnx, .pt2, .pt, or s3://bucket/key"
    ]


@pytest.mark.parametrize("uri", ["s3://models", "s3://models/", "s3://models/bert/", "s3://Not_A_Bucket/bert.onnx"])
def test_a_malformed_s3_uri_is_refused(uri: str) -> None:
    assert _problems({"name": "bert", "source": uri}) == [
        f"models[bert].source ('{uri}') must be s3://BUCKET/KEY naming one object"
    ]


def test_an_s3_object_is_a_source_without_looking_for_a_file(tmp_path: Path) -> None:
    assert _one({"name": "bert", "source": "s3://models/bert/model.pt2"}, tmp_path).source.endswith("model.pt2")


def test_samples_must_be_an_existing_file(project: Path) -> None:
    assert _problems({"name": "bert", "source": "model.onnx", "samples": "inputs.npz"}, project) == [
        f"models[bert].samples ('inputs.npz') must be an existing .npz file (looked for {project / 'inputs.npz'})"
    ]


# --- axes, inputs, precision, keys -----------------------------------------------------------------------


def test_axes_are_read_by_dim_name_sorted() -> None:
    entry = _one(
        {"name": "mnist", "axes": {"width": {"min": 1, "opt": 2, "max": 3}, "x[1]": {"min": 4, "opt": 4, "max": 4}}}
    )
    assert entry.axes == (("width", Bounds(1, 2, 3)), ("x[1]", Bounds(4, 4, 4)))


@pytest.mark.parametrize(
    ("axes", "problem"),
    [
        (
            {"seq": {"min": 1, "max": 8}},
            "models[mnist].axes.seq ({'min': 1, 'max': 8}) must be an object {min, opt, max}",
        ),
        (
            {"seq": {"min": 4, "opt": 2, "max": 8}},
            "models[mnist].axes.seq ({'min': 4, 'opt': 2, 'max': 8}) must satisfy min <= opt <= max",
        ),
        (
            {"seq": {"min": 0, "opt": 2, "max": 8}},
            "models[mnist].axes.seq ({'min': 0, 'opt': 2, 'max': 8}) must give min, opt and max as integers "
            "between 1 and 1048576",
        ),
        ([8], "models[mnist].axes ([8]) must be an object: axis name -> {min, opt, max}"),
        (
            {"a b": {"min": 1, "opt": 1, "max": 1}},
            "models[mnist].axes.a b ({'min': 1, 'opt': 1, 'max': 1}) must be keyed by an ONNX dim name "
            "(or tensor[index] for an unnamed one)",
        ),
    ],
)
def test_axes_that_are_not_min_opt_max_bounds_are_refused(axes: Any, problem: str) -> None:
    assert _problems({"name": "mnist", "axes": axes}) == [problem]


def test_input_ranges_are_read_as_floats() -> None:
    entry = _one({"name": "mnist", "inputs": {"input": {"range": [0, 1]}}})
    assert entry.input_ranges == (("input", (0.0, 1.0)),)


@pytest.mark.parametrize(
    "value",
    [{"range": [2, 1]}, {"range": [1]}, {"range": ["a", 2]}, {"range": [True, 2]}, {"rnge": [0, 1]}, [0, 1]],
)
def test_input_ranges_other_than_low_high_are_refused(value: Any) -> None:
    assert _problems({"name": "mnist", "inputs": {"input": value}}) == [
        f"models[mnist].inputs.input ({value!r}) must be {{range: [low, high]}} with low <= high"
    ]


def test_fp16_on_onnxruntime_is_refused_with_the_reason() -> None:
    assert _problems({"name": "mnist", "precision": "fp16"}) == [
        "models[mnist].precision ('fp16') is not a precision backend onnxruntime has: fp32 (onnxruntime serves "
        "the ONNX as exported; an fp16 engine needs backend tensorrt)"
    ]
    assert _one({"name": "mnist", "backend": "tensorrt", "precision": "fp16"}).precision == "fp16"


def test_an_unknown_key_gets_the_closest_known_one() -> None:
    assert _problems({"name": "mnist", "precison": "fp32"}) == [
        "models[mnist].precison is not a known key; did you mean 'precision'?"
    ]
    assert _problems({"name": "mnist", "batch": {"mx": 4}}) == [
        "models[mnist].batch.mx is not a known key; did you mean 'max'?"
    ]


def test_batch_bounds_out_of_order_are_refused() -> None:
    assert _problems({"name": "mnist", "batch": {"min": 4, "max": 2}}) == [
        "models[mnist].batch ({'min': 4, 'opt': None, 'max': 2}) must satisfy min <= opt <= max"
    ]


def test_every_problem_of_every_entry_is_reported_at_once(tmp_path: Path) -> None:
    entries, problems = _read(
        [
            {"name": "bert"},
            {"name": "mnist", "precison": "fp32"},
            {"name": "tabular", "source": "model.csv", "axes": {"rows": {"min": 2, "opt": 1, "max": 3}}},
            {"name": "digits", "architecture": "mnist_mlp", "precision": "fp16"},
            {"name": "digits"},
        ],
        tmp_path,
    )
    assert len(entries) == 5
    assert [p.split(" ")[0] for p in problems] == [
        "models[bert].source",
        "models[mnist].precison",
        "models[tabular].axes.rows",
        "models[tabular].source",
        "models[digits].precision",
        "models[digits].source",
        "models:",
    ]
    assert problems[-1] == "models: model names ['digits'] are used more than once"


@pytest.mark.parametrize("raw", ["mnist", [], {"name": "mnist"}])
def test_models_must_be_a_non_empty_list(raw: Any) -> None:
    assert _read(raw)[1] == [f"models ({raw!r}) must be a non-empty list of models"]


def test_an_entry_with_an_invalid_name_is_named_by_its_position() -> None:
    assert _problems({"name": "BERT base"}) == [
        "models[0].name ('BERT base') must be a lower-case model name (letters, digits, - and _)"
    ]


def test_entries_without_a_valid_name_are_not_reported_as_repeated_names() -> None:
    _, problems = _read([{"name": "Bert"}, {"name": "bert base", "source": "s3://models/bert.onnx"}])
    assert problems == [
        "models[0].name ('Bert') must be a lower-case model name (letters, digits, - and _)",
        "models[1].name ('bert base') must be a lower-case model name (letters, digits, - and _)",
    ]


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"name": ["mnist"]}, "models[0].name (['mnist']) must be a string"),
        ({"name": "x", "architecture": ["resnet50"]}, "models[x].architecture (['resnet50']) must be a string"),
    ],
)
def test_a_list_where_a_name_belongs_is_reported_not_a_crash(item: dict[str, Any], problem: str) -> None:
    assert _problems(item)[0].startswith(problem)


# --- defaults --------------------------------------------------------------------------------------------


def test_built_ins_bring_their_own_batcher_wait() -> None:
    assert _one({"name": "resnet50"}).max_queue_delay_us == 500
    assert _one({"name": "images", "architecture": "resnet50"}).max_queue_delay_us == 500
    assert _one({"name": "mnist"}).max_queue_delay_us == 100
    assert _one({"name": "resnet50", "maxQueueDelayUs": 250}).max_queue_delay_us == 250


def test_a_brought_model_takes_the_declared_batcher_wait(project: Path) -> None:
    assert _one({"name": "resnet50", "source": "model.onnx"}, project).max_queue_delay_us == 100


def test_batch_defaults_come_from_the_built_in_or_the_default_bounds(project: Path) -> None:
    assert _one({"name": "mnist"}).batch() == Bounds(1, 4, 8)
    assert _one({"name": "resnet50"}).batch() == Bounds(1, 8, 16)
    assert _one({"name": "bert", "source": "model.onnx"}, project).batch() == DEFAULT_BATCH


def test_a_partial_batch_is_completed_around_the_given_bounds() -> None:
    assert _one({"name": "mnist", "batch": {"max": 32}}).batch() == Bounds(1, 4, 32)
    assert _one({"name": "mnist", "batch": {"min": 12}}).batch() == Bounds(12, 12, 12)
    assert _one({"name": "resnet50", "batch": {"max": 4}}).batch() == Bounds(1, 4, 4)
    assert not _one({"name": "mnist"}).batch_given
    assert _one({"name": "mnist", "batch": {"opt": 2}}).batch_given


def test_effective_precision_is_the_backends_first_unless_given() -> None:
    assert _one({"name": "mnist"}).effective_precision == "fp32"
    assert _one({"name": "mnist", "backend": "tensorrt"}).effective_precision == "fp16"
    assert _one({"name": "mnist", "backend": "tensorrt", "precision": "fp32"}).effective_precision == "fp32"


# --- record ----------------------------------------------------------------------------------------------


def test_record_states_every_stack_key_with_its_effective_value() -> None:
    entry = _one(
        {
            "name": "resnet50",
            "backend": "tensorrt",
            "batch": {"max": 32},
            "axes": {"side": {"min": 64, "opt": 224, "max": 512}},
            "inputs": {"input": {"range": [0, 1]}},
            "tolerance": {"atol": 0.1},
        }
    )
    assert entry.record() == {
        "name": "resnet50",
        "source": "",
        "architecture": "",
        "backend": "tensorrt",
        "precision": "fp16",
        "batch.min": None,
        "batch.opt": None,
        "batch.max": 32,
        "axes": {"side": [64, 224, 512]},
        "inputs": {"input": [0.0, 1.0]},
        "samples": "",
        "tolerance.atol": 0.1,
        "tolerance.rtol": None,
        "maxQueueDelayUs": 500,
        "instances": 1,
    }


def test_a_record_read_back_from_the_manifest_shows_no_difference() -> None:
    entry = _one(
        {"name": "mnist", "axes": {"w": {"min": 1, "opt": 2, "max": 3}}, "inputs": {"input": {"range": [0, 1]}}}
    )
    from_manifest = json.loads(json.dumps(entry.record()))
    assert record_differences(from_manifest, entry.record()) == []


def test_record_differences_name_each_changed_key_with_both_values() -> None:
    built = _one({"name": "mnist"}).record()
    wanted = _one({"name": "mnist", "backend": "tensorrt", "batch": {"max": 16}}).record()
    assert record_differences(built, wanted) == [
        ("backend", "onnxruntime", "tensorrt"),
        ("precision", "fp32", "fp16"),
        ("batch.max", None, 16),
    ]


def test_a_key_the_build_did_not_record_is_a_difference() -> None:
    wanted = _one({"name": "mnist"}).record()
    built = {k: v for k, v in wanted.items() if k != "instances"}
    assert record_differences(built, wanted) == [("instances", None, 1)]
