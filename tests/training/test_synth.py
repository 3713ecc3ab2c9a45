"""`oanet synth`: determinism, the dataset contract, the defect mix and bad arguments."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from oanet.cli import main
from oanet.dataset import load_dataset
from oanet.profile import DEFAULT_PROFILE_PATH, PRINT_FONTS, load_profile
from training.synth.generate import FrameSpec, SynthError, generate, render_frame
from training.synth.nuisance import NUISANCE_KINDS
from training.synth.params import FRAMES_PER_LOT, OBJECT_KINDS, object_kinds, sample_truth
from training.synth.panel import FONT_FACES, field_slots
from training.synth.scene import draw_object


def _digest(root: Path) -> str:
    h = hashlib.sha256((root / "manifest.jsonl").read_bytes())
    for image in sorted((root / "images").iterdir()):
        h.update(image.read_bytes())
    return h.hexdigest()


def test_same_seed_same_dataset_whatever_the_worker_count(tmp_path, small_dataset, line_profile):
    again = tmp_path / "again"
    generate(again, line_profile, 24, seed=5, workers=2, progress=False)
    assert _digest(again) == _digest(small_dataset)


def test_other_seed_other_dataset(tmp_path, small_dataset, line_profile):
    other = tmp_path / "other"
    generate(other, line_profile, 24, seed=6, workers=1, progress=False)
    assert _digest(other) != _digest(small_dataset)


def test_output_is_a_valid_dataset_folder(small_dataset, line_profile):
    dataset = load_dataset(small_dataset)
    assert len(dataset) == 24
    assert dataset.profile == line_profile
    assert [e.id for e in dataset] == [f"f{i:06d}" for i in range(24)]
    for entry in dataset:
        assert list(entry.params) == line_profile.field_names
        image = dataset.read_image(entry)
        assert image.shape == (768, 1024, 3) and image.dtype == np.uint8
        assert set(entry.nuisance_kinds) <= set(NUISANCE_KINDS)
        assert entry.smudged_fields <= set(line_profile.field_names)
        assert ("smudge" in entry.nuisance_kinds) == bool(entry.smudged_fields)
        # the severity the generator drew for an object defect, and no severity for other frames
        rng = np.random.default_rng([5, int(entry.id[1:])])
        lot_rng = np.random.default_rng([5, int(entry.id[1:]) // FRAMES_PER_LOT, 7])
        truth = sample_truth(line_profile, rng, 0.40, lot_rng, package="bga")
        assert entry.subtle == (truth.subtle if entry.defect_cause == "object" else None)
    assert {e.subtle for e in dataset if e.defect_cause == "object"} == {True, False}
    assert dataclasses.replace(dataset.entries[0], extra={"subtle": "false"}).subtle is None
    raw = (small_dataset / "manifest.jsonl").read_text().splitlines()[0]
    assert '"split":' in raw  # splits are written explicitly


def test_printed_values_match_their_spec_and_format(line_profile):
    causes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for index in range(600):
        rng = np.random.default_rng([11, index])
        truth = sample_truth(line_profile, rng, 0.4, np.random.default_rng([11, index // 50, 7]))
        causes[truth.defect.split(":")[0]] += 1
        if truth.object_kind:
            kinds[truth.object_kind] += 1
        for spec in line_profile.fields:
            value = truth.params[spec.name]
            if spec.kind == "text":
                assert isinstance(value, str) and re.fullmatch(spec.pattern, value)
                continue
            assert round(value, spec.decimals) == value  # recorded as printed
            inside = spec.in_spec(value)
            if truth.defect == "none" or truth.defect.startswith("object:"):
                assert inside, (truth.defect, spec.name, value)
            else:
                assert inside == (spec.name not in truth.out_of_spec), (truth.defect, spec.name, value)
                assert spec.plausible[0] <= value <= spec.plausible[1]
    defective = (causes["object"] + causes["param"]) / 600
    assert 0.33 < defective < 0.47
    assert causes["object"] > 0 and causes["param"] > 0
    assert set(kinds) == set(OBJECT_KINDS)


def test_parameter_regime_predicts_object_defects(line_profile):
    """The cross-modal relation: cracks come with a temperature near the top of its spec."""
    temps: dict[str, list[float]] = {"crack": [], "none": []}
    for index in range(3000):
        truth = sample_truth(line_profile, np.random.default_rng([3, index]), 0.5, np.random.default_rng(0))
        key = "crack" if truth.object_kind == "crack" else truth.defect
        if key in temps:
            temps[key].append(truth.params["temp"])
    assert np.mean(temps["crack"]) > np.mean(temps["none"]) + 3.0


def test_every_object_kind_renders(line_profile):
    for kind in OBJECT_KINDS:
        for subtle in (False, True):
            image = draw_object(448, 448, kind, subtle, np.random.default_rng(1))
            assert image.shape == (448, 448, 3) and image.dtype == np.uint8


def test_one_package_type_per_dataset(tmp_path, small_dataset, line_profile, capsys):
    """`--package`: a dataset shows one package type (default bga); only its defect kinds occur."""
    assert {e.extra["package"] for e in load_dataset(small_dataset)} == {"bga"}
    wire, ball = {"missing_wire", "bridged_wire"}, {"missing_ball", "bridged_ball"}
    assert set(object_kinds("bga")) == set(OBJECT_KINDS) - wire
    assert set(object_kinds("wirebond")) == set(OBJECT_KINDS) - ball
    assert object_kinds("mixed") == OBJECT_KINDS
    for package in ("bga", "wirebond"):
        kinds = {sample_truth(line_profile, np.random.default_rng([4, i]), 1.0, np.random.default_rng(0),
                              package=package).object_kind for i in range(400)}
        assert kinds - {None} == set(object_kinds(package))
    with pytest.raises(ValueError, match="cannot show"):
        draw_object(448, 448, "missing_wire", False, np.random.default_rng(0), package="bga")
    out = tmp_path / "wb"
    assert main(["synth", "--out", str(out), "--n", "4", "--seed", "5", "--workers", "1",
                 "--package", "wirebond"]) == 0
    assert "4 wirebond frames" in capsys.readouterr().out
    assert {e.extra["package"] for e in load_dataset(out)} == {"wirebond"}
    again = tmp_path / "wb2"
    generate(again, line_profile, 4, seed=5, workers=1, progress=False, package="wirebond")
    assert _digest(again) == _digest(out)  # deterministic by seed for a package too
    with pytest.raises(SynthError, match="--package must be one of"):
        generate(tmp_path / "x", line_profile, 2, seed=0, progress=False, package="qfn")


def test_defect_rate_is_honoured(line_profile):
    for rate in (0.0, 1.0):
        causes = {sample_truth(line_profile, np.random.default_rng([1, i]), rate, np.random.default_rng(0)).label
                  for i in range(50)}
        assert causes == {int(rate)}


def test_text_stays_inside_its_field_roi(line_profile):
    """Rendered ink of every field line lies inside its roi, so cropping the roi finds it."""
    spec = FrameSpec(line_profile, seed=2, defect_rate=0.4, width=1024, height=768)
    slots = field_slots(line_profile)
    px, py, pw, ph = line_profile.panel_roi
    for index in range(12):
        frame = render_frame(spec, index, 12)
        if frame.entry.smudged_fields or frame.entry.nuisance_kinds:
            continue
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY).astype(np.int16)
        background = int(np.median(gray[py:py + ph, px:px + pw]))
        ink = np.abs(gray - background) > 60
        for name, (x, y, w, h) in slots.items():
            assert ink[y:y + h, x:x + w].sum() > 50, (index, name)
            ink[y:y + h, x:x + w] = False
        ink[:py + 80, px:px + pw] = False  # the header line
        assert ink[py:py + ph, px:px + pw].sum() == 0, index


def test_other_frame_size_is_drawn_then_scaled(tmp_path, line_profile):
    root = tmp_path / "small-frames"
    generate(root, line_profile, 3, seed=1, width=640, height=480, image_format="jpeg", workers=1, progress=False)
    dataset = load_dataset(root)
    assert all(e.image.endswith(".jpg") for e in dataset)
    assert dataset.read_image(dataset.entries[0]).shape == (480, 640, 3)


def test_cli_writes_dataset_and_preview(tmp_path, capsys):
    out, preview = tmp_path / "d", tmp_path / "d" / "preview.png"
    assert main(["synth", "--out", str(out), "--n", "14", "--seed", "3", "--workers", "1",
                 "--preview", str(preview)]) == 0
    stdout = capsys.readouterr().out
    assert "frames/s" in stdout.splitlines()[-1]
    grid = cv2.imread(str(preview))
    assert grid is not None and grid.shape[1] == 4 * 320 and grid.shape[0] > 3 * 240
    assert len(load_dataset(out)) == 14


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be a positive"),
        (["--n", "5", "--defect-rate", "1.5"], "--defect-rate must be between 0 and 1"),
        (["--n", "5", "--workers", "0"], "--workers must be >= 1"),
        (["--n", "5", "--width", "4"], "--width must be between"),
        (["--n", "5", "--profile", "/nonexistent/profile.yaml"], "line profile not found"),
        (["--n", "5", "--preview", "grid.txt"], "--preview must name a .png"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, args, message):
    assert main(["synth", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_non_empty_output_needs_overwrite(tmp_path, capsys, line_profile):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(out), "--n", "2", "--workers", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    generate(out, line_profile, 2, seed=0, workers=1, overwrite=True, progress=False)
    assert len(load_dataset(out)) == 2 and (out / "notes.txt").exists()


def test_bad_profile_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nframe: {width: 100, height: 100}\nobject_roi: [0, 0, 200, 50]\n"
                   "panel_roi: [0, 50, 100, 50]\nfields: [{name: a, label: A}]\n")
    assert main(["synth", "--out", str(tmp_path / "d"), "--n", "2", "--profile", str(bad)]) == 2
    assert "object_roi [0, 0, 200, 50] lies outside the 100x100 frame" in capsys.readouterr().err


def test_unwritable_output_is_a_clear_error(tmp_path, line_profile):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SynthError, match="is not a folder"):
        generate(blocker, line_profile, 1, seed=0, progress=False)


def test_a_custom_profile_without_field_rois_works(tmp_path):
    profile_file = tmp_path / "p.yaml"
    profile_file.write_text(
        "name: line-b\nframe: {width: 800, height: 600}\nobject_roi: [10, 200, 380, 380]\n"
        "panel_roi: [420, 10, 370, 580]\nfields:\n"
        "  - {name: serial, label: SN, kind: text, pattern: '^S[0-9]{5}$'}\n"
        "  - {name: heat, label: HEAT, unit: C, spec: [100, 120], decimals: 1}\n"
        "  - {name: offset, label: OFS, spec: [-1, 1], decimals: 3}\n"
    )
    out = tmp_path / "d"
    assert main(["synth", "--out", str(out), "--n", "6", "--workers", "1", "--profile", str(profile_file),
                 "--defect-rate", "1"]) == 0
    dataset = load_dataset(out)
    assert dataset.profile.name == "line-b"
    assert all(e.label == 1 and set(e.params) == {"serial", "heat", "offset"} for e in dataset)
    assert dataset.read_image(dataset.entries[0]).shape == (600, 800, 3)


def test_a_profile_prints_in_its_own_style():
    """line-c (issue 13's untuned layout) names its faces and separators; the generator uses
    them, and every face a profile may name has an OpenCV face."""
    assert set(FONT_FACES) == set(PRINT_FONTS)
    profile = load_profile(DEFAULT_PROFILE_PATH.parent / "line-c.yaml")
    spec = FrameSpec(profile, seed=2, defect_rate=0.4, width=profile.frame.width, height=profile.frame.height)
    slots = field_slots(profile)
    for index in range(6):
        frame = render_frame(spec, index, 6)
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY).astype(np.int16)
        px, py, pw, ph = profile.panel_roi
        ink = np.abs(gray - int(np.median(gray[py:py + ph, px:px + pw]))) > 60
        for name, (x, y, w, h) in slots.items():
            if name not in frame.entry.smudged_fields:
                assert ink[y:y + h, x:x + w].sum() > 50, (index, name)
