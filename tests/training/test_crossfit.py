"""Cross-fitted image embeddings: every train frame is embedded by a fold CNN that did not train on
it, mapped into the served CNN's space."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from training import data as data_mod
from training.cnn import extract
from training.crossfit import crossfit, ridge_map
from training.errors import TrainingError
from training.commands import add_train_arguments
from training.train import apply_recipe, fit_fold_cnn, fresh_cnn


def test_ridge_map_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 6))
    weight, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    got_w, got_b = ridge_map(source, source @ weight + bias, alpha=1e-9)
    np.testing.assert_allclose(got_w, weight, atol=1e-6)
    np.testing.assert_allclose(got_b, bias, atol=1e-6)


@pytest.fixture(scope="module")
def small_bundle(small_dataset: Path):
    return data_mod.load_bundle(small_dataset, 32, "truth", splits=("train", "val"), progress=False)


def tiny_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--image-size", "32", "--epochs", "1", "--embedding-dim", "8", "--batch-size", "4"])
    apply_recipe(args)
    return args


def test_each_train_frame_is_embedded_by_a_fold_cnn_that_did_not_see_it(small_bundle):
    args = tiny_args()
    train, val = small_bundle.splits["train"], small_bundle.splits["val"]
    served, _ = fresh_cnn(train, args)
    seen: list[set[str]] = []

    def fit_fold(fit, held_val):
        seen.append(set(fit.ids))
        return fit_fold_cnn(fit, held_val, args)

    folds = crossfit(served, train, val, 2, seed=0, fit_fold=fit_fold, progress=False)
    assert len(folds.models) == 2 and len(seen) == 2
    for k in range(2):
        held = {train.ids[i] for i in np.flatnonzero(folds.folds == k)}
        assert held and not held & seen[k]  # fold k's CNN never trained on its held-out frames
        assert seen[k] | held == set(train.ids)
    embedded = folds.embed(train.rois)
    assert embedded.shape == (len(train), args.embedding_dim) and np.isfinite(embedded).all()
    for k, (model, (weight, bias)) in enumerate(zip(folds.models, folds.maps, strict=True)):
        held = folds.folds == k
        raw, logit = extract(model, train.rois[held])
        np.testing.assert_allclose(embedded[held], raw @ weight + bias, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(folds.oof_logit[held], logit)
    assert set(folds.summary(train)) == {"folds", "oof_object_auroc"}
    with pytest.raises(TrainingError, match="images for"):
        folds.embed(train.rois[:3])
    with pytest.raises(TrainingError, match="crossfit-folds"):
        crossfit(served, train, val, 1, seed=0, fit_fold=fit_fold, progress=False)


def test_image_stage_builds_the_fusion_table_from_out_of_fold_embeddings(small_bundle):
    from training.train import image_stage

    args = tiny_args()
    args.crossfit_folds, args.folds, args.mask_copies, args.tree_rounds = 2, 2, 1, 5
    stage = image_stage(small_bundle, args, progress=False)
    train = small_bundle.splits["train"]
    assert stage.crossfit is not None and stage.crossfit["folds"] == 2
    clean = stage.rows.embedding[: len(train)]
    in_sample, _ = extract(stage.model, train.rois)
    assert clean.shape == in_sample.shape and not np.allclose(clean, in_sample, atol=1e-4)
    args.crossfit_folds = 0
    plain = image_stage(small_bundle, args, progress=False)
    assert plain.crossfit is None
    np.testing.assert_allclose(plain.rows.embedding[: len(train)], extract(plain.model, train.rois)[0], atol=1e-6)


def test_the_cnn_and_the_mask_learning_copies_take_their_own_grid_mask():
    # One can be changed without the other: GridMask off for the CNN lifted the faint defects on
    # a large data set, while the copies the fusion stage and gate learn from keep it.
    from training.train import cnn_options

    args = tiny_args()
    assert (args.cnn_grid_mask, args.grid_mask) == (0.3, 0.3)
    assert cnn_options(args)["grid_mask_p"] == 0.3
    args.cnn_grid_mask = 0.0
    assert cnn_options(args)["grid_mask_p"] == 0.0 and args.grid_mask == 0.3
