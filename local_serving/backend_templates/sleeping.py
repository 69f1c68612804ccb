"""Triton python-backend model that sleeps before echoing its input: a deliberately slow model for alert tests.

It serves one request batch at a time, so under concurrent load requests wait in Triton's queue and
nv_inference_queue_duration_us grows, as it would for an overloaded GPU model.
"""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Sleeps ``sleep_ms`` (a config parameter) per execution."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.sleep_s = float(config["parameters"]["sleep_ms"]["string_value"]) / 1000.0
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        time.sleep(self.sleep_s)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, data)]))
        return responses
