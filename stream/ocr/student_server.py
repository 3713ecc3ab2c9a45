"""The OCR student's network run by Triton (`oanet_ocr_student`) instead of in the OCR process.

On a GPU one served copy of the student, fed by Triton's dynamic batcher, reads the lines of
every worker's OCR processes; on CPU the in-process network (`stream.ocr.student`) stays the
default, since a gRPC round trip costs more than the network does there (docs/benchmarks.md).

Only the network moves. Charset, thresholds and glyph widths come from the student's
`recognizer.json`: the copy here when the worker can read the repository, and then the served
network must be exactly those weights (`served_student` compares the digest the served model
publishes with the local one before a worker starts); else the copy the served model publishes
in its config (`serving.STUDENT_META_KEY`), so a worker beside a remote Triton reads with the
student too. Every request names the version that was checked. A call the server does not
answer (outage, unloaded version, deadline) raises `StudentUnavailable`, and the OCR engine
gives those lines to PaddleOCR: slower, never a wrong or a lost reading, and no frame is
charged for the outage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.ocr.errors import StudentError, StudentUnavailable
from stream.ocr.student import StudentMeta


class StudentNotServed(StudentError):
    """Triton serves no OCR student (a version exported without `--recognizer`)."""
from triton_models.oanet_fusion import core, serving


@dataclass(frozen=True)
class StudentServer:
    """Where to send the student's line batches (picklable: it crosses into the OCR processes)."""

    grpc: dict[str, Any]  # tritonclient.grpc.InferenceServerClient keyword arguments (url, TLS)
    version: int  # the served version whose digest was checked
    digest: str  # `stream.ocr.student.student_digest` of the files it serves
    max_batch: int  # lines per request (the model's max_batch_size): a frame's lines go in chunks
    timeout_s: float = 10.0
    meta: str = ""  # the served student's recognizer.json (JSON text; "" when exported before it was published)
    model: str = core.STUDENT_MODEL
    url: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", str(self.grpc.get("url", "")))


# gRPC statuses of a server that was not reached or did not reply in time.
_NO_ANSWER = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"})


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", lambda: None)() or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def served_student(grpc: dict[str, Any], local_digest: str | None, timeout_s: float = 10.0) -> StudentServer:
    """The served OCR student; with `local_digest`, only if its weights are the local student's.

    StudentNotServed when Triton serves none; StudentError (one line) when it serves another
    one: a worker must not read with the wrong network (another charset or calibration would
    turn its confidences into guesses).
    """
    from tritonclient.grpc import InferenceServerClient, InferenceServerException

    url = grpc.get("url", "")
    client = InferenceServerClient(**grpc)
    try:
        config = client.get_model_config(core.STUDENT_MODEL, as_json=True, client_timeout=timeout_s)["config"]
        params = serving.parameters(config)
        version = int(params.get(serving.STUDENT_VERSION_KEY, "0"))
        max_batch = int(config.get("max_batch_size", 0))
        ready = version > 0 and client.is_model_ready(core.STUDENT_MODEL, str(version), client_timeout=timeout_s)
    except InferenceServerException as exc:
        if str(exc.status()) in _NO_ANSWER:  # not an answer about the model: do not start on a guess
            raise StudentError(f"Triton at {url} did not answer about {core.STUDENT_MODEL}: {_first_line(exc)}"
                               ) from None
        raise StudentNotServed(f"Triton at {url} serves no OCR student {core.STUDENT_MODEL} ({_first_line(exc)}): "
                               "export the version with `oanet export --recognizer DIR`, or set "
                               "worker.student_inference=local") from None
    except ValueError:
        raise StudentError(f"{core.STUDENT_MODEL} on {url} publishes an unreadable "
                           f"{serving.STUDENT_VERSION_KEY} parameter: export it again") from None
    finally:
        client.close()
    served_digest = params.get(serving.STUDENT_DIGEST_KEY, "")
    if local_digest is not None and served_digest != local_digest:
        raise StudentError(f"{core.STUDENT_MODEL} version {version} on {url} serves the student "
                           f"{served_digest or '?'}, not the one this worker reads with ({local_digest}): serve "
                           "the same version's student, or set worker.student_inference=local")
    if not ready:
        raise StudentError(f"{core.STUDENT_MODEL} version {version} on {url} is not ready (see Triton's log)")
    if max_batch < 1:
        raise StudentError(f"{core.STUDENT_MODEL} on {url} does not batch (max_batch_size {max_batch}): "
                           "export it again")
    return StudentServer(grpc=dict(grpc), version=version, digest=served_digest, max_batch=max_batch,
                         timeout_s=timeout_s, meta=params.get(serving.STUDENT_META_KEY, ""))


def served_meta(server: StudentServer) -> StudentMeta:
    """The calibration the served student publishes; StudentError when it publishes none."""
    try:
        return StudentMeta.from_json(json.loads(server.meta))
    except (ValueError, TypeError) as exc:
        raise StudentError(f"{server.model} version {server.version} on {server.url} publishes no usable "
                           f"{serving.STUDENT_META_KEY} ({exc}): export the version again") from None


class TritonStudentNetwork:
    """`Student`'s network as a Triton call: [N, 1, H, W] float32 lines -> [N, T, C] logits."""

    def __init__(self, server: StudentServer):
        from tritonclient.grpc import InferenceServerClient

        self.server = server
        self._client = InferenceServerClient(**server.grpc)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        step = self.server.max_batch
        return np.concatenate([self._call(batch[start : start + step]) for start in range(0, len(batch), step)])

    def _call(self, batch: np.ndarray) -> np.ndarray:
        from tritonclient.grpc import InferenceServerException, InferInput, InferRequestedOutput

        lines = InferInput(core.STUDENT_INPUT, list(batch.shape), "FP32")
        lines.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        try:
            result = self._client.infer(self.server.model, [lines], model_version=str(self.server.version),
                                        outputs=[InferRequestedOutput(core.STUDENT_OUTPUT)],
                                        client_timeout=self.server.timeout_s)
        except InferenceServerException as exc:
            raise StudentUnavailable(f"{self.server.model} version {self.server.version} on {self.server.url} did "
                                     f"not answer: {_first_line(exc)}") from None
        logits = result.as_numpy(core.STUDENT_OUTPUT)
        if logits is None or logits.shape[0] != batch.shape[0]:
            raise StudentUnavailable(f"{self.server.model} on {self.server.url} answered "
                                     f"{None if logits is None else list(logits.shape)} for {batch.shape[0]} lines")
        return logits

    def close(self) -> None:
        self._client.close()
