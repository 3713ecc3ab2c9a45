"""Training learns: the CNN's best-epoch and restart mechanics, and a seeded small-data run that
must reach a floor of validation AUROC on the object defects (a change that breaks learning,
such as black GridMask holes or a lost normalisation, fails here rather than in a benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import data as data_mod
from training.cnn import (
    BestEpoch,
    Restarts,
    auroc,
    build_encoder,
    epochs_without_gain,
    extract,
    make_optimizer,
    train_cnn,
)


def _train(bundle: data_mod.DataBundle, seed: int, epochs: int, restarts: Restarts | None, best: BestEpoch,
           grid_mask_p: float = 0.3, patience: int = 0, keep: str = "best") -> list[dict]:
    torch.manual_seed(seed)
    train, val = bundle.splits["train"], bundle.splits["val"]
    model = build_encoder("compact", 16, train.rois)
    optimizer = make_optimizer(model, 2e-3, 1e-4, name="adamw")
    history = train_cnn(model, optimizer, train, val, epochs=epochs, lr=2e-3, batch_size=16, grid_mask_p=grid_mask_p,
                        seed=seed, progress=False, restarts=restarts, best=best, patience=patience, keep=keep)
    objects = np.array([c != "param" for c in val.causes])
    _, logit = extract(model, val.rois)
    history.append({"kept_auroc": auroc(val.labels[objects], logit[objects])})
    return history


def test_a_restart_draws_fresh_weights_and_the_best_epoch_is_kept(e2e_dataset: Path):
    bundle = data_mod.load_bundle(e2e_dataset, 32, "truth", splits=("train", "val"), progress=False)
    best = BestEpoch()
    # below 1.01: no AUROC passes, so the one allowed restart happens after the first epoch
    history = _train(bundle, 0, 3, Restarts(count=1, after=1, below=1.01), best, grid_mask_p=0.0)
    kept = history.pop()["kept_auroc"]
    assert [(r["attempt"], r["epoch"], r["restart"]) for r in history] == [
        (0, 1, True), (1, 1, False), (1, 2, False), (1, 3, False)]
    scores = [r["val_object_auroc"] for r in history]
    assert best.auroc == max(scores) and kept == pytest.approx(best.auroc)
    assert [r["best"] for r in history].count(True) >= 1
    assert (history[scores.index(max(scores))]["attempt"], history[scores.index(max(scores))]["epoch"]) == (
        best.attempt, best.epoch)
    restored = BestEpoch.from_checkpoint(best.to_checkpoint())
    assert restored.summary() == best.summary() and restored.state.keys() == best.state.keys()


def test_keeping_the_last_epoch_serves_the_last_epoch_after_the_same_restarts(e2e_dataset: Path):
    bundle = data_mod.load_bundle(e2e_dataset, 32, "truth", splits=("train", "val"), progress=False)
    best = BestEpoch()
    history = _train(bundle, 0, 3, Restarts(count=1, after=1, below=1.01), best, grid_mask_p=0.0, keep="last")
    kept = history.pop()["kept_auroc"]
    assert [(r["attempt"], r["epoch"], r["restart"]) for r in history] == [
        (0, 1, True), (1, 1, False), (1, 2, False), (1, 3, False)]
    assert (best.keep, best.attempt, best.epoch) == ("last", 1, 3)
    assert kept == pytest.approx(history[-1]["val_object_auroc"]) == pytest.approx(best.auroc)
    assert best.peak == max(r["val_object_auroc"] for r in history)


def test_patience_ends_an_attempt_that_no_longer_gains(e2e_dataset: Path):
    """--cnn-patience: the epochs after the best one only cost time. A best no epoch can beat
    makes the count certain: 2 epochs without a gain, then it stops, 3 of 5 epochs unrun."""
    bundle = data_mod.load_bundle(e2e_dataset, 32, "truth", splits=("train", "val"), progress=False)
    history = _train(bundle, 0, 5, None, BestEpoch(attempt=0, epoch=0, auroc=2.0), grid_mask_p=0.0, patience=2)
    history.pop()
    assert [(r["epoch"], r["stopped"]) for r in history] == [(1, False), (2, True)]
    # A restart comes first and gives the new attempt its own count.
    history = _train(bundle, 0, 5, Restarts(count=1, after=1, below=3.0), BestEpoch(attempt=0, epoch=0, auroc=2.0),
                     grid_mask_p=0.0, patience=1)
    history.pop()
    assert [(r["attempt"], r["epoch"], r["restart"], r["stopped"]) for r in history] == [
        (0, 1, True, False), (1, 1, False, True)]
    # Without patience every epoch runs.
    history = _train(bundle, 0, 3, None, BestEpoch(attempt=0, epoch=0, auroc=2.0), grid_mask_p=0.0)
    history.pop()
    assert [r["stopped"] for r in history] == [False, False, False]


def test_epochs_without_gain_are_read_from_the_best_epoch() -> None:
    best = BestEpoch(attempt=0, epoch=3, auroc=0.9)
    assert epochs_without_gain(best, 0, 3) == 0 and epochs_without_gain(best, 0, 7) == 4
    assert epochs_without_gain(best, 1, 2) == 2  # a later attempt that has not beaten it yet
    assert epochs_without_gain(BestEpoch(), 0, 1) == 1


@pytest.mark.slow
def test_the_cnn_learns_the_object_defects_of_a_small_dataset(learning_dataset: Path):
    """Seeded: 160 frames, 192 px (strided stem), GridMask 0.3 on, 6 epochs."""
    bundle = data_mod.load_bundle(learning_dataset, 192, "truth", splits=("train", "val"), progress=False)
    best = BestEpoch()
    history = _train(bundle, 0, 6, Restarts(), best)
    kept = history.pop()["kept_auroc"]
    assert kept == pytest.approx(best.auroc)
    assert best.auroc >= 0.8, history
