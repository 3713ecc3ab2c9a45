"""Each training component's maths on small tensors: alignment losses, GridMask, OCR dropout,
torch/numpy parity of the fusion layers, the TorchScript encoder, the LightGBM bag, thresholds."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from training import commands as options
from training.augment import add_synthetic_anomalies, grid_mask, grid_mask_one, ocr_dropout, synthetic_anomaly
from training.bagging import KINDS, TreeBag, fit_bag, frame_folds
from training.cnn import (
    ANISOTROPY_LIMIT,
    ARRAY_PERIODICITY,
    AUGMENTS,
    AUTO_AUGMENT,
    AUTO_ENCODER,
    KEEP_BEST,
    KEEPS,
    BestEpoch,
    balanced_pos_weight,
    cell_periodicity,
    choose_encoder,
    choose_symmetries,
    detail_anisotropy,
    expected_targets,
    grid_mask_probability,
    symmetries,
)
from training.data import FEATURE_SOURCES
from training.encoders import (
    COMPACT_WIDTHS,
    CONTEXT_WIDTHS,
    ENCODERS,
    OPTIMIZERS,
    RECIPES,
    AlignmentNet,
    CellComparison,
    FusedClassifier,
    ImageEncoder,
    compact_cnn,
    cosine_alignment_loss,
    infonce_alignment_loss,
    normalised_input,
    shifted_grid,
)
from training.errors import TrainingError
from training.fusion import (
    FusionOptions,
    FusionRows,
    alignment_weights,
    fit_combination,
    fit_fusion,
    operating_threshold,
    reference_stats,
    threshold_for_recall,
)
from training.metrics import PLAIN_OBJECTS, SUBTLE_OBJECTS, binary_metrics, defect_kinds, metrics_by_defect
from training.train import (
    GATE_CHOICE_STATES,
    export_torchscript,
    image_branch_note,
    resolve_augment,
    resolve_encoder,
    validation_views,
)
from triton_models.oanet_fusion import core


def test_option_mirrors_match_the_modules():
    assert options.ENCODERS == ENCODERS
    assert options.TREE_KINDS == KINDS
    assert options.FEATURE_SOURCES == FEATURE_SOURCES
    assert options.AUGMENTS == AUGMENTS
    assert (options.KEEP_BEST, options.KEEPS) == (KEEP_BEST, KEEPS)
    assert (options.AUTO_AUGMENT, options.ANISOTROPY_LIMIT) == (AUTO_AUGMENT, ANISOTROPY_LIMIT)
    assert (options.AUTO_ENCODER, options.ARRAY_PERIODICITY) == (AUTO_ENCODER, ARRAY_PERIODICITY)
    assert options.OPTIMIZERS == OPTIMIZERS
    assert set(RECIPES) == set(ENCODERS)


def test_dihedral_symmetries_keep_pixels_and_reach_all_eight_orientations():
    rng = np.random.default_rng(0)
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3)
    seen = set()
    for _ in range(200):
        out = symmetries(np.repeat(image, 1, axis=0), "dihedral", rng)
        assert sorted(out.ravel().tolist()) == sorted(image.ravel().tolist())  # a permutation of pixels
        seen.add(out.tobytes())
    assert len(seen) == 8
    flips = {symmetries(image, "flips", rng).tobytes() for _ in range(200)}
    assert len(flips) == 4
    assert symmetries(image, "none", rng).tobytes() == image.tobytes()
    with pytest.raises(ValueError, match="unknown augmentation"):
        symmetries(image, "rotate", rng)


def test_auto_augment_keeps_quarter_turns_only_for_objects_that_look_alike_turned():
    rng = np.random.default_rng(0)
    # Streaks down the image, as ground tiles: much more detail across than down.
    streaks = np.repeat(rng.integers(0, 256, (12, 1, 48, 1)), 48, axis=1).astype(np.uint8)
    streaks = np.repeat(streaks, 3, axis=3)
    assert choose_symmetries(streaks)[0] == "flips"
    assert choose_symmetries(streaks.transpose(0, 2, 1, 3))[0] == "flips"  # across the image, the same
    speckle = rng.integers(0, 256, (12, 48, 48, 3)).astype(np.uint8)  # alike in every direction
    choice, anisotropy = choose_symmetries(speckle)
    assert choice == "dihedral" and abs(anisotropy - 1.0) < 0.05
    # Speckle averaged over pairs of rows has half the vertical detail: oriented, past the limit.
    paired = np.repeat(speckle[:, ::2], 2, axis=1)
    assert detail_anisotropy(paired) > 1.5 * ANISOTROPY_LIMIT and choose_symmetries(paired)[0] == "flips"
    # A blank image, or none at all, has nothing a turn could break.
    assert choose_symmetries(np.full((4, 16, 16, 3), 128, np.uint8)) == ("dihedral", 1.0)
    assert choose_symmetries(speckle[:0]) == ("dihedral", 1.0)
    # `oanet train --augment auto` records the choice in its arguments; an explicit choice stands.
    train = SimpleNamespace(rois=np.concatenate([streaks, speckle]), labels=np.array([0] * 12 + [1] * 12))
    args = SimpleNamespace(augment=AUTO_AUGMENT)
    assert "flips" in resolve_augment(args, train) and args.augment == "flips"  # the good ones are streaked
    args = SimpleNamespace(augment="none")
    assert resolve_augment(args, train) is None and args.augment == "none"


def test_auto_encoder_compares_cells_only_for_objects_that_repeat_one():
    rng = np.random.default_rng(0)
    grids = np.stack([_ball_grid(pitch, offset=int(rng.integers(0, 8))) for pitch in (16, 21, 27, 33)])
    choice, periodicity = choose_encoder(grids)
    assert choice == "compact-array" and periodicity > 2 * ARRAY_PERIODICITY
    # A smooth, unrepeated surface (a ground tile's shading and grain) falls steadily: at most 0.
    shading = cv2.GaussianBlur(rng.normal(128, 40, (4, 192, 192)).astype(np.float32), (0, 0), 12)
    smooth = np.repeat(np.clip(shading, 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    assert cell_periodicity(smooth) <= 0.0 and choose_encoder(smooth)[0] == "compact"
    assert choose_encoder(smooth[:0]) == ("compact", 0.0)
    # `oanet train --encoder auto` records the choice in its arguments, from the good frames only.
    train = SimpleNamespace(rois=np.concatenate([grids, smooth]), labels=np.array([0] * 4 + [1] * 4))
    args = SimpleNamespace(encoder=AUTO_ENCODER)
    assert "compact-array" in resolve_encoder(args, train) and args.encoder == "compact-array"
    train = SimpleNamespace(rois=train.rois, labels=1 - train.labels)
    args = SimpleNamespace(encoder=AUTO_ENCODER)
    assert "repeat no cell" in resolve_encoder(args, train) and args.encoder == "compact"
    args = SimpleNamespace(encoder="resnet18")
    assert resolve_encoder(args, train) is None and args.encoder == "resnet18"


def _receptive_field(widths: tuple[int, ...] | None = None, size: int = 192) -> int:
    """Side in input pixels that one position of the compact CNN's last map depends on, from
    the kernels and strides of the network as built."""
    from training.encoders import stem_stride

    net, _ = compact_cnn(stride=stem_stride(size)) if widths is None else compact_cnn(widths, stride=stem_stride(size))
    return _window(list(net))


def _window(layers: list[torch.nn.Module]) -> int:
    side, jump = 1, 1
    for layer in layers:
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            kernel = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            stride = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            side += (kernel - 1) * jump
            jump *= stride
    return side


def test_the_multiscale_cnn_sees_the_compact_windows_and_ones_near_the_roi_size():
    from training.encoders import multiscale_cnn, stem_stride

    net, channels = multiscale_cnn(stride=stem_stride(192))
    assert channels == COMPACT_WIDTHS[-1] + CONTEXT_WIDTHS[-1]
    assert _window(list(net.local)) == _receptive_field() == 29
    assert _window([*net.local, *net.context]) == 133  # the four-stage CNN without its last max-pool (149 px)
    # the local stages are the compact CNN's, so both draw the same initial weights from one seed
    torch.manual_seed(0)
    compact, _ = compact_cnn(stride=stem_stride(192))
    torch.manual_seed(0)
    multi, _ = multiscale_cnn(stride=stem_stride(192))
    for a, b in zip(compact.parameters(), multi.local.parameters(), strict=True):
        assert torch.equal(a, b)


def _ball_grid(pitch: int, size: int = 192, missing: tuple[int, int] | None = None, offset: int = 0) -> np.ndarray:
    """A grey uint8 [size, size, 3] image of bright balls on a dark mask every `pitch` px, one
    of them left out."""
    image = np.full((size, size, 3), 40, np.uint8)
    centres = range(offset + pitch // 2, size - pitch // 2, pitch)
    for row, y in enumerate(centres):
        for col, x in enumerate(centres):
            if (row, col) != missing:
                cv2.circle(image, (x, y), pitch // 4, (200, 200, 200), -1, cv2.LINE_AA)
    return image


@pytest.mark.parametrize("pitch", [14, 19, 24, 40])
def test_cell_comparison_finds_each_images_pitch_and_marks_only_the_missing_ball(pitch):
    image = _ball_grid(pitch, missing=(2, 1))  # inside the array: every neighbour is a ball
    x = normalised_input(torch.from_numpy(image[None]))
    out = CellComparison()(x)
    assert out.shape == (1, 4, 192, 192)
    assert torch.equal(out[:, :3], x)  # the ROI itself goes on unchanged
    difference = out[0, 3].numpy()
    y, x_ = np.unravel_index(np.argmax(difference), difference.shape)
    centre = (pitch // 2 + pitch, pitch // 2 + 2 * pitch)  # (x, y) of ball (row 2, col 1)
    assert abs(x_ - centre[0]) <= pitch // 4 + 1 and abs(y - centre[1]) <= pitch // 4 + 1
    # the other balls and the array's edge repeat a neighbour: far below the missing one
    far = np.ones_like(difference, bool)
    far[centre[1] - pitch // 2 : centre[1] + pitch // 2, centre[0] - pitch // 2 : centre[0] + pitch // 2] = False
    assert difference[far].max() < 0.25 * difference.max()


@pytest.mark.parametrize(("h", "w"), [(192, 192), (50, 77), (448, 448)])
def test_the_shifted_grid_is_affine_grids_to_the_bit(h, w):
    # Models trained with affine_grid compute the same numbers with the grid built directly.
    torch.manual_seed(h + w)
    dx, dy = torch.randn(8) * 0.3, torch.randn(8) * 0.3
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    theta = torch.stack([torch.stack([one, zero, dx], 1), torch.stack([zero, one, dy], 1)], 1)
    expected = torch.nn.functional.affine_grid(theta, [8, 1, h, w], align_corners=False)
    assert torch.equal(shifted_grid(dx, dy, h, w), expected)


def test_cell_comparison_is_per_image_in_the_traced_graph(tmp_path):
    # The trace must not bake the example's pitch in: each image of a batch gets its own.
    torch.manual_seed(0)
    model = ImageEncoder("compact-array", embedding_dim=8, image_size=192).eval()
    export_torchscript(model, 192, tmp_path / "enc.pt")
    loaded = torch.jit.load(str(tmp_path / "enc.pt"))
    batch = torch.from_numpy(np.stack([_ball_grid(17, missing=(1, 1)), _ball_grid(31, missing=(4, 2)),
                                       _ball_grid(23, offset=5)]))
    with torch.no_grad():
        eager = model(batch)
        served = loaded(batch)
        alone = [model(batch[i : i + 1]) for i in range(3)]
    for a, b in zip(eager, served, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    for i in range(3):
        assert torch.allclose(alone[i][0], eager[0][i : i + 1], atol=1e-5)


def test_the_compact_cnn_windows_are_the_size_docs_method_states():
    # docs/method.md and docs/benchmarks.md: 29 px of a 192 px ROI with two stages, 149 px with four.
    assert _receptive_field() == 29  # the default
    assert _receptive_field((16, 32, 64, 128)) == 149


def test_balanced_pos_weight_is_the_class_ratio():
    assert balanced_pos_weight(np.array([1, 0, 0, 0], dtype=np.float32)) == 3.0
    assert balanced_pos_weight(np.zeros(5, dtype=np.float32)) == 1.0
    assert balanced_pos_weight(np.ones(5, dtype=np.float32)) == 1.0


def test_cosine_alignment_loss_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert cosine_alignment_loss(a, a * 3).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_alignment_loss(a, -a).item() == pytest.approx(2.0)
    assert cosine_alignment_loss(a, a.flip(1)).item() == pytest.approx(1.0)


def test_infonce_prefers_matching_pairs_and_gradients_align():
    torch.manual_seed(0)
    a = torch.randn(8, 4)
    matched = infonce_alignment_loss(a, a + 0.01 * torch.randn(8, 4))
    shuffled = infonce_alignment_loss(a, a[torch.randperm(8)])
    assert matched < shuffled
    b = torch.randn(8, 4, requires_grad=True)
    optim = torch.optim.SGD([b], lr=5.0)
    before = cosine_alignment_loss(a, b).item()
    for _ in range(100):
        loss = cosine_alignment_loss(a, b)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert cosine_alignment_loss(a, b).item() < before * 0.5


def test_grid_mask_hides_about_a_quarter_with_the_mean_colour_and_is_seeded():
    images = np.zeros((4, 64, 64, 3), np.uint8)
    images[:, ::2] = (10, 200, 250)  # stripes: the mean colour (5, 100, 125) appears nowhere in the image
    same, applied = grid_mask(images, 0.0, np.random.default_rng(0))
    assert not applied.any() and (same == images).all()
    masked, applied = grid_mask(images, 1.0, np.random.default_rng(0))
    assert applied.all()
    # Holes are the image's mean colour, as the reference GridMask (not black: a void or particle).
    hidden = (masked == np.array([5, 100, 125], np.uint8)).all(axis=3).mean(axis=(1, 2))
    assert ((hidden > 0.15) & (hidden < 0.40)).all(), hidden
    again, _ = grid_mask(images, 1.0, np.random.default_rng(0))
    assert (again == masked).all()
    assert (images[:, ::2] == (10, 200, 250)).all() and (images[:, 1::2] == 0).all()  # input untouched
    one = grid_mask_one(np.full((10, 10), 9, np.uint8), np.random.default_rng(1))
    assert (one == 9).all()  # a flat image: the mean fill changes nothing
    grey = np.tile(np.arange(10, dtype=np.uint8) * 20, (10, 1))
    one = grid_mask_one(grey, np.random.default_rng(1))
    assert (one == 90).sum() > (grey == 90).sum()
    with pytest.raises(ValueError):
        grid_mask(images, 1.5, np.random.default_rng(0))


def test_synthetic_anomalies_mark_only_good_images_and_change_them_locally():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    # A regular grid of bright dots on a mid-grey board, like a package of balls.
    board = np.where(((yy % 12) - 6) ** 2 + ((xx % 12) - 6) ** 2 < 9, 200, 90).astype(np.uint8)
    images = np.repeat(np.stack([board] * 3, axis=-1)[None], 40, axis=0)
    targets = np.array([0.0] * 30 + [1.0] * 10, np.float32)
    out, new_targets = add_synthetic_anomalies(images, targets, 0.5, rng)
    changed = np.flatnonzero(new_targets != targets)
    assert 5 <= len(changed) <= 25 and set(targets[changed].tolist()) == {0.0}  # only good images, about half
    assert np.array_equal(out[30:], images[30:])  # defects are left as they are
    for i in changed:
        diff = np.abs(out[i].astype(int) - images[i].astype(int)).max(axis=-1) > 3
        assert 0 < diff.mean() < 0.25  # a local change, not a new image
    unchanged = np.setdiff1d(np.arange(30), changed)
    assert np.array_equal(out[unchanged], images[unchanged])
    same, same_targets = add_synthetic_anomalies(images, targets, 0.0, rng)
    assert same is images and same_targets is targets
    again = synthetic_anomaly(images[0], np.random.default_rng(3))
    assert np.array_equal(again, synthetic_anomaly(images[0], np.random.default_rng(3)))  # seeded
    # The balanced loss weight follows the class mix the anomalies make.
    assert expected_targets(targets, 0.5).sum() == 10 + 15
    with pytest.raises(ValueError, match="synthetic-anomaly probability"):
        add_synthetic_anomalies(images, targets, 1.5, rng)


def test_ocr_dropout_rate_and_mask_consistency():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(500, 9)).astype(np.float32)
    missing = np.zeros((500, 9), bool)
    missing[:, 0] = True
    values[missing] = np.nan
    v0, m0 = ocr_dropout(values, missing, 0.0, rng)
    assert (m0 == missing).all()
    v, m = ocr_dropout(values, missing, 0.6, rng)
    assert m[:, 0].all()  # missing stays missing
    assert 0.55 < m[:, 1:].mean() < 0.65
    assert np.isnan(v[m]).all() and np.isfinite(v[~m]).all()
    _, m1 = ocr_dropout(values, missing, 1.0, rng)
    assert m1.all()


def test_torch_alignment_and_classifier_match_the_numpy_core():
    torch.manual_seed(0)
    n, E, Fn = 7, 6, 4
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, E))
    values = rng.normal(size=(n, Fn))
    missing = rng.random((n, Fn)) < 0.3
    values[missing] = np.nan
    ref = reference_stats(emb, values, missing)
    net = AlignmentNet(E, Fn, tab_dim=5, align_dim=3, hidden=8).eval()
    w = {**ref, **alignment_weights(net)}
    e_std = torch.tensor((emb - ref["ref_img_mu"]) / ref["ref_img_sigma"], dtype=torch.float32)
    t = torch.tensor(core.tabular_input(values, missing, ref["feat_mean"], ref["feat_std"]), dtype=torch.float32)
    with torch.no_grad():
        a_img_t, a_tab_t, _ = net(e_std, t)
    probe = core.FusionCore.__new__(core.FusionCore)
    probe.w = w
    a_img, a_tab = probe.aligned(emb, values, missing)
    assert np.allclose(a_img, a_img_t.numpy(), atol=1e-5)
    assert np.allclose(a_tab, a_tab_t.numpy(), atol=1e-5)
    clf = FusedClassifier(8, hidden=5).eval()
    x = rng.normal(size=(n, 8))
    with torch.no_grad():
        torch_p = torch.sigmoid(clf(torch.tensor(x, dtype=torch.float32))).numpy()
    W = {k: v.detach().double().numpy() for k, v in clf.state_dict().items()}
    numpy_p = core.sigmoid(core.linear(core.relu(core.linear(x, W["fc1.weight"], W["fc1.bias"])),
                                       W["fc2.weight"], W["fc2.bias"])[:, 0])
    assert np.allclose(numpy_p, torch_p, atol=1e-5)


def test_fit_fusion_writes_every_array_the_core_needs(tmp_path):
    rng = np.random.default_rng(1)
    n, E, Fn = 80, 6, 3
    labels = (rng.random(n) < 0.4).astype(int)
    emb = rng.normal(size=(n, E)) + labels[:, None]
    values = rng.normal(size=(n, Fn)) + 2 * labels[:, None]
    missing = rng.random((n, Fn)) < 0.2
    values[missing] = np.nan
    rows = FusionRows(emb, values, missing, labels, np.arange(n), p_params=np.clip(0.2 + 0.6 * labels, 0, 1))
    opts = FusionOptions(refine_rounds=2, pca_components=3, epochs_align=3, epochs_fused=3, tab_dim=4,
                         align_dim=4, hidden=8)
    weights, history = fit_fusion(rows, reference_stats(emb, values, missing), opts, progress=False)
    assert weights["pca_comp_0"].shape == (3, 8) and weights["pca_comp_1"].shape == (3, 11)
    assert weights["cls_w1"].shape[1] == 8 + 6 + 2
    assert len(history["alignment"]) == 3 and len(history["fused_classifier"]) == 3
    probe = core.FusionCore.__new__(core.FusionCore)
    probe.w = weights
    probe._rounds = [(weights[f"pca_mean_{r}"], weights[f"pca_comp_{r}"]) for r in range(2)]
    a_img, a_tab = probe.aligned(emb, values, missing)
    p = probe.fused_probability(a_img, a_tab, rows.p_params, (~missing).mean(axis=1))
    assert p.shape == (n,) and ((p >= 0) & (p <= 1)).all()


def test_alignment_loss_pulls_the_modalities_together():
    rng = np.random.default_rng(2)
    n = 200
    labels = (rng.random(n) < 0.5).astype(int)
    emb = rng.normal(size=(n, 8)) + labels[:, None]
    values = rng.normal(size=(n, 3)) + labels[:, None]
    missing = np.zeros((n, 3), bool)
    rows = FusionRows(emb, values, missing, labels, np.arange(n), p_params=np.full(n, 0.5))
    ref = reference_stats(emb, values, missing)
    from training.fusion import fit_alignment

    base = FusionOptions(epochs_align=15, seed=0)
    _, with_align = fit_alignment(rows, ref, base, progress=False)
    _, without = fit_alignment(rows, ref, FusionOptions(epochs_align=15, seed=0, align=False), progress=False)
    assert with_align[-1]["align_loss"] < 0.7 * without[-1]["align_loss"]


@pytest.mark.parametrize("name,size", [("compact", 32), ("compact-multiscale", 32), ("compact-multiscale", 192),
                                       ("compact-array", 64), ("resnet18", 32), ("alexnet", 64), ("vgg16", 32)])
def test_image_encoder_takes_uint8_nhwc_and_traces(tmp_path, name, size):
    torch.manual_seed(0)
    model = ImageEncoder(name, embedding_dim=8, image_size=size).eval()
    x = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    emb, logit = model(x)
    assert emb.shape == (2, 8) and logit.shape == (2, 1)
    if name in ("compact", "compact-multiscale", "compact-array", "resnet18"):
        traced = export_torchscript(model, size, tmp_path / "enc.pt")
        loaded = torch.jit.load(str(tmp_path / "enc.pt"))
        e2, l2 = loaded(x)
        assert torch.allclose(e2, emb, atol=1e-5) and torch.allclose(l2, logit, atol=1e-5)
        assert traced is not None
        e3, _ = loaded(torch.randint(0, 256, (5, size, size, 3), dtype=torch.uint8))  # other batch size
        assert e3.shape == (5, 8)


def test_lightgbm_bag_out_of_fold_by_frame_and_text_round_trip(tmp_path):
    import lightgbm

    rng = np.random.default_rng(3)
    frames = 60
    labels = (rng.random(frames) < 0.4).astype(int)
    x = rng.normal(size=(frames, 4)) + 1.5 * labels[:, None]
    # two copies per frame, the second with missing values
    x2 = x.copy()
    x2[rng.random(x2.shape) < 0.5] = np.nan
    values = np.concatenate([x, x2])
    row_labels = np.concatenate([labels, labels])
    row_frame = np.concatenate([np.arange(frames), np.arange(frames)])
    folds = frame_folds(labels, 5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [12] * 5
    bag = fit_bag(values, row_labels, row_frame, folds, kinds=KINDS, rounds=10, seed=0, threads=1, progress=False)
    assert len(bag.boosters) == 4 * 5 and bag.oof.shape == (2 * frames,)
    assert binary_metrics(row_labels, bag.oof, 0.5)["auroc"] > 0.7
    paths = bag.save(tmp_path / "trees")
    loaded = TreeBag([lightgbm.Booster(model_file=str(p)) for p in paths], bag.names)
    assert np.allclose(loaded.predict(values), bag.predict(values), atol=1e-12)
    with pytest.raises(TrainingError, match="too few frames"):
        frame_folds(np.array([0] * 10 + [1] * 3), 5, 0)


def test_threshold_for_recall_and_metrics():
    labels = np.array([0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.2, 0.7, 0.8, 0.9])
    t = threshold_for_recall(labels, scores, 0.75)
    assert t == pytest.approx(0.7)
    m = binary_metrics(labels, scores, t)
    assert m["recall"] == 0.75 and m["confusion_matrix"] == [[2, 0], [1, 3]]
    assert m["precision"] == 1.0 and m["accuracy"] == pytest.approx(5 / 6)
    assert threshold_for_recall(labels, scores, 1.0) == pytest.approx(0.2)
    assert binary_metrics(np.zeros(3), np.zeros(3), 0.5)["auroc"] is None


def test_operating_threshold_keeps_the_recall_target_when_precision_allows_it():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8])
    assert operating_threshold(labels, scores, 0.75, 0.9) == pytest.approx(threshold_for_recall(labels, scores, 0.75))
    assert operating_threshold(labels, scores, 0.75, 0.9) == pytest.approx(0.6)


def test_operating_threshold_backs_off_the_recall_target_at_the_precision_floor():
    # One defect scores among the good frames: recall 1.0 would flag two good frames of five.
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    scores = np.array([0.10, 0.20, 0.30, 0.40, 0.45, 0.15, 0.60, 0.70, 0.80, 0.90])
    assert threshold_for_recall(labels, scores, 1.0) == pytest.approx(0.15)
    t = operating_threshold(labels, scores, 1.0, 0.9)
    assert t == pytest.approx(0.6)  # the most recall (0.8) at precision >= 0.9
    m = binary_metrics(labels, scores, t)
    assert m["precision"] >= 0.9 and m["recall"] == pytest.approx(0.8)
    # No floor: recall alone, as before.
    assert operating_threshold(labels, scores, 1.0, 0.0) == pytest.approx(0.15)
    # A floor no threshold reaches: the recall threshold, not a threshold that flags nothing.
    hopeless = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.2, 0.3, 0.4, 0.45])
    assert operating_threshold(labels, hopeless, 0.8, 0.9) == pytest.approx(threshold_for_recall(labels, hopeless, 0.8))


def test_encoder_forward_argument_is_named_like_the_triton_input():
    import inspect

    assert list(inspect.signature(ImageEncoder.forward).parameters)[1] == core.ROI_INPUT


def test_recall_bound_counts_parameter_defects_only_when_a_bad_field_was_read():
    from training.ablation import recall_bound

    fields = ["temp", "speed"]
    causes = ["object", "param", "param", "param", "none"]
    details = [["void"], ["temp"], ["temp", "speed"], ["speed"], []]
    missing = np.array([[True, True], [True, False], [True, False], [True, False], [False, False]])
    # object: found whatever is missing; temp alone missing -> lost; temp+speed with speed read -> found;
    # speed read -> found; the good frame does not count.
    assert recall_bound(causes, details, fields, missing) == pytest.approx(3 / 4)
    assert recall_bound(causes, details, fields, np.zeros_like(missing)) == 1.0
    assert recall_bound(["none"], [[]], fields, missing[:1]) is None


def test_platt_calibration_keeps_the_ranking_and_moves_the_decision_boundary():
    from training.fusion import fit_calibration

    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.4).astype(int)
    # An averaged-down mixture: defects score around 0.35, good frames around 0.1.
    p = np.clip(np.where(labels == 1, 0.35, 0.1) + rng.normal(0, 0.05, 400), 0.01, 0.99)
    calibration = fit_calibration(p, labels)
    assert calibration is not None and calibration["slope"] > 0
    calibrated = core.calibrate(p, calibration)
    order = np.argsort(p)
    assert np.all(np.diff(calibrated[order]) >= -1e-12)  # monotone: AUROC unchanged
    assert (p[labels == 1] >= 0.5).mean() < 0.1  # raw: 0.5 misses nearly every defect
    assert (calibrated[labels == 1] >= 0.5).mean() > 0.9  # calibrated: 0.5 is a decision boundary
    assert fit_calibration(p, np.zeros(400, dtype=int)) is None
    assert np.array_equal(core.calibrate(p, None), p)


def test_recall_at_precision_reads_the_pr_curve():
    from training.metrics import recall_at_precision

    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    assert recall_at_precision(labels, scores, 1.0) == pytest.approx(2 / 3)  # top two only
    assert recall_at_precision(labels, scores, 0.75) == pytest.approx(1.0)  # 3 of the top 4
    assert recall_at_precision(labels, -scores, 0.9) == 0.0
    assert recall_at_precision(np.zeros(3), scores[:3], 0.9) is None
    assert binary_metrics(labels, scores, 0.5)["recall_at_p90"] == pytest.approx(2 / 3)


def test_keeping_the_last_epoch_serves_it_while_the_peak_follows_the_best():
    model = torch.nn.Linear(1, 1, bias=False)

    def offers(keep: str) -> BestEpoch:
        kept = BestEpoch(keep=keep)
        for epoch, score in enumerate((0.7, 0.9, None, 0.6), start=1):
            torch.nn.init.constant_(model.weight, float(epoch))
            kept.offer(0, epoch, score, model)
        return kept

    best, last = offers(KEEP_BEST), offers("last")
    assert (best.epoch, best.auroc, best.peak, float(best.state["weight"])) == (2, 0.9, 0.9, 2.0)
    assert (last.epoch, last.auroc, last.peak, float(last.state["weight"])) == (4, 0.6, 0.9, 4.0)
    restored = BestEpoch.from_checkpoint(last.to_checkpoint())
    assert (restored.keep, restored.peak, restored.summary()) == ("last", 0.9, last.summary())
    assert BestEpoch(0, 3, 0.8).peak == 0.8  # a checkpoint from before --cnn-keep: its best is its peak
    with pytest.raises(ValueError, match="unknown CNN epoch to keep"):
        BestEpoch(keep="middle")


@pytest.mark.parametrize(("best", "warned"), [
    (BestEpoch(0, 3, 0.52), True),
    (BestEpoch(1, 2, 0.81), False),
    (BestEpoch(), False),                            # one class in validation: no epoch scored
])
def test_training_warns_when_the_image_branch_did_not_learn(best, warned):
    note = image_branch_note(best)
    assert (note is not None) == warned
    if warned:
        assert "validation AUROC 0.52 < 0.6" in note and "--cnn-restarts" in note


def test_grid_mask_rises_from_zero_over_the_warmup_share_of_the_epochs():
    assert [grid_mask_probability(0.3, e, 10, 0.5) for e in (0, 1, 5, 9)] == pytest.approx([0.0, 0.06, 0.3, 0.3])
    assert grid_mask_probability(0.3, 0, 10, 0.0) == 0.3  # no warm-up: the paper's schedule
    assert grid_mask_probability(0.3, 9, 10, 1.0) == pytest.approx(0.27)


def test_a_parameter_defect_counts_under_each_of_its_fields():
    assert defect_kinds("none") == []
    assert defect_kinds("object:scratch") == ["object:scratch"]
    assert defect_kinds("param:temp,humidity") == ["param:temp", "param:humidity"]


def test_object_defects_are_also_pooled_by_severity_where_it_is_known():
    labels = np.array([0, 0, 1, 1, 1, 1, 1])
    probs = np.array([0.1, 0.3, 0.9, 0.2, 0.8, 0.6, 0.7])
    defects = ["none", "none", "object:scratch", "object:scratch", "object:void", "object:void", "param:temp"]
    subtle = [None, None, False, True, False, None, None]
    rows = metrics_by_defect(labels, probs, defects, 0.5, subtle)
    assert rows[PLAIN_OBJECTS] == {"n": 2, "recall": 1.0, "auroc": 1.0}
    assert rows[SUBTLE_OBJECTS] == {"n": 1, "recall": 0.0, "auroc": 0.5}  # 0.2: above one good frame of two
    assert rows["object:void"]["n"] == 2  # the unknown one counts under its kind only
    assert set(metrics_by_defect(labels, probs, defects, 0.5)) == {"object:scratch", "object:void", "param:temp"}


def _gate_outputs(labels: np.ndarray, p_image: np.ndarray, p_params: np.ndarray) -> dict[str, np.ndarray]:
    n = len(labels)
    return {"kl_scores": np.zeros((n, 2)), "present_fraction": np.ones(n),
            "branch_probabilities": np.stack([p_image, p_params, np.full(n, 0.5)], axis=1)}


def test_the_logit_combination_weighs_each_branch_by_what_it_tells():
    """The image branch ranks the frames, the params branch is noise and the fused one is weaker
    evidence of the same: the learned weights put the image first, hold the noise near 0 and
    never below, and the combination ranks the frames at least as well as the best branch."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 150)
    image = core.sigmoid(2.5 * labels + rng.normal(size=300))
    noise = core.sigmoid(rng.normal(size=300))
    fused = core.sigmoid(1.0 * labels + rng.normal(size=300) * 1.5)
    gate_params = {"image": {"center": 0.0, "tau": 1.0, "off": 10.0},
                   "params": {"center": 0.0, "tau": 1.0, "off": 10.0}}
    out = {**_gate_outputs(labels, image, noise), "branch_probabilities": np.stack([image, noise, fused], axis=1)}
    learned = fit_combination([(labels, out)], gate_params)
    weights = learned["base_weights"]
    assert learned["combine"] == core.COMBINE_LOGIT
    assert weights["image"] > weights["fused"] and weights["image"] > 5 * weights["params"]
    assert min(weights.values()) >= 0.0
    p, _ = core.combine(out["branch_probabilities"], out["kl_scores"], out["present_fraction"],
                        {**gate_params, **learned})
    assert roc_auc_score(labels, p) >= roc_auc_score(labels, image) - 1e-9
    # a branch that ranks the frames backwards is not turned round: its weight stays 0
    backwards = {**out, "branch_probabilities": np.stack([image, 1 - image, fused], axis=1)}
    assert fit_combination([(labels, backwards)], gate_params)["base_weights"]["params"] == 0.0
    # one class on the validation frames: nothing to learn from
    assert fit_combination([(np.zeros(300), out)], gate_params) is None


def test_the_logit_combination_learns_from_every_view_it_is_given():
    """With the fields missing the params branch says nothing; learned over both views, its weight
    is below the one learned where it was always read."""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 150)
    informative = core.sigmoid(2.0 * labels + rng.normal(size=300))
    image = core.sigmoid(1.0 * labels + rng.normal(size=300))
    gate_params = {"image": {"center": 0.0, "tau": 1.0, "off": 10.0},
                   "params": {"center": 0.0, "tau": 1.0, "off": 10.0}}
    printed = _gate_outputs(labels, image, informative)
    blind = _gate_outputs(labels, image, core.sigmoid(rng.normal(size=300)))
    alone = fit_combination([(labels, printed)], gate_params)["base_weights"]
    both = fit_combination([(labels, printed), (labels, blind)], gate_params)["base_weights"]
    assert both["params"] < alone["params"]


def test_validation_views_hold_the_states_and_reuse_the_clean_images(make_frames):
    frames = make_frames(12)
    stage = SimpleNamespace(val_embedding=np.zeros((12, 4), np.float32), val_logit=np.zeros(12, np.float32),
                            model=ImageEncoder("compact", 4, 32).eval())
    views = validation_views(stage, frames, seed=0, device="cpu")
    assert [(missing > 0, masked > 0) for missing, masked in GATE_CHOICE_STATES] == [(False, False), (True, False)]
    assert [(bool(v.frames.missing.sum() > frames.missing.sum()), v.embedding is stage.val_embedding)
            for v in views] == [(False, True), (True, True)]
    assert views[0].frames is frames
    assert np.array_equal(views[1].frames.rois, frames.rois)  # fields dropped, images as they were
