"""The patch memory's pure parts (window sampling, the mix) and its modules: the chunked distance
against a brute-force one, scores that find a novel window, the served encoder traced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import patch_memory as pm
from training.encoders import ImageEncoder, normalised_input


def _rois(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth images with a regular pattern (like balls on a mask) and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 120 + 40 * np.sin(xx / 2.0) * np.sin(yy / 2.0)
    out = base[None, :, :, None] + rng.normal(0, 2, (n, size, size, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def test_sample_windows_takes_alike_from_every_frame_and_stays_bounded():
    rng = np.random.default_rng(0)
    frames = [np.full((4, 50, 8), i, np.float32) for i in range(3)]  # 3 batches of 4 frames, 50 windows each
    bank = pm.sample_windows(frames, bank_size=120, total_frames=12, rng=rng)
    assert bank.shape == (120, 8) and bank.dtype == np.float32
    counts = np.bincount(bank[:, 0].astype(int), minlength=3)
    assert counts.tolist() == [40, 40, 40]  # 10 windows from each of the 12 frames
    small = pm.sample_windows([np.zeros((2, 5, 8), np.float32)], bank_size=100, total_frames=2, rng=rng)
    assert small.shape == (10, 8)  # every window of frames smaller than their share
    with pytest.raises(ValueError, match="no good frames"):
        pm.sample_windows([], bank_size=10, total_frames=0, rng=rng)


def test_fit_mix_weighs_the_informative_score_and_keeps_the_cnn_alone_without_both_classes():
    rng = np.random.default_rng(1)
    targets = np.r_[np.zeros(200), np.ones(50)].astype(int)
    cnn = rng.normal(0, 1, len(targets))  # no information
    memory = 0.1 + 0.01 * rng.normal(0, 1, len(targets)) + 0.03 * targets  # small raw scale, informative
    mix = pm.fit_mix(cnn, memory, targets)
    assert mix.fitted_on == 250 and mix.memory > 0 and abs(mix.cnn) < mix.memory * 0.03
    logit = mix.cnn * cnn + mix.memory * memory + mix.bias
    assert logit[targets == 1].mean() > logit[targets == 0].mean() + 2
    assert pm.fit_mix(cnn, memory, np.zeros(len(targets))) == pm.Mix(1.0, 0.0, 0.0, 0)


def test_chunked_distance_equals_the_brute_force_nearest_window(monkeypatch):
    monkeypatch.setattr(pm, "BANK_CHUNK", 7)  # a bank that is not a multiple of the chunk
    features = pm.memory_features(32, seed=3)
    bank = torch.randn(30, 64)  # 64 channels: the second stage's width
    memory = pm.PatchMemory(features, bank)
    x = normalised_input(torch.from_numpy(_rois(3)))
    windows = memory.windows(x)
    expected = torch.cdist(windows, bank[None].expand(3, -1, -1)).amin(dim=2)
    assert torch.allclose(memory.distances(x), expected, atol=1e-3)
    memory.window_limit.fill_(float(expected.median()))
    score, share = memory(x)
    assert torch.allclose(score, expected.amax(dim=1), atol=1e-3)
    assert torch.allclose(share, (expected > expected.median()).float().mean(dim=1))


def test_memory_features_are_seeded_and_leave_the_global_random_stream_alone():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    a = pm.memory_features(192, seed=1)
    after = torch.rand(3)
    b = pm.memory_features(192, seed=1)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not any(p.requires_grad for p in a.parameters())


def test_a_remembered_frame_scores_near_zero_and_a_novel_window_scores_higher():
    good = _rois(8)
    memory = pm.build_memory(good, 32, bank_size=100_000, seed=0)  # every window of every good frame
    assert memory.bank.shape[0] == 8 * 64  # 8 x 8 windows per 32 px frame after the two stages
    probe = good[:2].copy()
    probe[1, 8:16, 8:16] = 255  # a bright patch no good frame shows
    score, _ = memory(normalised_input(torch.from_numpy(probe)))
    assert float(score[0]) < 1e-2 < float(score[1])


def test_the_served_encoder_traces_and_a_cnn_only_mix_is_the_cnn(tmp_path: Path):
    from training.train import export_torchscript

    torch.manual_seed(0)
    encoder = ImageEncoder("compact", 16, 32).eval()
    good, val = _rois(6), _rois(6, seed=1)
    val[3:, 10:14, 10:14] = 0  # three "defects" for the mix
    targets = np.array([0, 0, 0, 1, 1, 1])
    served, report = pm.attach(encoder, good, val, targets, np.ones(6, bool), image_size=32, bank_size=200, seed=0)
    assert report.bank == 200 and report.mix.fitted_on == 6 and report.val_auroc["memory"] == 1.0
    # the limit is the validation shares' 99.5th percentile: of 6 frames only the top one can be over it
    assert report.share_limit >= pm.MIN_SHARE_LIMIT and report.val_degraded <= 1
    traced = export_torchscript(served, 32, tmp_path / "enc.pt")
    x = torch.from_numpy(_rois(5, seed=2))
    with torch.no_grad():
        eager, scripted = served(x), traced(x)
        plain = encoder(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(eager, scripted))
    assert torch.equal(eager[0], plain[0])  # the embedding is the CNN's
    cnn_only = pm.MemoryScoredEncoder(encoder, served.memory, (1.0, 0.0, 0.0), (1.0, 0.0, 0.0), 1.0)
    with torch.no_grad():
        assert torch.allclose(cnn_only(x)[1], plain[1])


def test_the_memory_abstains_on_a_frame_unfamiliar_throughout():
    """A defect makes a few windows unfamiliar, a degraded image many: there the served logit is the
    fallback's (the CNN alone), elsewhere the mix's."""
    torch.manual_seed(0)
    encoder = ImageEncoder("compact", 16, 32).eval()
    memory = pm.build_memory(_rois(8), 32, bank_size=100_000, seed=0)
    served = pm.MemoryScoredEncoder(encoder, memory, (1.0, 10.0, 0.0), (2.0, 0.0, -1.0), share_limit=0.2)
    frames = _rois(2, seed=9)
    frames[1, ::4] = 0  # stripes over the whole frame
    x = torch.from_numpy(frames)
    with torch.no_grad():
        distances = memory.distances(normalised_input(x))
        # the limit at the plain frame's 90th percentile: a tenth of its windows unfamiliar
        memory.window_limit.fill_(float(torch.quantile(distances[0], 0.9)))
        score, share = memory(normalised_input(x))
        logit = served(x)[1][:, 0]
        cnn = encoder(x)[1][:, 0]
    assert float(share[0]) < 0.2 < float(share[1])
    assert torch.isclose(logit[0], cnn[0] + 10.0 * score[0])
    assert torch.isclose(logit[1], 2.0 * cnn[1] - 1.0)
