#!/usr/bin/env python3
"""Readiness and liveness probe of a Triton server serving the OANet repository.

Why not Triton's own endpoints: when the Python-backend stub process of a model dies (OOM
kill, segfault in a native library), Triton does not restart it, and `/v2/health/ready`,
`/v2/models/<m>/ready` and `/v2/health/live` all keep answering 200 while every request to
that model fails with "Stub process '<model>_0_0' is not healthy" (measured on Triton 2.51,
`tests/deploy/test_triton_probe.py` repeats it). Only a request that reaches the stub shows it.

So this probe, besides the per-model readiness endpoints, sends one request to each
Python-backend model, chosen to leave no trace in the product's own signals:

* `oanet_image_encoder`: one black ROI, a normal inference (counts in nv_inference_count of
  the encoder only, never in the ensemble's);
* `oanet_fusion`: one request that the model itself must refuse (a number whose missing-mask
  bit says "missing"). Only a live stub can answer with that refusal; the fusion maths and
  its gate metric (`oanet_gate_deactivations_total`) do not run. It counts one
  `nv_inference_request_failure{model="oanet_fusion"}` per probe: alert on the ensemble's
  failures (`model="oanet"`), which probes never touch.

Modes:
  ready  every model ready and both requests answered as expected within --timeout.
  live   the server answers /v2/health/live, and no model has *definitely* failed: a probe
         request that times out passes (an overloaded server is not restarted; readiness
         takes it out of the Service instead), an answer saying the stub is unhealthy or the
         model is unavailable fails (Triton will not recover by itself: restart the pod).

Exit status 0 = pass, 1 = fail (one line on stdout says why). Standard library only: it runs
with the NGC image's python3 as a Kubernetes exec probe and in the compose healthcheck.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import urllib.error
import urllib.request

ENSEMBLE, ENCODER, FUSION = "oanet", "oanet_image_encoder", "oanet_fusion"
MODELS = (ENSEMBLE, ENCODER, FUSION)
# What oanet_fusion answers to the probe's request (serving.check_fusion_request).
FUSION_REFUSAL = "says missing"


class Timeout(Exception):
    """The server did not answer in time (overload, not a verdict on its health)."""


def _call(url: str, timeout: float, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (TimeoutError, socket.timeout) as exc:
        raise Timeout(str(exc)) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise Timeout(str(exc.reason)) from None
        raise ConnectionError(str(exc.reason)) from None


def _input(meta: dict, name: str) -> dict:
    for tensor in meta["inputs"]:
        if tensor["name"] == name:
            return tensor
    raise ValueError(f"{meta.get('name')} has no input {name}")


def _zeros(tensor: dict, value: object) -> dict:
    shape = [1, *tensor["shape"][1:]]  # batch of one; dims after the batch axis are fixed
    count = 1
    for dim in shape:
        count *= int(dim)
    return {"name": tensor["name"], "datatype": tensor["datatype"], "shape": shape, "data": [value] * count}


def _metadata(base: str, model: str, timeout: float) -> dict:
    status, body = _call(f"{base}/v2/models/{model}", timeout)
    if status != 200:
        raise RuntimeError(f"metadata of {model}: HTTP {status} {body[:200]!r}")
    return json.loads(body)


def encoder_request(meta: dict) -> dict:
    return {"inputs": [_zeros(_input(meta, "OBJECT_ROI"), 0)]}


def fusion_request(meta: dict) -> dict:
    """Present-looking values with every mask bit set: the model must refuse it (INVALID_ARG)."""
    inputs = []
    for tensor in meta["inputs"]:
        value = True if tensor["datatype"] == "BOOL" else 0
        inputs.append(_zeros(tensor, value))
    return {"inputs": inputs}


def check(base: str, mode: str, timeout: float) -> str | None:
    """None when the probe passes, else why it fails."""
    status, body = _call(f"{base}/v2/health/live", timeout)
    if status != 200:
        return f"/v2/health/live answered {status}"
    if mode == "ready":
        for model in MODELS:
            status, _ = _call(f"{base}/v2/models/{model}/ready", timeout)
            if status != 200:
                return f"model {model} is not ready (HTTP {status})"
    try:
        status, body = _call(f"{base}/v2/models/{ENCODER}/infer", timeout, encoder_request(_metadata(base, ENCODER, timeout)))
        if status != 200:
            return f"{ENCODER} failed a probe inference: HTTP {status} {_error(body)}"
        status, body = _call(f"{base}/v2/models/{FUSION}/infer", timeout, fusion_request(_metadata(base, FUSION, timeout)))
        if status != 400 or FUSION_REFUSAL not in _error(body):
            return f"{FUSION} did not answer the probe from its stub: HTTP {status} {_error(body)}"
    except Timeout as exc:
        return None if mode == "live" else f"probe inference timed out after {timeout:g} s ({exc})"
    return None


def _error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("ready", "live"))
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Triton HTTP endpoint (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per HTTP call (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        problem = check(args.url.rstrip("/"), args.mode, args.timeout)
    except (ConnectionError, RuntimeError, ValueError, KeyError, Timeout) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    print(f"{args.mode}: {'ok' if problem is None else problem}")
    return 0 if problem is None else 1


if __name__ == "__main__":
    sys.exit(main())
