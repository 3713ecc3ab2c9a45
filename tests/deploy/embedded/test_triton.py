"""The real tritonserver of the embedded stack answers gRPC and exposes metrics."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

pytestmark = pytest.mark.slow


def test_triton_answers_a_grpc_request(embedded_stack, settings):
    client = grpcclient.InferenceServerClient(**settings.triton.grpc_client_kwargs())
    assert client.is_server_ready()
    assert client.is_model_ready("echo")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = grpcclient.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("echo", [tensor])
    np.testing.assert_array_equal(result.as_numpy("Y"), 2 * x)
    client.close()


def test_triton_metrics_are_served_on_loopback(embedded_stack):
    url = f"http://127.0.0.1:{embedded_stack.settings.triton_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    assert 'nv_inference_request_success{model="echo"' in body
