"""The Triton release the pipeline builds for: the serving image, the TensorRT container that builds its engines,
and the TensorRT version every plan must come from. The program's pins (components/versions.py) import these."""

from __future__ import annotations

# Triton and the TensorRT container that builds its engines must share the same YY.MM release:
# a plan is only loadable by the exact TensorRT version that built it.
TRITON_RELEASE = "26.07"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_IMAGE = f"nvcr.io/nvidia/tensorrt:{TRITON_RELEASE}-py3"
# TensorRT shipped in the images above (NGC TensorRT container 26.07 = TensorRT 11.1.0.106). Engines whose
# manifest records another version are refused before they reach the repository.
TRITON_TENSORRT_VERSION = "11.1.0"
