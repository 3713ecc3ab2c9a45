"""Serving helpers of the Python-backend models, `oanet_fusion`, the CNN runner of
`oanet_image_encoder` and the OCR student's runner `oanet_ocr_student`, and the model facts
they publish to clients.

Like `core.py`, this file is self-contained (numpy + the standard library; `core` is its
sibling): `oanet export` copies it beside each model's `model.py`, which imports both from its
own folder, because Triton's Python stub ignores PYTHONPATH. Everything except `respond`,
`refuse` and `GateMonitor` is plain numpy and runs in-process in the tests; those three take
the stub's `triton_python_backend_utils` module as an argument instead of importing it.

Batching follows PyTriton's `@batch`: every request is validated on its own (a bad one gets
its own INVALID_ARG error), the valid ones are concatenated along the batch axis, the model
runs once, each output is checked to have one row per frame, and the rows are split back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:  # in-process: the package triton_models.oanet_fusion (training, tests, the stream client)
    from . import core, integrity
except ImportError:  # in Triton: beside model.py in a version folder
    import core  # type: ignore[no-redef]
    import integrity  # type: ignore[no-redef]

# `FusionCore.predict` keys -> output tensors (the client maps them back with this table).
PREDICT_OUTPUTS = {
    "defect_probability": core.DEFECT_PROBABILITY,
    "branch_probabilities": core.BRANCH_PROBABILITIES,
    "gate_weights": core.GATE_WEIGHTS,
    "kl_scores": core.KL_SCORES,
}
FUSION_INPUTS = (core.EMBEDDING, core.IMAGE_LOGIT, core.PARAM_VALUES, core.PARAM_MISSING)
ENCODER_INPUTS = (core.ROI_INPUT,)
STUDENT_INPUTS = (core.STUDENT_INPUT,)

# config.pbtxt `parameters` of oanet_fusion that describe the served version to clients; the
# fusion model refuses to load when they disagree with its own artifacts.
INFO_KEYS = ("oanet_version", "feature_names", "image_size", "embedding_dim", "threshold")
# The line profile the version was trained on (JSON), so a worker needs no access to the
# repository to read its frames; absent from exports made before it was published.
PROFILE_KEY = "line_profile"
CPU_THREADS = "cpu_threads"  # threads per instance; "0" = the machine's cores / instances; absent = 1
GATE_METRIC = "oanet_gate_deactivations_total"
MODELS = (core.ENCODER_MODEL, core.FUSION_MODEL, core.ENSEMBLE_MODEL)
# config.pbtxt `parameters` of oanet_ocr_student: the version it belongs to and the digest of the
# student files it was exported from (`stream.ocr.student.student_digest`), which a worker
# compares with its own copy's before it sends lines (stream/ocr/student_server.py).
STUDENT_VERSION_KEY = "oanet_version"
STUDENT_DIGEST_KEY = "student_digest"
# The student's recognizer.json (charset, thresholds, glyph widths), for workers that cannot read
# the repository: they read with the served network and this calibration.
STUDENT_META_KEY = "student_meta"
# Not in MODELS: a version has an OCR student only when exported with one, and an older
# version's student may stay served beside a newer version without one (the client checks
# the digest it serves, never the version alone).
OPTIONAL_MODELS = (core.STUDENT_MODEL,)


class RequestRejected(Exception):
    """One request's inputs are unusable (answered with INVALID_ARG; the batch goes on)."""


# --------------------------------------------------------------------------- batching


def batch_size(arrays: Mapping[str, np.ndarray]) -> int:
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise RequestRejected(f"inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def run_batched(
    requests: Sequence[Mapping[str, np.ndarray] | RequestRejected],
    compute: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
) -> list[dict[str, np.ndarray] | RequestRejected]:
    """Run `compute` once over the concatenated valid requests; one result per request, in order.

    A rejected request keeps its RequestRejected. An output without exactly one row per frame
    is a fault of the model, not of a request: RuntimeError.
    """
    valid = [i for i, r in enumerate(requests) if not isinstance(r, RequestRejected)]
    results: list[dict[str, np.ndarray] | RequestRejected] = list(requests)  # type: ignore[arg-type]
    if not valid:
        return results
    sizes = [batch_size(requests[i]) for i in valid]  # type: ignore[arg-type]
    names = list(requests[valid[0]])  # type: ignore[arg-type]
    merged = {n: np.concatenate([requests[i][n] for i in valid]) for n in names}  # type: ignore[index]
    outputs = compute(merged)
    total = sum(sizes)
    for name, array in outputs.items():
        if len(array) != total:
            raise RuntimeError(f"output {name} has {len(array)} rows for {total} frames")
    bounds = np.cumsum([0, *sizes])
    for i, start, stop in zip(valid, bounds[:-1], bounds[1:], strict=True):
        results[i] = {name: array[start:stop] for name, array in outputs.items()}
    return results


def check_fusion_request(arrays: Mapping[str, np.ndarray], feature_names: Sequence[str], embedding_dim: int) -> None:
    """RequestRejected unless one fusion request is well-formed.

    Triton has already checked dtypes and per-frame shapes against config.pbtxt; what is left
    is the values. A missing field is NaN with its mask bit set, so a NaN without the bit, a
    number with the bit, or an infinity is a malformed request, not a missing reading: the
    stream client builds both arrays from one record (`oanet.preprocess.param_arrays`), so they only
    disagree when something upstream is broken.
    """
    values, missing = arrays[core.PARAM_VALUES], arrays[core.PARAM_MISSING]
    embedding, logit = arrays[core.EMBEDDING], arrays[core.IMAGE_LOGIT]
    n, f = len(values), len(feature_names)
    if values.shape != (n, f) or missing.shape != (n, f):
        raise RequestRejected(f"{core.PARAM_VALUES} and {core.PARAM_MISSING} must be [N, {f}], got "
                              f"{list(values.shape)} and {list(missing.shape)}")
    if embedding.shape != (n, embedding_dim) or logit.shape != (n, 1):
        raise RequestRejected(f"{core.EMBEDDING} must be [N, {embedding_dim}] and {core.IMAGE_LOGIT} [N, 1], got "
                              f"{list(embedding.shape)} and {list(logit.shape)}")
    problems = [
        (np.isinf(values), "is infinite"),
        (np.isnan(values) & ~missing, f"is NaN but {core.PARAM_MISSING} says present (mark it missing)"),
        (~np.isnan(values) & missing, f"holds a number but {core.PARAM_MISSING} says missing (send NaN)"),
    ]
    for mask, what in problems:
        if mask.any():
            frame, field = (int(i) for i in np.argwhere(mask)[0])
            raise RequestRejected(f"{core.PARAM_VALUES} of frame {frame}, field {feature_names[field]!r}, {what}")
    if not (np.isfinite(embedding).all() and np.isfinite(logit).all()):
        raise RequestRejected(f"{core.EMBEDDING} and {core.IMAGE_LOGIT} must be finite")


def check_student_request(arrays: Mapping[str, np.ndarray]) -> None:
    """RequestRejected unless every line is what `stream.ocr.student.line_input` makes: finite
    values in [0, 1] (Triton has checked the dtype and the [1, H, W] shape)."""
    lines = arrays[core.STUDENT_INPUT]
    if not np.isfinite(lines).all():
        raise RequestRejected(f"{core.STUDENT_INPUT} must be finite")
    if lines.size and (lines.min() < 0.0 or lines.max() > 1.0):
        raise RequestRejected(f"{core.STUDENT_INPUT} must lie in [0, 1] (ink stretched on black), got "
                              f"[{float(lines.min()):.3g}, {float(lines.max()):.3g}]")


def student_parameters(version: int, digest: str, meta: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt parameters of oanet_ocr_student (see STUDENT_DIGEST_KEY, STUDENT_META_KEY)."""
    return {STUDENT_VERSION_KEY: str(int(version)), STUDENT_DIGEST_KEY: digest,
            STUDENT_META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))}


def fusion_outputs(prediction: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`FusionCore.predict` output -> output tensors, each with its frame axis first."""
    out = {tensor: np.asarray(prediction[key], dtype=np.float32) for key, tensor in PREDICT_OUTPUTS.items()}
    out[core.DEFECT_PROBABILITY] = out[core.DEFECT_PROBABILITY].reshape(-1, 1)
    return out


# --------------------------------------------------------------------------- configuration


def parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """config.pbtxt `parameters` as plain strings."""
    raw = model_config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in raw.items()}


def cpu_threads(model_config: Mapping[str, Any], cpu_count: int | None = None) -> int:
    """Threads for one instance: the `cpu_threads` parameter (1 when absent), or, when it is 0,
    the cores shared out among the model's CPU instances."""
    value = parameters(model_config).get(CPU_THREADS, "1") or "1"
    try:
        requested = int(value)
    except ValueError:
        raise ValueError(f"parameter {CPU_THREADS} must be an integer, got {value!r}") from None
    if requested > 0:
        return requested
    if cpu_count is None:
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    groups = model_config.get("instance_group") or [{}]
    instances = sum(int(g.get("count", 1)) for g in groups if g.get("kind", "KIND_CPU") == "KIND_CPU") or 1
    return max(1, cpu_count // instances)


def torch_device(instance_kind: str, device_id: str | int) -> str:
    """The torch device of one Triton instance (`args['model_instance_kind']`, `..._device_id`)."""
    return f"cuda:{int(device_id)}" if str(instance_kind).upper() == "GPU" else "cpu"


def info_parameters(version: int, fusion_config: Mapping[str, Any],
                    profile: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What clients need to know about a served version, as config.pbtxt parameter strings:
    its tensor facts and, when the run has one, its line profile (`PROFILE_KEY`)."""
    info = {
        "oanet_version": str(int(version)),
        "feature_names": json.dumps(list(fusion_config["feature_names"])),
        "image_size": str(int(fusion_config["image_size"])),
        "embedding_dim": str(int(fusion_config["embedding_dim"])),
        "threshold": repr(float(fusion_config.get("threshold", 0.5))),  # repr: round-trips exactly
    }
    if profile:
        info[PROFILE_KEY] = json.dumps(profile, sort_keys=True, separators=(",", ":"))
    return info


def parse_info_parameters(params: Mapping[str, str]) -> dict[str, Any]:
    """`info_parameters` back to typed values; ValueError naming the first bad key."""
    absent = [k for k in INFO_KEYS if k not in params]
    if absent:
        raise ValueError(f"parameters lack {', '.join(absent)}")
    try:
        names = json.loads(params["feature_names"])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("not a list of names")
        return {
            "oanet_version": int(params["oanet_version"]),
            "feature_names": names,
            "image_size": int(params["image_size"]),
            "embedding_dim": int(params["embedding_dim"]),
            "threshold": float(params["threshold"]),
            PROFILE_KEY: params.get(PROFILE_KEY) or None,  # JSON text, parsed by the client
        }
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable model parameters ({exc})") from None


# --------------------------------------------------------------------------- repository checks


def model_versions(repo: str | Path, model: str) -> list[int]:
    """The version folders of `model` in `repo` (numeric names, as Triton reads them), ascending."""
    folder = Path(repo) / model
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def served_versions(repo: Path) -> dict[str, int | None]:
    """The version Triton serves of each model: the highest numeric folder (policy latest 1)."""
    return {model: max(model_versions(repo, model), default=None) for model in MODELS}


def repository_problems(repo: str | Path, model: str, version: int, *, files: bool = True,
                        one_version: bool = True) -> list[str]:
    """Why version `version` of `model` must not be served from `repo`; [] when it may.

    The manifest (`oanet_fusion/<v>/manifest.json`) must be readable, of this format, for this
    version, and with `files` pass `integrity.version_problems` for `model` (all models, for the
    fusion model, which holds the manifest; `model.py` has run that before importing this file,
    hence `files=False` at load). All three models must serve the same version: the fusion's
    reference statistics belong to one CNN, and a stray or missing version folder would
    silently pair a CNN with another version's fusion stage. `one_version=False` (the optional
    OCR student, whose clients check what it serves) skips that last rule.
    """
    repo = Path(repo)
    manifest, problem = core.read_version_manifest(repo / core.FUSION_MODEL / str(version))
    if problem:
        return [problem]
    if not isinstance(manifest, Mapping):
        return ["manifest is not a JSON object"]
    problems = []
    if manifest.get("format_version") != core.FORMAT_VERSION:
        problems.append(f"manifest format_version {manifest.get('format_version')!r} is not supported "
                        f"(this model code reads {core.FORMAT_VERSION})")
    if manifest.get("version") != version:
        problems.append(f"manifest describes version {manifest.get('version')!r} but sits in version folder {version}")
    if files:
        only = None if model == core.FUSION_MODEL else model
        problems += integrity.version_problems(repo / model / str(version), integrity.environment_key(),
                                               only_model=only)
    if not one_version:
        return problems
    served = served_versions(repo)
    stray = {m: v for m, v in served.items() if v != version}
    if stray:
        found = ", ".join(f"{m} {'none' if v is None else v}" for m, v in sorted(stray.items()))
        problems.append(f"the models must serve one version, {model} serves {version} but latest versions are "
                        f"{found}: export all three together with `oanet export`, remove stray version folders")
    return problems


def info_mismatches(params: Mapping[str, str], version: int, fusion_config: Mapping[str, Any]) -> list[str]:
    """config.pbtxt parameters that do not describe the loaded version's artifacts (the line
    profile is covered by the config's sha256 in the manifest)."""
    expected = info_parameters(version, fusion_config)
    return [f"config.pbtxt parameter {key} is {params.get(key)!r} but version {version} has {value!r} "
            "(the config was written for another version; re-export)"
            for key, value in expected.items() if params.get(key) != value]


# --------------------------------------------------------------------------- Triton glue


def checked_version(pb_utils: Any, args: Mapping[str, str],
                    one_version: bool = True) -> tuple[dict[str, Any], str, int, Path]:
    """(model config, model name, version, version folder) of a model being loaded by Triton
    (`initialize(args)`), after `repository_problems` found nothing; else the load is refused."""
    config = json.loads(args["model_config"])
    name, version = args["model_name"], int(args["model_version"])
    model_dir = Path(args["model_repository"])
    problems = repository_problems(model_dir.parent, name, version, files=False,  # model.py checked them
                                   one_version=one_version)
    if problems:
        refuse(pb_utils, name, version, problems)
    return config, name, version, model_dir / str(version)


def refuse(pb_utils: Any, model: str, version: int | str, problems: Sequence[str]) -> None:
    """Log why a version is refused as one line, then fail its load."""
    message = integrity.refusal(model, version, list(problems))
    pb_utils.Logger.log_error(message)
    raise RuntimeError(message)


def output_dtypes(pb_utils: Any, model_config: Mapping[str, Any]) -> dict[str, np.dtype]:
    return {o["name"]: np.dtype(pb_utils.triton_string_to_numpy(o["data_type"])) for o in model_config["output"]}


def respond(
    pb_utils: Any,
    requests: Sequence[Any],
    input_names: Sequence[str],
    dtypes: Mapping[str, np.dtype],
    compute: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    validate: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> list[Any]:
    """Exactly one InferenceResponse per request, batched with `run_batched`."""
    arrays: list[dict[str, np.ndarray] | RequestRejected] = []
    for request in requests:
        try:
            batch = {}
            for name in input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise RequestRejected(f"input {name} is missing")
                batch[name] = tensor.as_numpy()
            batch_size(batch)
            if validate is not None:
                validate(batch)
            arrays.append(batch)
        except RequestRejected as exc:
            arrays.append(exc)
    try:
        results = run_batched(arrays, compute)
    except Exception as exc:  # noqa: BLE001 - a model fault: every request still gets its answer
        internal = f"inference failed: {type(exc).__name__}: {exc}"
        results = [r if isinstance(r, RequestRejected) else internal for r in arrays]
    responses = []
    for result in results:
        if isinstance(result, RequestRejected):
            error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
            responses.append(pb_utils.InferenceResponse(error=error))
        elif isinstance(result, dict):
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(array, dtype=dtypes[name]))
                       for name, array in result.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        else:
            # A TritonError of its own per response: the stub keeps each response's error in
            # shared memory, and one error object shared by a batch's responses was followed by
            # tritonserver dying of std::bad_alloc (a poison frame in a batch, `oanet bench chaos`).
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(result)))
    return responses


def deactivated(kl_scores: np.ndarray, gate_params: Mapping[str, Any]) -> np.ndarray:
    """[N, 2] bool: which modalities (image, params) the gate switched off for each frame."""
    if not gate_params.get("enabled", True):
        return np.zeros((len(kl_scores), len(core.MODALITIES)), dtype=bool)
    off = np.array([float(gate_params[m]["off"]) for m in core.MODALITIES])
    return np.asarray(kl_scores, dtype=np.float64) > off


class GateMonitor:
    """Counts gate switch-offs per modality as a Triton metric and logs them at most once per
    interval, so a drifting line is visible without a log line per frame."""

    def __init__(self, pb_utils: Any, model: str, version: int | str, gate_params: Mapping[str, Any],
                 log_interval_s: float = 60.0):
        self._pb = pb_utils
        self._gate = gate_params
        self._label = f"{model} version {version}"
        # The family must outlive its metrics (the stub refuses to update orphaned metrics).
        self._family = pb_utils.MetricFamily(
            name=GATE_METRIC,
            description="Frames for which the KL gate switched a modality off (its KL score above the off threshold)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._metrics = [self._family.Metric(labels={"model": model, "version": str(version), "modality": m})
                         for m in core.MODALITIES]
        self._interval = log_interval_s
        self._pending = np.zeros(len(core.MODALITIES), dtype=np.int64)
        self._frames = 0
        self._last_log = -float("inf")

    def observe(self, kl_scores: np.ndarray) -> None:
        counts = deactivated(kl_scores, self._gate).sum(axis=0)
        self._frames += len(kl_scores)
        for metric, count in zip(self._metrics, counts, strict=True):
            if count:
                metric.increment(int(count))
        self._pending += counts
        now = time.monotonic()
        if self._pending.any() and now - self._last_log >= self._interval:
            what = ", ".join(f"{m} for {int(c)}" for m, c in zip(core.MODALITIES, self._pending, strict=True) if c)
            self._pb.Logger.log_warn(f"{self._label}: the KL gate switched off {what} of {self._frames} frame(s) "
                                     f"since the last report (metric {GATE_METRIC})")
            self._pending[:] = 0
            self._frames = 0
            self._last_log = now
