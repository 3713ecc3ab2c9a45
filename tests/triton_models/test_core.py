"""The fusion core's maths on small arrays: KL gate, PCA refinement, ROI crop, manifest checks.

Everything here runs without torch: the core is what the Triton Python backend imports.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oanet.preprocess import PreprocessError, crop_object_roi, param_arrays
from triton_models.oanet_fusion import core

CORE_FILE = Path(core.__file__)


def test_core_imports_only_numpy_lightgbm_and_stdlib():
    tree = ast.parse(CORE_FILE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "hashlib", "json", "math", "collections", "pathlib", "typing", "numpy",
                        "lightgbm"}, imported
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import core; "
            "assert 'torch' not in sys.modules and 'oanet' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(CORE_FILE.parent)], capture_output=True, text=True,
                         cwd="/")
    assert out.stdout.strip() == "ok", out.stderr


def test_kl_is_half_mean_squared_z_and_ignores_missing_dims():
    mu, sigma = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.5])
    assert core.diag_gaussian_kl(mu[None], mu, sigma)[0] == 0.0
    x = np.array([[1.0, 3.0, 2.5]])  # z = 1, 1, 1
    assert core.diag_gaussian_kl(x, mu, sigma)[0] == pytest.approx(0.5)
    present = np.array([[True, False, False]])
    x2 = np.array([[2.0, 100.0, 100.0]])  # only the first (z=2) counts
    assert core.diag_gaussian_kl(x2, mu, sigma, present)[0] == pytest.approx(2.0)
    assert core.diag_gaussian_kl(x2, mu, sigma, np.zeros((1, 3), bool))[0] == 0.0


def _gate_params(base=(1.0, 1.0, 2.0)):
    cal = core.gate_calibration(np.random.default_rng(0).chisquare(8, 2000) / 16, margin=2.0)
    return {"enabled": True, "image": cal, "params": cal, "base_weights": dict(zip(core.BRANCHES, base))}


def test_gate_turns_a_shifted_image_modality_down_then_off():
    params = _gate_params()
    rng = np.random.default_rng(1)
    mu, sigma = np.zeros(16), np.ones(16)
    kls = []
    for shift in (0.0, 1.0, 2.0, 4.0):
        x = rng.normal(shift, 1.0, size=(200, 16))
        kls.append(core.diag_gaussian_kl(x, mu, sigma))
    full = np.ones(200)
    weights = [core.gate(kl, np.full(200, 0.5), full, params)[:, 0].mean() for kl in kls]
    assert weights[0] > weights[1] > weights[2] >= weights[3]
    assert weights[3] == 0.0  # far beyond the 99.5th percentile x margin: switched off
    w = core.gate(kls[3], np.full(200, 0.5), full, params)
    assert np.allclose(w[:, 1], 1.0)  # only the parameter branch is left
    assert np.allclose(w.sum(axis=1), 1.0)


def test_gate_params_weight_follows_present_fields_and_falls_back_when_all_off():
    params = _gate_params()
    kl = np.full(3, 0.5)
    present = np.array([1.0, 0.4, 0.0])
    w = core.gate(kl, kl, present, params)
    assert w[0, 1] > w[1, 1] > w[2, 1] == 0.0
    assert np.allclose(w.sum(axis=1), 1.0)
    off = np.full(1, 1e6)
    assert np.allclose(core.gate(off, off, np.ones(1), params), [[0.0, 0.0, 1.0]])


def _logit_gate(base=(1.0, 0.5, 2.0), intercept=-0.3):
    return {**_gate_params(base), "combine": core.COMBINE_LOGIT, "intercept": intercept}


def test_logit_combination_adds_the_switched_on_branch_logits():
    params = _logit_gate()
    off = params["image"]["off"]
    branches = np.array([[0.99, 0.5, 0.7], [0.99, 0.5, 0.7], [0.2, 0.9, 0.6], [0.2, 0.9, 0.6], [0.3, 0.4, 0.8]])
    kl = np.array([[0.1, 0.1], [off + 1, 0.1], [0.1, 0.1], [0.1, 0.1], [off + 1, off + 1]])
    present = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    p, w = core.combine(branches, kl, present, params)
    lg = core.logit(branches)
    expected = [-0.3 + lg[0] @ [1.0, 0.5, 2.0],
                -0.3 + 0.5 * lg[1, 1],  # image off: its logit and the fused one are not heard
                -0.3 + lg[2] @ [1.0, 0.5, 2.0],
                -0.3 + lg[3] @ [1.0, 0.0, 2.0],  # no field read: the params branch is off, the fused one is not
                lg[4, 2]]  # every branch off: the fused branch alone, without the intercept
    assert np.allclose(core.logit(p), expected)
    assert np.allclose(w, [[1 / 3.5, 0.5 / 3.5, 2 / 3.5], [0, 1, 0], [1 / 3.5, 0.5 / 3.5, 2 / 3.5], [1 / 3, 0, 2 / 3],
                           [0, 0, 1]])
    # What the mean of probabilities lost: a defect that one modality alone shows keeps its evidence.
    mean_p, _ = core.combine(branches[:1], kl[:1], present[:1], {**params, "combine": core.COMBINE_PROBABILITY})
    assert p[0] > 0.99 > mean_p[0]


def test_gate_without_combine_is_the_probability_mean():
    params = _gate_params()
    branches = np.array([[0.9, 0.2, 0.6]])
    kl, present = np.full((1, 2), 0.1), np.ones(1)
    p, w = core.combine(branches, kl, present, params)
    assert np.allclose(w, core.gate(kl[:, 0], kl[:, 1], present, params))
    assert p[0] == pytest.approx((w * branches).sum())


@pytest.mark.parametrize("change, words", [
    ({"combine": "median"}, "gate combine must be one of logit, probability, got 'median'"),
    ({"combine": "logit"}, "gate lacks or garbles 'intercept'"),
    ({"combine": "logit", "intercept": 0.0, "base_weights": {"image": -1.0, "params": 1.0, "fused": 1.0}},
     "base weights must be finite and >= 0"),
    ({"combine": "logit", "intercept": float("nan")}, "the intercept finite"),
])
def test_a_gate_the_core_cannot_apply_is_refused_at_load(tmp_path, change, words):
    with pytest.raises(core.CoreError, match=re.escape(words)):
        make_core(tmp_path, gate=change)


def test_soft_gate_is_one_below_center_and_zero_above_off():
    g = core.soft_gate(np.array([0.0, 1.0, 2.0, 3.1]), center=1.0, tau=1.0, off=3.0)
    assert g[0] == 1.0 and g[1] == 1.0
    assert g[2] == pytest.approx(np.exp(-1.0))
    assert g[3] == 0.0


def test_pca_refinement_shapes_and_orthonormal_components():
    x = np.random.default_rng(2).normal(size=(50, 6))
    rounds = core.fit_refinement(x, n_rounds=3, n_components=2)
    assert [c.shape for _, c in rounds] == [(2, 6), (2, 8), (2, 10)]
    for _, comp in rounds:
        assert np.allclose(comp @ comp.T, np.eye(2), atol=1e-9)
    f = core.pca_refine(x, rounds)
    assert f.shape == (50, 12)
    assert np.allclose(f[:, :6], x)
    assert core.pca_refine(x, []).shape == (50, 6)
    # the first round's new columns are centred projections
    assert np.allclose(f[:, 6:8].mean(axis=0), 0.0, atol=1e-9)


def test_crop_object_roi_scales_roi_for_smaller_frames():
    frame = np.zeros((768, 1024, 3), np.uint8)
    frame[304:752, 16:464] = 200  # the default profile's object ROI
    roi, size = (16, 304, 448, 448), (1024, 768)
    full = crop_object_roi(frame, roi, size, 32)
    assert full.shape == (32, 32, 3) and full.dtype == np.uint8 and (full == 200).all()
    import cv2

    half = cv2.resize(frame, (512, 384), interpolation=cv2.INTER_AREA)
    small = crop_object_roi(half, roi, size, 32)
    assert np.abs(small.astype(int) - full.astype(int)).max() <= 1
    grey = crop_object_roi(frame[:, :, 0], roi, size, 16)
    assert grey.shape == (16, 16, 3)
    with pytest.raises(PreprocessError):
        crop_object_roi(frame.astype(np.float32), roi, size, 16)


def test_param_arrays_marks_none_text_nan_and_inf_missing():
    values, missing = param_arrays(
        [{"a": 1.5, "b": None, "c": "x"}, {"a": float("nan"), "b": float("inf"), "c": 3}], ["a", "b", "c"]
    )
    assert missing.tolist() == [[False, True, True], [True, True, False]]
    assert values[0, 0] == 1.5 and values[1, 2] == 3.0 and np.isnan(values[0, 1])


SPECS = [(10.0, 20.0), None, (-1.0, 1.0)]


def test_tree_features_add_spec_distance_and_out_of_spec_count():
    nan = np.nan
    values = np.array([
        [15.0, 7.0, 0.5],  # all in spec
        [25.0, 7.0, -2.0],  # 0.5 widths above, 0.5 widths below
        [9.0, nan, nan],  # missing stays missing; the count covers present fields
        [nan, 3.0, nan],  # no spec field present: count missing
        [20.0, 1e9, 1.0],  # on the limits is in spec; a field without a spec only contributes its value
    ])
    x = core.tree_features(values, SPECS)
    assert x.shape == (5, 3 + 2 + 1)
    np.testing.assert_array_equal(x[:, :3], values)  # raw values first, NaN kept
    expected_dist = np.array([[0.0, 0.0], [0.5, -0.5], [-0.1, nan], [nan, nan], [0.0, 0.0]])
    np.testing.assert_allclose(x[:, 3:5], expected_dist)
    np.testing.assert_array_equal(x[:, 5], [0.0, 2.0, 1.0, nan, 0.0])
    np.testing.assert_array_equal(core.tree_features(values, None), values)
    np.testing.assert_array_equal(core.tree_features(values, [None, None, None]), values)
    assert core.tree_features(np.zeros((0, 3)), SPECS).shape == (0, 6)
    # a zero-width range is normalised by 1
    np.testing.assert_allclose(core.tree_features(np.array([[5.0]]), [(3.0, 3.0)]), [[5.0, 2.0, 1.0]])


@pytest.mark.parametrize("bad", ["x", [None], [None, None, [1.0]], [None, None, [2.0, 1.0]],
                                 [None, None, [0.0, float("inf")]], [None, None, ["a", "b"]]])
def test_spec_ranges_of_a_config_are_checked(bad):
    with pytest.raises(core.CoreError, match="spec_ranges"):
        core.check_spec_ranges(bad, 3)
    assert core.check_spec_ranges([[1, 2], None, [0, 0]], 3) == [(1.0, 2.0), None, (0.0, 0.0)]


def test_the_parameter_branch_scores_the_spec_features(tmp_path):
    """Trees fitted on tree_features(values, specs) are served on the same columns."""
    import lightgbm

    rng = np.random.default_rng(2)
    values = rng.uniform(-2, 25, size=(300, 3))
    labels = (core.tree_features(values, SPECS)[:, -1] > 0).astype(int)
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "seed": 0, "min_data_in_leaf": 5},
                             lightgbm.Dataset(core.tree_features(values, SPECS), labels), num_boost_round=20)
    fc = make_core(tmp_path / "spec", booster=booster, spec_ranges=SPECS)
    np.testing.assert_allclose(fc.params_probability(values), booster.predict(core.tree_features(values, SPECS)))
    with pytest.raises(core.CoreError, match="trees expect 6 input columns, fusion.json gives 3"):
        make_core(tmp_path / "raw", booster=booster, spec_ranges=None)


def make_core(tmp_path: Path, gate_enabled: bool = True, n_features: int = 3, emb: int = 5, booster=None,
              spec_ranges=None, gate: dict | None = None) -> core.FusionCore:
    """A fusion folder with random small layers and one tiny LightGBM model (raw values unless
    `booster` and its `spec_ranges` are given)."""
    import lightgbm

    rng = np.random.default_rng(3)
    if booster is None:
        x = rng.normal(size=(200, n_features))
        y = (x[:, 0] > 0.3).astype(int)
        x[rng.random(x.shape) < 0.2] = np.nan
        booster = lightgbm.train({"objective": "binary", "verbose": -1, "seed": 0}, lightgbm.Dataset(x, y),
                                 num_boost_round=5)
    (tmp_path / "trees").mkdir(parents=True, exist_ok=True)
    booster.save_model(str(tmp_path / "trees" / "gbdt_fold0.txt"))
    tab_h, tab_d, align = 7, 4, 3
    w = {
        "feat_mean": np.zeros(n_features), "feat_std": np.ones(n_features),
        "ref_img_mu": np.zeros(emb), "ref_img_sigma": np.ones(emb),
        "tab_w1": rng.normal(size=(tab_h, 2 * n_features)), "tab_b1": rng.normal(size=tab_h),
        "tab_w2": rng.normal(size=(tab_d, tab_h)), "tab_b2": rng.normal(size=tab_d),
        "proj_img_w": rng.normal(size=(align, emb)), "proj_img_b": rng.normal(size=align),
        "proj_tab_w": rng.normal(size=(align, tab_d)), "proj_tab_b": rng.normal(size=align),
    }
    rounds = core.fit_refinement(rng.normal(size=(30, 2 * align)), 1, 2)
    w["pca_mean_0"], w["pca_comp_0"] = rounds[0]
    in_dim = 2 * align + 2 + 2
    w.update({"cls_w1": rng.normal(size=(4, in_dim)), "cls_b1": rng.normal(size=4),
              "cls_w2": rng.normal(size=(1, 4)), "cls_b2": rng.normal(size=1)})
    np.savez(tmp_path / core.WEIGHTS_FILE, **w)
    cal = {"center": 0.5, "tau": 1.0, "off": 5.0}
    config = {
        "format_version": core.FORMAT_VERSION, "feature_names": [f"f{i}" for i in range(n_features)],
        "embedding_dim": emb, "image_size": 32, "refine_rounds": 1, "trees": ["trees/gbdt_fold0.txt"],
        "spec_ranges": None if spec_ranges is None else [None if r is None else list(r) for r in spec_ranges],
        "gate": {"enabled": gate_enabled, "image": cal, "params": cal,
                 "base_weights": {"image": 1.0, "params": 1.0, "fused": 2.0}, **(gate or {})},
        "threshold": 0.5,
    }
    (tmp_path / core.CONFIG_FILE).write_text(json.dumps(config))
    return core.FusionCore.load(tmp_path)


def test_fusion_core_outputs_are_per_frame_and_deterministic(tmp_path):
    fc = make_core(tmp_path)
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(6, 5)).astype(np.float32)
    logit = rng.normal(size=6).astype(np.float32)
    values = rng.normal(size=(6, 3)).astype(np.float32)
    missing = np.zeros((6, 3), bool)
    missing[1, :] = True
    missing[2, 0] = True
    values[missing] = np.nan
    out = fc.predict(emb, logit, values, missing)
    assert out["defect_probability"].shape == (6,)
    assert out["branch_probabilities"].shape == (6, 3) and out["gate_weights"].shape == (6, 3)
    assert out["kl_scores"].shape == (6, 2)
    assert all(v.dtype == np.float32 for v in out.values())
    assert np.allclose(out["gate_weights"].sum(axis=1), 1.0, atol=1e-6)
    assert out["gate_weights"][1, 1] == 0.0  # no field present: the params branch has no say
    assert out["present_fraction"][2] == pytest.approx(2 / 3)
    mix = (out["gate_weights"] * out["branch_probabilities"]).sum(axis=1)
    assert np.allclose(mix, out["defect_probability"], atol=1e-6)
    # a frame's verdict does not depend on the batch it came in (no running state)
    for i in range(6):
        one = fc.predict(emb[i : i + 1], logit[i : i + 1], values[i : i + 1], missing[i : i + 1])
        assert np.allclose(one["defect_probability"], out["defect_probability"][i], atol=1e-7)
    again = fc.predict(emb[::-1], logit[::-1], values[::-1], missing[::-1])
    assert np.allclose(again["defect_probability"][::-1], out["defect_probability"], atol=1e-7)
    # NaN in values counts as missing even when the mask says present
    nan_unmasked = fc.predict(emb[1:2], logit[1:2], values[1:2], np.zeros((1, 3), bool))
    assert np.allclose(nan_unmasked["defect_probability"], out["defect_probability"][1])


def test_fusion_core_with_the_logit_gate_serves_the_combination(tmp_path):
    fc = make_core(tmp_path, gate={"combine": core.COMBINE_LOGIT, "intercept": 0.4,
                                   "base_weights": {"image": 0.7, "params": 1.5, "fused": 0.2}})
    rng = np.random.default_rng(6)
    missing = np.zeros((4, 3), bool)
    missing[3] = True
    out = fc.predict(rng.normal(size=(4, 5)), rng.normal(size=4), rng.normal(size=(4, 3)), missing)
    p, w = core.combine(out["branch_probabilities"].astype(np.float64), out["kl_scores"].astype(np.float64),
                        out["present_fraction"].astype(np.float64), fc.gate_params)
    assert np.allclose(out["defect_probability"], p, atol=1e-6) and np.allclose(out["gate_weights"], w, atol=1e-6)
    assert out["gate_weights"][3, 1] == 0.0 and out["gate_weights"][0, 1] > 0


def test_fusion_core_without_gate_returns_the_fused_branch(tmp_path):
    fc = make_core(tmp_path, gate_enabled=False)
    rng = np.random.default_rng(5)
    out = fc.predict(rng.normal(size=(4, 5)), rng.normal(size=4), rng.normal(size=(4, 3)), np.zeros((4, 3), bool))
    assert np.allclose(out["gate_weights"], [[0, 0, 1]] * 4)
    assert np.allclose(out["defect_probability"], out["branch_probabilities"][:, 2])


def test_fusion_core_rejects_bad_shapes_and_bad_folders(tmp_path):
    fc = make_core(tmp_path / "ok")
    with pytest.raises(core.CoreError, match="embedding"):
        fc.predict(np.zeros((2, 4)), np.zeros(2), np.zeros((2, 3)), np.zeros((2, 3), bool))
    with pytest.raises(core.CoreError, match="parameter values"):
        fc.predict(np.zeros((2, 5)), np.zeros(2), np.zeros((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(core.CoreError, match="finite"):
        fc.predict(np.full((1, 5), np.nan), np.zeros(1), np.zeros((1, 3)), np.zeros((1, 3), bool))
    empty = fc.predict(np.zeros((0, 5)), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3), bool))
    assert empty["defect_probability"].shape == (0,)
    (tmp_path / "ok" / "trees" / "gbdt_fold0.txt").unlink()
    with pytest.raises(core.CoreError, match="LightGBM model file missing"):
        core.FusionCore.load(tmp_path / "ok")
    with pytest.raises(core.CoreError, match="cannot read"):
        core.FusionCore.load(tmp_path / "nowhere")


def test_io_spec_names_every_tensor_once_per_model():
    spec = core.io_spec(64, 32, 9)
    ens = spec[core.ENSEMBLE_MODEL]
    assert [t["name"] for t in ens["inputs"]] == [core.ROI_INPUT, core.PARAM_VALUES, core.PARAM_MISSING]
    assert ens["inputs"][0]["dims"] == [64, 64, 3] and ens["inputs"][0]["dtype"] == "UINT8"
    assert spec[core.FUSION_MODEL]["outputs"] == ens["outputs"]
