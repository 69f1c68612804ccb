"""What the load step sends each model, and the answers it expects from it.

Inputs are real data where the model's one FP32 input says what it takes: handwritten digits for [1,28,28] /
[784] (scikit-learn's digits upscaled like MNIST, with labels, so accuracy is reported), scikit-learn's sample
photographs for [3,H,W] (ImageNet-normalized crops). Every other model is driven with its golden.npz inputs: the
entry's samples, else inputs generated at the profile's min, opt and max shapes, whatever their number, data
types and dynamic axes. The reference is ONNX Runtime's own answer on the same inputs, for every output.

Arrays are held in the shapes Triton's clients see: a tensor declared with ``reshape`` (a label that is only the
batch, [N] in the model) travels as the config's dims ([N, 1]), and Triton reshapes it for the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import triton_to_np_dtype

from local_serving.errors import LocalServingError
from local_serving.wrappers import SourceModel

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
DIGIT_DIMS = ((1, 28, 28), (784,))

Arrays = dict[str, np.ndarray]
Cases = list[tuple[Arrays, np.ndarray | None]]  # inputs in the model's shapes, with labels where known


@dataclass(frozen=True)
class Pool:
    """Inputs of one shape and the reference outputs for them; row i of every array belongs together.

    For a model without a batch dimension the whole pool is one request.
    """

    inputs: Arrays
    reference: Arrays
    labels: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass(frozen=True)
class Workload:
    """Requests for one model: pools of inputs (one per shape), their Triton data types, the expected answers."""

    model: str
    pools: tuple[Pool, ...]
    datatypes: Mapping[str, str]  # per input, as tritonclient names it ("FP32", "INT64", "BOOL", "BYTES")
    batched: bool = True
    source: str = ""
    reference_name: str = "ONNX Runtime"

    @property
    def outputs(self) -> list[str]:
        return list(self.pools[0].reference)


def echo_workload(model: str, input_name: str, output_name: str, inputs: np.ndarray) -> Workload:
    """FP32 inputs [N, ...] a model answers with themselves (the sleeping model)."""
    pool = Pool({input_name: inputs}, {output_name: inputs})
    return Workload(model, (pool,), {input_name: "FP32"}, source="echo", reference_name="its input (echo)")


def workload_for(model: SourceModel) -> Workload:
    """Real or golden inputs for every input of ``model``, with ONNX Runtime's outputs on them as the reference."""
    cases, source = _model_inputs(model)
    session = _session(model.onnx_path)
    pools = tuple(_pool(model.config, session, feeds, labels) for feeds, labels in cases)
    return Workload(model.name, pools, input_datatypes(model.config), model.config.max_batch_size > 0, source)


def _pool(config: mc.ModelConfig, session: Any, feeds: Arrays, labels: np.ndarray | None) -> Pool:
    """One case and ONNX Runtime's outputs for it, in the shapes clients see."""
    batched = config.max_batch_size > 0
    reference = _run(session, feeds, [tensor.name for tensor in config.output], batched)
    return Pool(_client_arrays(config.input, feeds, batched), _client_arrays(config.output, reference, batched), labels)


def _model_inputs(model: SourceModel) -> tuple[Cases, str]:
    """The cases of inputs for ``model`` and where they came from."""
    real = _real_inputs(model.config)
    if real is not None:
        return real
    if model.golden_path is None:
        dims = {tensor.name: list(tensor.dims) for tensor in model.config.input}
        raise LocalServingError(f"model {model.name}: no real inputs for {dims} and no golden.npz")
    from model_pipeline.errors import PipelineError
    from model_pipeline.verification import read_golden

    try:
        cases = read_golden(model.golden_path)
    except (OSError, ValueError, KeyError, PipelineError) as error:
        raise LocalServingError(
            f"model {model.name}: {model.golden_path} is not a readable golden file ({error})"
        ) from error
    missing = sorted({t.name for t in model.config.input} - set(cases[0].inputs))
    if missing:
        raise LocalServingError(f"model {model.name}: {model.golden_path} holds no inputs {missing}")
    dtypes = {t.name: _numpy_type(t.data_type) for t in model.config.input}
    inputs: Cases = [
        ({name: case.inputs[name].astype(dtype) for name, dtype in dtypes.items()}, None) for case in cases
    ]
    return inputs, str(model.golden_path)


def _real_inputs(config: mc.ModelConfig) -> tuple[Cases, str] | None:
    """Digits or photographs for a batched model whose one input is FP32 [1,28,28], [784] or [3,H,W]."""
    if len(config.input) != 1 or config.max_batch_size < 1:
        return None
    tensor = config.input[0]
    dims = tuple(tensor.dims)
    if tensor.data_type != mc.TYPE_FP32 or tensor.HasField("reshape"):
        return None
    if dims in DIGIT_DIMS:
        images, labels = digits_inputs()
        return [({tensor.name: images.reshape((len(images), *dims))}, labels)], "scikit-learn digits (held-out split)"
    if len(dims) == 3 and dims[0] == 3 and min(dims) > 0:
        return [({tensor.name: photo_inputs(dims[1], dims[2])}, None)], "scikit-learn sample photographs"
    return None


def digits_inputs(count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Held-out handwritten digits as MNIST-normalized float32 [N,1,28,28] and their labels."""
    from model_pipeline.mnist_data import sklearn_digits_as_mnist

    data = sklearn_digits_as_mnist("local serving load step")
    return data.test_images[:count], data.test_labels[:count]


def photo_inputs(height: int, width: int, count: int = 16, seed: int = 0) -> np.ndarray:
    """Random crops of scikit-learn's sample photographs, resized and ImageNet-normalized: float32 [N,3,H,W]."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[top : top + side, left : left + side].astype(np.float32) / 255.0
        resized = zoom(crop, (height / side, width / side, 1), order=1)[:height, :width]
        crops.append((resized.transpose(2, 0, 1) - IMAGENET_MEAN) / IMAGENET_STD)
    return np.stack(crops).astype(np.float32)


def onnxruntime_outputs(onnx_path: Path, feeds: Mapping[str, np.ndarray], outputs: list[str], batched: bool) -> Arrays:
    """ONNX Runtime's own answers for ``feeds`` (the model's shapes), computed here, outside Triton."""
    return _run(_session(onnx_path), feeds, outputs, batched)


def _session(onnx_path: Path) -> Any:  # onnxruntime ships no type hints
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _run(session: Any, feeds: Mapping[str, np.ndarray], outputs: list[str], batched: bool, chunk: int = 64) -> Arrays:
    if not batched:
        return dict(zip(outputs, session.run(outputs, dict(feeds)), strict=True))
    rows = len(next(iter(feeds.values())))
    parts = [session.run(outputs, {k: v[i : i + chunk] for k, v in feeds.items()}) for i in range(0, rows, chunk)]
    return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(outputs)}


def input_datatypes(config: mc.ModelConfig) -> dict[str, str]:
    """Each input's data type as tritonclient names it (Triton's STRING travels as BYTES)."""
    return {tensor.name: _client_datatype(tensor.data_type) for tensor in config.input}


def _client_datatype(data_type: int) -> str:
    name = str(mc.DataType.Name(data_type)).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _numpy_type(data_type: int) -> Any:
    return triton_to_np_dtype(_client_datatype(data_type))


def _client_arrays(tensors: Any, arrays: Mapping[str, np.ndarray], batched: bool) -> Arrays:
    """``arrays`` (the model's shapes) in the shapes and types clients send and receive."""
    by_name = {tensor.name: tensor for tensor in tensors}
    return {
        name: _as_client_values(array.reshape(client_shape(by_name[name], array.shape, batched)))
        for name, array in arrays.items()
    }


def _as_client_values(array: np.ndarray) -> np.ndarray:
    """Strings as the bytes tritonclient returns; every other type as it is."""
    if array.dtype.kind in "OUS":
        return np.array(
            [v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel()], dtype=np.object_
        ).reshape(array.shape)
    return np.ascontiguousarray(array)


def client_shape(tensor: Any, shape: tuple[int, ...], batched: bool) -> tuple[int, ...]:
    """The shape clients see for a tensor the model holds as ``shape``: with ``reshape``, the config's dims,
    each -1 taking the next variable size of the model's shape (what Triton's core does to outputs)."""
    if not tensor.HasField("reshape"):
        return tuple(shape)
    batch, dims = (tuple(shape[:1]), shape[1:]) if batched else ((), shape)
    variable = iter(size for size, declared in zip(dims, tensor.reshape.shape, strict=True) if declared == -1)
    return batch + tuple(next(variable) if declared == -1 else declared for declared in tensor.dims)
