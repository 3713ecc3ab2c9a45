"""What a client knows of the served model version, and the input check every inference path
makes: here, apart from the Triton client, so the in-process path (`--inference local`) and the
worker's code that only reads these facts import no tritonclient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.errors import InferenceRejected
from triton_models.oanet_fusion import core


@dataclass(frozen=True)
class ServedModel:
    """What the worker needs to know about the served version (never hard-coded there)."""

    name: str  # the ensemble clients call
    version: int  # the exported version (`oanet export`), the same for all three models
    image_size: int  # S of the uint8 [S, S, 3] object ROI
    feature_names: tuple[str, ...]  # parameter columns, in order
    threshold: float  # defect_probability >= threshold: verdict "defect"
    embedding_dim: int
    max_batch_size: int
    branches: tuple[str, ...] = core.BRANCHES
    modalities: tuple[str, ...] = core.MODALITIES
    profile: str | None = None  # the line profile the version was trained on (JSON); None: not published


def checked_arrays(model: ServedModel, rois: Any, values: Any, missing: Any) -> tuple[np.ndarray, ...]:
    """The arrays as the served model takes them, or InferenceRejected saying why not.

    Shapes and dtypes only: parameter values (NaN, infinity, mask consistency) are checked in
    one place, the fusion model. The in-process model (`stream.worker.local_model`) checks here too.
    """
    rois, values, missing = np.asarray(rois), np.asarray(values), np.asarray(missing)
    s, f = model.image_size, len(model.feature_names)
    if rois.dtype != np.uint8 or rois.ndim != 4 or rois.shape[1:] != (s, s, 3):
        raise InferenceRejected(f"rois must be uint8 [N, {s}, {s}, 3] (BGR, oanet.preprocess.crop_object_roi), got "
                                f"{rois.dtype} {list(rois.shape)}")
    if not np.issubdtype(values.dtype, np.floating) or values.shape != (len(rois), f):
        raise InferenceRejected(f"values must be float [{len(rois)}, {f}] (NaN where missing), got "
                                f"{values.dtype} {list(values.shape)}")
    if missing.dtype != np.bool_ or missing.shape != (len(rois), f):
        raise InferenceRejected(f"missing must be bool [{len(rois)}, {f}], got {missing.dtype} "
                                f"{list(missing.shape)}")
    return np.ascontiguousarray(rois), np.ascontiguousarray(values, dtype=np.float32), np.ascontiguousarray(missing)
