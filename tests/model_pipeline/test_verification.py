"""Verification inputs at the profile's shapes, ONNX Runtime's reference outputs, golden.npz, and comparing outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_pipeline.errors import ModelValidationError
from model_pipeline.specs import Bounds, ModelSpec, TensorSpec, Tolerance
from model_pipeline.verification import (
    UNBOUNDED_AXIS,
    Difference,
    GoldenCase,
    check_against,
    check_samples,
    differences,
    load_samples,
    onnx_session,
    read_golden,
    reference_cases,
    run_onnx,
    verification_inputs,
    write_golden,
)
from tests._pipeline_helpers import tiny_onnx, tiny_spec


def _mixed(**changes: Any) -> ModelSpec:
    """One input of each kind a brought model may take, batch 1/2/4 and a dynamic seq axis of 3/5/7."""
    spec = ModelSpec(
        name="mixed",
        inputs=(
            TensorSpec("ids", "INT64", (-1,), ("seq",)),
            TensorSpec("mask", "BOOL", (-1,), ("seq",)),
            TensorSpec("scale", "FP16", (2,)),
            TensorSpec("pixels", "UINT8", (2, 2)),
            TensorSpec("offset", "INT8", (1,)),
            TensorSpec("features", "FP32", (3,)),
            TensorSpec("text", "STRING", (1,)),
        ),
        outputs=(TensorSpec("scores", "FP32", (2,)),),
        batch=Bounds(1, 2, 4),
        axes=(("seq", Bounds(3, 5, 7)),),
    )
    return dataclasses.replace(spec, **changes)


# --- generated inputs ----------------------------------------------------------------------------------


def test_generated_inputs_have_each_inputs_data_type() -> None:
    for inputs in verification_inputs(_mixed()).values():
        assert {name: array.dtype for name, array in inputs.items()} == {
            "ids": np.int64,
            "mask": np.bool_,
            "scale": np.float16,
            "pixels": np.uint8,
            "offset": np.int8,
            "features": np.float32,
            "text": np.object_,
        }
        assert all(isinstance(word, str) for word in inputs["text"].ravel())  # ONNX Runtime would see "b'..'"


def test_generated_inputs_take_the_min_opt_and_max_shapes_of_batch_and_axes() -> None:
    cases = verification_inputs(_mixed())
    assert list(cases) == ["min", "opt", "max"]
    assert [cases[point]["ids"].shape for point in cases] == [(1, 3), (2, 5), (4, 7)]
    assert [cases[point]["pixels"].shape for point in cases] == [(1, 2, 2), (2, 2, 2), (4, 2, 2)]


def test_an_axis_without_bounds_takes_the_verification_sizes() -> None:
    cases = verification_inputs(_mixed(axes=()))
    assert [cases[point]["ids"].shape[1] for point in cases] == UNBOUNDED_AXIS.as_list()


def test_generated_values_stay_in_the_entrys_range() -> None:
    spec = _mixed(value_ranges=(("ids", (100.0, 104.0)), ("features", (-0.5, 0.5))))
    for inputs in verification_inputs(spec).values():
        assert inputs["ids"].min() >= 100 and inputs["ids"].max() <= 104
        assert inputs["features"].min() >= -0.5 and inputs["features"].max() <= 0.5
    ids = np.concatenate([inputs["ids"].ravel() for inputs in verification_inputs(spec).values()])
    assert set(ids.tolist()) == {100, 101, 102, 103, 104}  # both ends included


def test_integers_default_to_small_indices_and_bytes_to_their_full_range() -> None:
    maximum = verification_inputs(_mixed())["max"]
    assert maximum["ids"].min() >= 0 and maximum["ids"].max() <= 9
    assert maximum["pixels"].max() > 9  # UINT8 pixels span 0..255


def test_generated_inputs_are_deterministic() -> None:
    first, again, other = (
        verification_inputs(_mixed()),
        verification_inputs(_mixed()),
        verification_inputs(_mixed(), seed=7),
    )
    for point in first:
        for name in first[point]:
            np.testing.assert_array_equal(first[point][name], again[point][name])
    assert not np.array_equal(first["max"]["features"], other["max"]["features"])


def test_equal_shapes_are_not_repeated() -> None:
    fixed = ModelSpec("fixed", (TensorSpec("x", "FP32", (3,)),), (TensorSpec("y", "FP32", (3,)),), None)
    assert list(verification_inputs(fixed)) == ["min"]
    assert list(verification_inputs(_mixed(batch=Bounds(2, 2, 4), axes=(("seq", Bounds(5, 5, 9)),)))) == ["min", "max"]


# --- samples -------------------------------------------------------------------------------------------


def test_sample_rows_are_repeated_to_fill_each_batch_and_cast_to_the_input_type() -> None:
    rows = np.arange(3 * 16, dtype=np.float64).reshape(3, 1, 4, 4)
    cases = verification_inputs(tiny_spec(), {"input": rows})
    assert [cases[point]["input"].shape[0] for point in cases] == [1, 2, 4]
    biggest = cases["max"]["input"]
    assert biggest.dtype == np.float32
    np.testing.assert_array_equal(biggest, rows[[0, 1, 2, 0]].astype(np.float32))


def test_samples_of_a_model_without_batch_are_used_as_they_are() -> None:
    spec = ModelSpec("fixed", (TensorSpec("x", "FP32", (2, 3)),), (TensorSpec("y", "FP32", (3,)),), None)
    sample = np.ones((2, 3), np.float32)
    cases = verification_inputs(spec, {"x": sample})
    assert list(cases) == ["min"]
    np.testing.assert_array_equal(cases["min"]["x"], sample)


@pytest.mark.parametrize("texts", [np.array([["a"], ["é"]]), np.array([[b"a"], [b"\xc3\xa9"]])])
def test_text_samples_become_str_whether_stored_as_unicode_or_bytes(texts: np.ndarray) -> None:
    spec = ModelSpec("words", (TensorSpec("text", "STRING", (1,)),), (TensorSpec("y", "FP32", (2,)),), Bounds(1, 2, 2))
    cases = verification_inputs(spec, {"text": texts})
    assert cases["min"]["text"].dtype == np.object_
    assert cases["opt"]["text"].tolist() == [["a"], ["é"]]


def test_samples_must_hold_every_input() -> None:
    with pytest.raises(ModelValidationError) as error:
        check_samples(tiny_spec(), {"pixels": np.zeros((2, 1, 4, 4))}, "inputs.npz")
    assert (
        str(error.value)
        == "model 'tiny': samples inputs.npz has no array for the inputs ['input']; it holds ['pixels']"
    )


@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 1, 4, 5), (1, 4, 4)])
def test_samples_must_have_the_inputs_dims(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelValidationError) as error:
        check_samples(tiny_spec(), {"input": np.zeros(shape)}, "inputs.npz")
    assert str(error.value) == (
        f"model 'tiny': samples inputs.npz: 'input' has shape {list(shape)}; the model takes ['batch', 1, 4, 4]"
    )


def test_samples_of_any_length_fit_a_dynamic_axis() -> None:
    check_samples(_mixed(inputs=(TensorSpec("ids", "INT64", (-1,), ("seq",)),)), {"ids": np.zeros((2, 11))}, "s.npz")


def test_an_unreadable_samples_file_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelValidationError, match=r"inputs\.npz is not a readable \.npz"):
        load_samples(path)
    np.savez(path, input=np.ones((2, 1, 4, 4), np.float32))
    assert load_samples(path)["input"].shape == (2, 1, 4, 4)


# --- ONNX Runtime --------------------------------------------------------------------------------------


def test_reference_cases_are_onnx_runtimes_outputs(tmp_path: Path) -> None:
    spec = tiny_spec()
    path = tiny_onnx(tmp_path / "model.onnx", spec)
    inputs = verification_inputs(spec)
    cases = reference_cases(spec, path, inputs)
    assert [case.label for case in cases] == ["min", "opt", "max"]
    session = onnx_session(path)
    for case in cases:
        np.testing.assert_array_equal(case.outputs["logits"], run_onnx(session, case.inputs)["logits"])
        assert case.outputs["logits"].shape == (case.inputs["input"].shape[0], 3)


def test_an_onnx_runtime_failure_names_the_model_and_says_why(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "model.onnx", tiny_spec())
    claims_fp16 = dataclasses.replace(tiny_spec(), inputs=(TensorSpec("input", "FP16", (1, 4, 4)),))
    with pytest.raises(
        ModelValidationError, match=r"model 'tiny': ONNX Runtime cannot run it: .*Unexpected input data type"
    ):
        reference_cases(claims_fp16, path, verification_inputs(claims_fp16))


def test_an_onnx_file_onnx_runtime_cannot_load_names_the_model(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"garbage")
    with pytest.raises(ModelValidationError, match="model 'tiny': ONNX Runtime cannot run it: "):
        reference_cases(tiny_spec(), path, verification_inputs(tiny_spec()))


# --- golden.npz ----------------------------------------------------------------------------------------


def _case(label: str, value: float) -> GoldenCase:
    return GoldenCase(
        label, {"input": np.full((1, 2), value, np.float32)}, {"logits": np.full((1, 3), value, np.float32)}
    )


def test_golden_round_trip_keeps_every_array_in_profile_order(tmp_path: Path) -> None:
    path = write_golden("tiny", [_case("max", 3.0), _case("min", 1.0), _case("opt", 2.0)], tmp_path / "golden.npz")
    with np.load(path) as archive:
        assert sorted(archive.files) == sorted(
            ["model"] + [f"{point}.{way}" for point in ("min", "opt", "max") for way in ("in.input", "out.logits")]
        )
        assert str(archive["model"]) == "tiny"
    cases = read_golden(path)
    assert [case.label for case in cases] == ["min", "opt", "max"]
    for case, value in zip(cases, (1.0, 2.0, 3.0), strict=True):
        np.testing.assert_array_equal(case.inputs["input"], np.full((1, 2), value, np.float32))
        np.testing.assert_array_equal(case.outputs["logits"], np.full((1, 3), value, np.float32))


def test_golden_keeps_any_text_as_str_and_dotted_names(tmp_path: Path) -> None:
    words = np.array([["alpha"], ["héllo wörld"]], dtype=np.object_)
    case = GoldenCase("min", {"text": words}, {"scores.v2": np.zeros((2, 2), np.float32)})
    (read,) = read_golden(write_golden("m", [case], tmp_path / "golden.npz"))
    assert read.inputs["text"].dtype == np.object_
    assert read.inputs["text"].tolist() == [["alpha"], ["héllo wörld"]]
    assert set(read.outputs) == {"scores.v2"}


def test_golden_stores_bytes_text_as_the_str_onnx_runtime_takes(tmp_path: Path) -> None:
    case = GoldenCase("min", {"text": np.array([b"caf\xc3\xa9"], dtype=np.object_)}, {"y": np.zeros(1)})
    (read,) = read_golden(write_golden("m", [case], tmp_path / "golden.npz"))
    assert read.inputs["text"].tolist() == ["café"]


def test_a_golden_file_without_cases_is_refused(tmp_path: Path) -> None:
    path = write_golden("tiny", [], tmp_path / "golden.npz")
    with pytest.raises(ModelValidationError, match="holds no cases"):
        read_golden(path)


# --- comparing outputs ---------------------------------------------------------------------------------


def test_differences_are_the_worst_absolute_and_relative_per_output() -> None:
    expected = {"a": np.array([1.0, 2.0, 4.0]), "b": np.array([10.0])}
    actual = {"a": np.array([1.5, 2.0, 3.0]), "b": np.array([10.0])}
    assert differences(expected, actual) == {"a": Difference(1.0, 0.5), "b": Difference(0.0, 0.0)}


def test_differences_need_every_output_at_its_shape() -> None:
    expected = {"a": np.zeros((2, 3))}
    with pytest.raises(ModelValidationError, match=r"output 'a' is missing, expected shape \[2, 3\]"):
        differences(expected, {})
    with pytest.raises(ModelValidationError, match=r"output 'a' is shape \[3, 2\], expected shape \[2, 3\]"):
        differences(expected, {"a": np.zeros((3, 2))})


def test_string_outputs_count_the_words_that_differ() -> None:
    expected = {"label": np.array([b"cat", b"dog"], dtype=np.object_)}
    assert differences(expected, {"label": np.array([b"cat", b"cow"], dtype=np.object_)})["label"].max_abs == 1


def _cases() -> list[GoldenCase]:
    return [
        GoldenCase("min", {"x": np.zeros((1, 2))}, {"y": np.array([[1.0, 2.0]])}),
        GoldenCase("max", {"x": np.zeros((4, 2))}, {"y": np.ones((4, 2))}),
    ]


def test_check_against_returns_the_worst_difference_over_the_cases() -> None:
    shift = {"min": 0.001, "max": 0.004}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        case = "min" if inputs["x"].shape[0] == 1 else "max"
        reference = next(c for c in _cases() if c.label == case).outputs["y"]
        return {"y": reference + shift[case]}

    worst = check_against("the engine", _cases(), run, Tolerance(0.01, 0.0), "tiny")
    assert worst["y"].max_abs == pytest.approx(0.004)


def test_check_against_names_the_output_and_the_case_out_of_tolerance() -> None:
    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.ones((inputs["x"].shape[0], 2)) + (0.5 if inputs["x"].shape[0] == 4 else 0.0)}

    cases = [_cases()[1]]
    with pytest.raises(ModelValidationError) as error:
        check_against("the engine", cases, run, Tolerance(0.01, 0.01), "tiny")
    assert str(error.value) == (
        "model 'tiny': the engine differs from ONNX Runtime at the max shapes (x [4, 2]): output 'y' max abs diff "
        "0.5 exceeds atol 0.01 + rtol 0.01"
    )


def test_check_against_names_the_output_out_of_tolerance_not_the_largest_difference() -> None:
    # 'large' is off by 10 on 1e6, well within rtol; 'small' is off by 0.01 around 0, beyond atol.
    expected = {"large": np.array([1e6]), "small": np.array([0.0])}
    case = GoldenCase("opt", {"x": np.zeros(1)}, expected)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"large": np.array([1e6 + 10]), "small": np.array([0.01])}

    with pytest.raises(
        ModelValidationError, match=r"at the opt shapes \(x \[1\]\): output 'small' max abs diff 0\.01 "
    ):
        check_against("the engine", [case], run, Tolerance(1e-3, 1e-3), "tiny")


def test_nan_never_matches() -> None:
    case = GoldenCase("min", {"x": np.zeros(1)}, {"y": np.array([1.0])})
    with pytest.raises(ModelValidationError, match="output 'y'"):
        check_against("the engine", [case], lambda inputs: {"y": np.array([np.nan])}, Tolerance(1.0, 1.0), "tiny")
