"""OANet fusion core: the inference maths of the fusion model, written once.

This file is self-contained on purpose (numpy + lightgbm; no torch, no OpenCV, no imports from
`oanet`, `training` or `stream`):

* training and evaluation import it as `triton_models.oanet_fusion.core`;
* `oanet export` copies this very file beside the Triton Python-backend `model.py` of
  `oanet_fusion`, which imports it from its own folder;

so the probabilities a served frame gets are computed by the same code as the ones the
evaluation reported.

Artifacts are read only from formats that cannot execute code when loaded: JSON
(`fusion.json`), `.npz` read with `allow_pickle=False` (`fusion_weights.npz`) and LightGBM
text model files (`trees/*.txt`).

Inference pipeline for a batch of N frames (`FusionCore.predict`)
------------------------------------------------------------------
Inputs: `embedding` [N, E] and `image_logit` [N] from the TorchScript CNN, `values` [N, F]
float32 (NaN where missing) and `missing` [N, F] bool, F = numeric profile fields in profile
order (text fields such as `lot_id` are not features).

1. Tabular features: z = (value - feat_mean) / feat_std, 0 where missing; tabular input
   t = [z, missing].
2. Parameter branch (external-modality intra-bagging): mean probability of every LightGBM
   booster (several kinds x 5 CV folds) on the tree input of `tree_features`: the raw values
   with NaN for missing, then, with spec ranges in `fusion.json` ("spec_ranges"), per field
   with a spec range its signed distance outside the range in range widths (0 inside, NaN
   missing), and the count of present out-of-spec fields (NaN when none is present).
3. Image branch: sigmoid(image_logit).
4. Fused branch: image embedding standardised with the reference statistics,
   a_img = normalize(P_img e); tabular encoder MLP(t) -> a_tab = normalize(P_tab h);
   f_0 = [a_img, a_tab]; refinement round r: f_{r+1} = [f_r, (f_r - pca_mean_r) @ pca_comp_r^T];
   fused classifier MLP([f_R, logit(p_params), present_fraction]) -> p_fused.
5. Gate (per frame, deterministic, no running state; see `combine`):
   KL_m = KL( N(x, diag s^2) || N(mu, diag s^2) ) averaged over dimensions
        = mean over dims of ((x - mu) / s)^2 / 2,
   for m = image (x = the embedding, all E dims) and m = params (x = the present numeric
   fields only; KL_params = 0 when none is present), with mu, s the per-dimension mean and
   standard deviation of the training frames; off_m = margin x 99.5th percentile of the
   validation KLs.  Gate "combine" (`fusion.json`):
   "logit" (what `oanet train` writes by default): switches s_image = [KL_image <= off_image],
   s_params = [KL_params <= off_params and a field is present], s_fused = [both modalities
   on]; z = intercept + sum_b b_b s_b logit(p_b) (every s_b = 0: z = logit(p_fused)), with
   base weights b >= 0 and the intercept learned on the validation frames; weights reported
   b_b s_b normalised to sum 1.
   "probability" (explicit base weights): soft weight g_m = 0 if KL_m > off_m else
   exp(-max(0, KL_m - center_m) / tau_m), center_m = median validation KL, tau_m = (99.5th
   percentile - median); w_image = b_image g_image, w_params = b_params g_params
   present_fraction, w_fused = b_fused min(g_image, g_params); normalised to sum 1 (all zero:
   the fused branch alone); gated probability = sum_b w_b p_b.
   With the gate disabled the gated probability is p_fused and the weights are (0, 0, 1); KL
   scores are still reported.
6. Calibration (`calibrate`): defect_probability = sigmoid(slope * logit(p) + intercept) of the
   gated probability p, Platt constants fitted on the validation frames (`fusion.json`
   "calibration").

Outputs (all float32): `defect_probability` [N], `branch_probabilities` [N, 3]
(image, params, fused), `gate_weights` [N, 3] (same order), `kl_scores` [N, 2]
(image, params), `present_fraction` [N].

Over 400 lines on purpose: `oanet export` copies this one file into every model repository and
the Python backend imports it alone (integrity-checked); a split would be more files to copy,
list in the manifest and load by path. Client-side preprocessing lives in oanet/preprocess.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# 2: the tree input carries spec-range features ("spec_ranges" in fusion.json, null = raw values).
# 3: the gate may add the branches' logits ("combine": "logit", with a learned "intercept").
FORMAT_VERSION = 3
CONFIG_FILE = "fusion.json"
WEIGHTS_FILE = "fusion_weights.npz"
TREES_DIR = "trees"
MANIFEST_FILE = "manifest.json"

BRANCHES = ("image", "params", "fused")
MODALITIES = ("image", "params")

# Model names of the Triton repository and the tensors between them, defined once.
ENSEMBLE_MODEL = "oanet"
ENCODER_MODEL = "oanet_image_encoder"
FUSION_MODEL = "oanet_fusion"

ROI_INPUT = "OBJECT_ROI"  # UINT8 [S, S, 3] per frame: BGR, channels last (NHWC batch)
EMBEDDING = "EMBEDDING"  # FP32 [E]
IMAGE_LOGIT = "IMAGE_LOGIT"  # FP32 [1]
PARAM_VALUES = "PARAM_VALUES"  # FP32 [F], NaN where missing
PARAM_MISSING = "PARAM_MISSING"  # BOOL [F]
DEFECT_PROBABILITY = "DEFECT_PROBABILITY"  # FP32 [1]
BRANCH_PROBABILITIES = "BRANCH_PROBABILITIES"  # FP32 [3] image, params, fused
GATE_WEIGHTS = "GATE_WEIGHTS"  # FP32 [3] image, params, fused
KL_SCORES = "KL_SCORES"  # FP32 [2] image, params

# The line's OCR student (`oanet ocr distill`), served by Triton when exported with it
# (`oanet export --recognizer`): one field line per row. The names are also the ONNX graph's.
STUDENT_MODEL = "oanet_ocr_student"
STUDENT_FILE = "recognizer.onnx"  # the ONNX graph, in the student's folder and the served model's
STUDENT_INPUT = "lines"  # FP32 [1, H, W] per line: ink in [0, 1] on black (stream.ocr.student.line_input)
STUDENT_OUTPUT = "logits"  # FP32 [T, C] per line: CTC time steps x (blank + charset)


class CoreError(Exception):
    """Artifacts or inputs the fusion core cannot use (message meant for a user)."""


def io_spec(image_size: int, embedding_dim: int, n_features: int) -> dict[str, Any]:
    """Tensor names, dtypes and per-frame shapes of the three Triton models."""
    roi_input = {"name": ROI_INPUT, "dtype": "UINT8", "dims": [image_size, image_size, 3]}
    param_inputs = [
        {"name": PARAM_VALUES, "dtype": "FP32", "dims": [n_features]},
        {"name": PARAM_MISSING, "dtype": "BOOL", "dims": [n_features]},
    ]
    # The ensemble answers with exactly what the fusion model computes.
    verdict_outputs = [
        {"name": DEFECT_PROBABILITY, "dtype": "FP32", "dims": [1]},
        {"name": BRANCH_PROBABILITIES, "dtype": "FP32", "dims": [len(BRANCHES)]},
        {"name": GATE_WEIGHTS, "dtype": "FP32", "dims": [len(BRANCHES)]},
        {"name": KL_SCORES, "dtype": "FP32", "dims": [len(MODALITIES)]},
    ]
    return {
        ENCODER_MODEL: {
            "inputs": [roi_input],
            "outputs": [
                {"name": EMBEDDING, "dtype": "FP32", "dims": [embedding_dim]},
                {"name": IMAGE_LOGIT, "dtype": "FP32", "dims": [1]},
            ],
        },
        FUSION_MODEL: {
            "inputs": [
                {"name": EMBEDDING, "dtype": "FP32", "dims": [embedding_dim]},
                {"name": IMAGE_LOGIT, "dtype": "FP32", "dims": [1]},
                *param_inputs,
            ],
            "outputs": verdict_outputs,
        },
        ENSEMBLE_MODEL: {
            "inputs": [
                roi_input,
                *param_inputs,
            ],
            "outputs": verdict_outputs,
        },
    }


def student_io_spec(height: int, width: int, steps: int, classes: int) -> dict[str, Any]:
    """Tensor names, dtypes and per-line shapes of the OCR student model."""
    return {
        "inputs": [{"name": STUDENT_INPUT, "dtype": "FP32", "dims": [1, height, width]}],
        "outputs": [{"name": STUDENT_OUTPUT, "dtype": "FP32", "dims": [steps, classes]}],
    }


# --------------------------------------------------------------------------- maths


def present_fraction(missing: np.ndarray) -> np.ndarray:
    """Share of a frame's parameters that are present: a fusion input and the gate's weight on the
    parameter branch. Here, in the served file, because the model computes it; training and the
    stream client import it."""
    return (~missing).sum(axis=1) / max(1, missing.shape[1])


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """torch.nn.Linear: x @ W^T + b (W is [out, in])."""
    return x @ weight.T + bias


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def l2_normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """torch.nn.functional.normalize(x, dim=1, eps=eps)."""
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norm, eps)


def check_spec_ranges(spec_ranges: Any, n_features: int) -> list[tuple[float, float] | None] | None:
    """`spec_ranges` as read from fusion.json: None, or per feature None or a finite [low, high]
    with low <= high; raises CoreError otherwise."""
    if spec_ranges is None:
        return None
    if not isinstance(spec_ranges, Sequence) or isinstance(spec_ranges, str) or len(spec_ranges) != n_features:
        raise CoreError(f"{CONFIG_FILE}: spec_ranges must be null or a list of {n_features} entries (one per feature)")
    out: list[tuple[float, float] | None] = []
    for j, item in enumerate(spec_ranges):
        if item is None:
            out.append(None)
            continue
        try:
            low, high = (float(v) for v in item)
        except (TypeError, ValueError):
            raise CoreError(f"{CONFIG_FILE}: spec_ranges[{j}] must be null or [low, high], got {item!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise CoreError(f"{CONFIG_FILE}: spec_ranges[{j}] must be finite with low <= high, got {item!r}")
        out.append((low, high))
    return out


def tree_features(values: np.ndarray, spec_ranges: Sequence[tuple[float, float] | None] | None) -> np.ndarray:
    """The LightGBM bag's input [N, F + S + 1] (S = fields with a spec range), float64, NaN missing.

    Columns: the F raw values; for each field with a spec range [low, high], in feature order,
    its signed distance outside the range normalised by the range width: (v - high) / width
    above, (v - low) / width below, 0 inside, NaN when the value is missing; last, the count
    of present fields outside their spec (NaN when no spec field is present). A parameter
    defect of a line is a printed value out of spec: with these columns one split finds it,
    however few examples of each field's excursions the training data holds. A field without
    a spec contributes its value only; with `spec_ranges` None (or no spec at all) the raw
    values alone. A zero-width range (low == high) is normalised by 1.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise CoreError(f"parameter values must be [N, F], got {list(x.shape)}")
    cols = [j for j, r in enumerate(spec_ranges or ()) if r is not None]
    if not cols:
        return x
    low = np.array([spec_ranges[j][0] for j in cols], dtype=np.float64)
    high = np.array([spec_ranges[j][1] for j in cols], dtype=np.float64)
    width = np.where(high > low, high - low, 1.0)
    v = x[:, cols]
    present = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        distance = np.where(v > high, (v - high) / width, np.where(v < low, (v - low) / width, 0.0))
    distance = np.where(present, distance, np.nan)
    count = np.where(present.any(axis=1), ((distance != 0) & present).sum(axis=1), np.nan)
    return np.concatenate([x, distance, count[:, None]], axis=1)


def tabular_input(values: np.ndarray, missing: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[z, missing] with z = (value - mean) / std and 0 where missing; [N, 2F] float64."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.asarray(missing, dtype=bool) | ~np.isfinite(values)
    z = (np.where(missing, 0.0, values) - mean) / std
    z = np.where(missing, 0.0, z)
    return np.concatenate([z, missing.astype(np.float64)], axis=1)


def pca_refine(features: np.ndarray, rounds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Feature refinement: f_{r+1} = [f_r, (f_r - mean_r) @ comp_r^T] for each (mean_r, comp_r)."""
    f = features
    for mean, comp in rounds:
        f = np.concatenate([f, (f - mean) @ comp.T], axis=1)
    return f


def fit_pca(features: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA by SVD of the centred features: (mean [D], components [k, D]); deterministic signs."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(int(n_components), vt.shape[0]))
    comp = vt[:k]
    # Sign convention: the largest-magnitude loading of each component is positive.
    signs = np.sign(comp[np.arange(k), np.abs(comp).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return mean, comp * signs[:, None]


def fit_refinement(features: np.ndarray, n_rounds: int, n_components: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rounds = []
    f = np.asarray(features, dtype=np.float64)
    for _ in range(int(n_rounds)):
        mean, comp = fit_pca(f, n_components)
        rounds.append((mean, comp))
        f = np.concatenate([f, (f - mean) @ comp.T], axis=1)
    return rounds


def diag_gaussian_kl(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Per-row KL(N(x, diag s^2) || N(mu, diag s^2)) averaged over (present) dimensions.

    Equals the mean squared z-score / 2; rows without any present dimension get 0.
    """
    z2 = ((np.asarray(x, dtype=np.float64) - mu) / sigma) ** 2
    if present is None:
        return 0.5 * z2.mean(axis=1)
    present = np.asarray(present, dtype=bool)
    z2 = np.where(present, z2, 0.0)
    count = present.sum(axis=1)
    return np.where(count > 0, 0.5 * z2.sum(axis=1) / np.maximum(count, 1), 0.0)


def soft_gate(kl: np.ndarray, center: float, tau: float, off: float) -> np.ndarray:
    """0 above the switch-off threshold, else exp(-max(0, KL - center) / tau)."""
    kl = np.asarray(kl, dtype=np.float64)
    weight = np.exp(-np.maximum(kl - center, 0.0) / max(tau, 1e-12))
    return np.where(kl > off, 0.0, weight)


def gate(
    kl_image: np.ndarray,
    kl_params: np.ndarray,
    present_fraction: np.ndarray,
    params: Mapping[str, Any],
) -> np.ndarray:
    """Normalised branch weights [N, 3] (image, params, fused) of the KL gate (module docstring)."""
    g_img = soft_gate(kl_image, params["image"]["center"], params["image"]["tau"], params["image"]["off"])
    g_par = soft_gate(kl_params, params["params"]["center"], params["params"]["tau"], params["params"]["off"])
    base = params["base_weights"]
    w = np.stack(
        [
            base["image"] * g_img,
            base["params"] * g_par * present_fraction,
            base["fused"] * np.minimum(g_img, g_par),
        ],
        axis=1,
    )
    return normalised(w)


def normalised(raw: np.ndarray) -> np.ndarray:
    """Branch weights [N, 3] scaled to sum 1 per frame; a frame whose weights are all zero gets
    the fused branch alone (0, 0, 1)."""
    total = raw.sum(axis=1, keepdims=True)
    fallback = np.tile(np.array([0.0, 0.0, 1.0]), (len(raw), 1))
    return np.where(total > 0, raw / np.where(total > 0, total, 1.0), fallback)


# How the gate combines the branches (`fusion.json` gate "combine"): "logit", a weighted sum of
# the switched-on branches' logits (weights learned on validation frames at training), or
# "probability", the soft gate's weighted mean of their probabilities (explicit base weights).
COMBINE_LOGIT = "logit"
COMBINE_PROBABILITY = "probability"
COMBINE_MODES = (COMBINE_LOGIT, COMBINE_PROBABILITY)


def switches(kl_image: np.ndarray, kl_params: np.ndarray, present_fraction: np.ndarray,
             params: Mapping[str, Any]) -> np.ndarray:
    """[N, 3] 0/1 (image, params, fused): which branches the logit combination hears. A modality
    whose KL is above its `off` is switched off, and the fused branch with it; the params branch
    is also off when no field was read (its trees would only see NaN)."""
    image_on = np.asarray(kl_image, dtype=np.float64) <= params["image"]["off"]
    params_ok = np.asarray(kl_params, dtype=np.float64) <= params["params"]["off"]
    params_on = params_ok & (np.asarray(present_fraction, dtype=np.float64) > 0)
    return np.stack([image_on, params_on, image_on & params_ok], axis=1).astype(np.float64)


def combine(branches: np.ndarray, kl: np.ndarray, present: np.ndarray,
            params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(gated probability [N], normalised branch weights [N, 3]) of the enabled gate.

    "logit": z = intercept + sum_b base_b s_b logit(p_b) with the 0/1 switches s (`switches`);
    the weights reported are base_b s_b normalised. Every branch off: the fused branch alone.
    "probability" (artifacts with explicit base weights): sum_b w_b p_b with the soft `gate`."""
    if params.get("combine", COMBINE_PROBABILITY) == COMBINE_PROBABILITY:
        weights = gate(kl[:, 0], kl[:, 1], present, params)
        return (weights * branches).sum(axis=1), weights
    base = np.array([float(params["base_weights"][b]) for b in BRANCHES])
    raw = switches(kl[:, 0], kl[:, 1], present, params) * base
    logits = logit(branches)
    z = np.where(raw.sum(axis=1) > 0, float(params["intercept"]) + (raw * logits).sum(axis=1), logits[:, 2])
    return sigmoid(z), normalised(raw)


def calibrate(p: np.ndarray, calibration: Mapping[str, float] | None) -> np.ndarray:
    """Platt scaling of the gated probability: sigmoid(slope * logit(p) + intercept).

    The gate averages branch probabilities, and a defect that only one modality can show (a
    parameter defect is invisible to the image branch) is averaged down: the mixture ranks
    frames well but 0.5 is not a decision boundary. The two constants are fitted on the
    validation frames at training, so the verdict probability is a calibrated one; it keeps
    the ranking (slope > 0). None (artifacts without calibration): p unchanged."""
    if not calibration:
        return np.asarray(p, dtype=np.float64)
    return sigmoid(float(calibration["slope"]) * logit(p) + float(calibration["intercept"]))


def gate_calibration(kl: np.ndarray, margin: float, quantile: float = 99.5) -> dict[str, float]:
    """Gate constants of one modality from its KL scores on reference (validation) frames."""
    kl = np.asarray(kl, dtype=np.float64)
    kl = kl[np.isfinite(kl)]
    if kl.size == 0:
        return {"center": 0.0, "tau": 1.0, "off": float("inf"), "quantile": quantile, "margin": margin}
    center = float(np.median(kl))
    high = float(np.percentile(kl, quantile))
    return {
        "center": center,
        "tau": max(high - center, 1e-3),
        "off": max(high * margin, center + 1e-3),
        "quantile": quantile,
        "margin": margin,
    }


def check_gate(params: Mapping[str, Any]) -> None:
    """Raises CoreError unless `fusion.json`'s gate can be applied (checked once, at load, so a
    bad artifact is refused by the model and never charged to a frame)."""
    if not params.get("enabled", True):
        return
    mode = params.get("combine", COMBINE_PROBABILITY)
    if mode not in COMBINE_MODES:
        raise CoreError(f"{CONFIG_FILE}: gate combine must be one of {', '.join(COMBINE_MODES)}, got {mode!r}")
    try:
        base = [float(params["base_weights"][b]) for b in BRANCHES]
        offs = [float(params[m]["off"]) for m in MODALITIES]
        intercept = float(params["intercept"]) if mode == COMBINE_LOGIT else 0.0
    except (KeyError, TypeError, ValueError) as exc:
        raise CoreError(f"{CONFIG_FILE}: gate lacks or garbles {exc} (base_weights per branch, off per modality"
                        f"{', intercept' if mode == COMBINE_LOGIT else ''})") from None
    if not all(math.isfinite(b) and b >= 0 for b in base) or not math.isfinite(intercept) or any(map(math.isnan, offs)):
        raise CoreError(f"{CONFIG_FILE}: gate base weights must be finite and >= 0 and the intercept finite")


# --------------------------------------------------------------------------- model


def read_version_manifest(version_dir: str | Path) -> tuple[Any, str | None]:
    """(the manifest of one exported version, None), or (None, why it cannot be read)."""
    return _read_manifest(Path(version_dir) / MANIFEST_FILE)


def _read_manifest(path: Path) -> tuple[Any, str | None]:
    """(manifest, None), or (None, why it cannot be read)."""
    if not path.is_file():
        return None, f"manifest not found: {path}"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as exc:
        return None, f"manifest {path} is unreadable: {exc}"


class FusionCore:
    """The fusion model of one artifact folder (`fusion.json`, `fusion_weights.npz`, `trees/`)."""

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, np.ndarray], boosters: Sequence[Any]):
        self.config = dict(config)
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        self.boosters = list(boosters)
        self.feature_names: list[str] = list(config["feature_names"])
        self.embedding_dim = int(config["embedding_dim"])
        self.refine_rounds = int(config.get("refine_rounds", 0))
        self.gate_params = config["gate"]
        self.threshold = float(config.get("threshold", 0.5))
        self.spec_ranges = check_spec_ranges(config.get("spec_ranges"), len(self.feature_names))
        self._rounds = [(self.w[f"pca_mean_{r}"], self.w[f"pca_comp_{r}"]) for r in range(self.refine_rounds)]
        self._check()

    def _check(self) -> None:
        need = ["feat_mean", "feat_std", "ref_img_mu", "ref_img_sigma", "tab_w1", "tab_b1", "tab_w2", "tab_b2",
                "proj_img_w", "proj_img_b", "proj_tab_w", "proj_tab_b", "cls_w1", "cls_b1", "cls_w2", "cls_b2"]
        absent = [k for k in need if k not in self.w]
        if absent:
            raise CoreError(f"{WEIGHTS_FILE} lacks arrays: {', '.join(absent)}")
        F, E = len(self.feature_names), self.embedding_dim
        if self.w["feat_mean"].shape != (F,) or self.w["ref_img_mu"].shape != (E,):
            raise CoreError(f"{WEIGHTS_FILE} does not match {CONFIG_FILE} ({F} features, embedding {E})")
        if not self.boosters:
            raise CoreError("the parameter branch has no LightGBM boosters")
        check_gate(self.gate_params)
        columns = tree_features(np.zeros((0, F)), self.spec_ranges).shape[1]
        widths = sorted({int(b.num_feature()) for b in self.boosters})
        if widths != [columns]:
            raise CoreError(f"the trees expect {', '.join(map(str, widths))} input columns, {CONFIG_FILE} gives "
                            f"{columns} ({F} features, spec_ranges {'set' if self.spec_ranges else 'null'})")

    @classmethod
    def load(cls, folder: str | Path, num_threads: int | None = None) -> FusionCore:
        import lightgbm

        folder = Path(folder)
        cfg_path = folder / CONFIG_FILE
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CoreError(f"cannot read {cfg_path}: {exc}") from None
        except ValueError as exc:
            raise CoreError(f"{cfg_path} is not valid JSON: {exc}") from None
        if config.get("format_version") != FORMAT_VERSION:
            raise CoreError(f"{cfg_path}: format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}")
        try:
            with np.load(folder / WEIGHTS_FILE, allow_pickle=False) as npz:
                weights = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise CoreError(f"cannot read {folder / WEIGHTS_FILE}: {exc}") from None
        boosters = []
        for rel in config["trees"]:
            path = folder / rel
            if not path.is_file():
                raise CoreError(f"LightGBM model file missing: {path}")
            booster = lightgbm.Booster(model_file=str(path))
            boosters.append(booster)
        core = cls(config, weights, boosters)
        core.num_threads = num_threads
        return core

    num_threads: int | None = None

    # -- branches -----------------------------------------------------------------

    def _validate(self, embedding, image_logit, values, missing):
        embedding = np.asarray(embedding, dtype=np.float64)
        image_logit = np.asarray(image_logit, dtype=np.float64).reshape(-1)
        values = np.asarray(values, dtype=np.float64)
        missing = np.asarray(missing, dtype=bool)
        n, F, E = len(image_logit), len(self.feature_names), self.embedding_dim
        if embedding.shape != (n, E):
            raise CoreError(f"embedding must be [{n}, {E}], got {list(embedding.shape)}")
        if values.shape != (n, F) or missing.shape != (n, F):
            raise CoreError(f"parameter values and missing mask must be [{n}, {F}], got "
                            f"{list(values.shape)} and {list(missing.shape)}")
        if not np.isfinite(embedding).all() or not np.isfinite(image_logit).all():
            raise CoreError("embedding and image logit must be finite")
        missing = missing | ~np.isfinite(values)
        return embedding, image_logit, np.where(missing, np.nan, values), missing

    def params_probability(self, values: np.ndarray) -> np.ndarray:
        """Mean probability of the LightGBM bag on the tree input of raw values (NaN = missing)."""
        x = tree_features(values, self.spec_ranges)
        if len(x) == 0:
            return np.zeros(0)
        kwargs = {} if self.num_threads is None else {"num_threads": self.num_threads}
        return np.mean([b.predict(x, **kwargs) for b in self.boosters], axis=0)

    def aligned(self, embedding: np.ndarray, values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a_img, a_tab): the L2-normalised aligned embeddings."""
        w = self.w
        e = (embedding - w["ref_img_mu"]) / w["ref_img_sigma"]
        a_img = l2_normalize(linear(e, w["proj_img_w"], w["proj_img_b"]))
        t = tabular_input(values, missing, w["feat_mean"], w["feat_std"])
        h = linear(relu(linear(t, w["tab_w1"], w["tab_b1"])), w["tab_w2"], w["tab_b2"])
        a_tab = l2_normalize(linear(h, w["proj_tab_w"], w["proj_tab_b"]))
        return a_img, a_tab

    def fused_probability(self, a_img, a_tab, p_params, present_fraction) -> np.ndarray:
        w = self.w
        f = pca_refine(np.concatenate([a_img, a_tab], axis=1), self._rounds)
        x = np.concatenate([f, logit(p_params)[:, None], np.asarray(present_fraction)[:, None]], axis=1)
        out = linear(relu(linear(x, w["cls_w1"], w["cls_b1"])), w["cls_w2"], w["cls_b2"])
        return sigmoid(out[:, 0])

    def kl_scores(self, embedding: np.ndarray, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        w = self.w
        kl_img = diag_gaussian_kl(embedding, w["ref_img_mu"], w["ref_img_sigma"])
        z_values = np.where(missing, 0.0, values)
        kl_par = diag_gaussian_kl(z_values, w["feat_mean"], w["feat_std"], present=~missing)
        return np.stack([kl_img, kl_par], axis=1)

    def predict(self, embedding, image_logit, values, missing) -> dict[str, np.ndarray]:
        """The fusion model's outputs for a batch (module docstring); float32 arrays."""
        embedding, image_logit, values, missing = self._validate(embedding, image_logit, values, missing)
        n = len(image_logit)
        present = present_fraction(missing) if n else np.zeros(0)
        p_image = sigmoid(image_logit)
        p_params = self.params_probability(values)
        a_img, a_tab = self.aligned(embedding, values, missing)
        p_fused = self.fused_probability(a_img, a_tab, p_params, present)
        kl = self.kl_scores(embedding, values, missing)
        branches = np.stack([p_image, p_params, p_fused], axis=1) if n else np.zeros((0, 3))
        if self.gate_params.get("enabled", True):
            gated, weights = combine(branches, kl, present, self.gate_params)
        else:
            weights = np.tile(np.array([0.0, 0.0, 1.0]), (n, 1))
            gated = branches[:, 2]
        final = calibrate(gated, self.config.get("calibration"))
        return {
            "defect_probability": final.astype(np.float32),
            "branch_probabilities": branches.astype(np.float32),
            "gate_weights": weights.astype(np.float32),
            "kl_scores": kl.astype(np.float32),
            "present_fraction": np.asarray(present, dtype=np.float32),
        }
