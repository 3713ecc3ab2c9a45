"""`oanet synth --objects`: real object images (a folder per class) in the object ROI of synthetic frames.

The fixture folders are tiny generated images in the Magnetic-tile layout; the real set is never needed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from oanet.cli import main
from oanet.dataset import load_dataset
from training.synth.generate import EXTRA_OBJECT_IMAGE, generate
from training.synth.objects import ObjectsError, class_kind, fit_to_roi, scan_objects

TILE_LINE = Path(__file__).parents[2] / "oanet" / "profiles" / "tile-line.yaml"
SHADE = {"MT_Free": 150, "MT_Crack": 60, "MT_Blowhole": 230}


def _tile(shade: int, index: int, size: tuple[int, int]) -> np.ndarray:
    image = np.full(size, shade, np.uint8)
    image[:, index % size[1]] = shade // 2  # a per-image mark, so the images differ
    return image


def make_objects(root: Path, per_class: int = 5) -> Path:
    """Magnetic-tile layout: MT_<Class>/Imgs/*.jpg, each with a same-stem *.png mask beside it."""
    for folder, shade in SHADE.items():
        imgs = root / folder / "Imgs"
        imgs.mkdir(parents=True)
        for i in range(per_class):
            size = (40 + 10 * i, 90) if i % 2 else (100, 30 + 5 * i)  # tall and wide, like the real set
            assert cv2.imwrite(str(imgs / f"exp{i}_num_{i}.jpg"), _tile(shade, i, size))
            assert cv2.imwrite(str(imgs / f"exp{i}_num_{i}.png"), np.zeros(size, np.uint8))  # the mask
    (root / "README.md").write_text("not a class\n")
    return root


@pytest.fixture(scope="module")
def objects_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_objects(tmp_path_factory.mktemp("objects"))


def test_class_folders_masks_and_one_split_per_image(objects_dir):
    bank = scan_objects(objects_dir)
    assert bank.kinds == ("blowhole", "crack")
    assert len(bank.good) == 5 and all(len(images) == 5 for images in bank.defects.values())
    every = [*bank.good, *(i for images in bank.defects.values() for i in images)]
    assert all(i.path.suffix == ".jpg" for i in every)  # masks are not images to place
    for images in (bank.good, *bank.defects.values()):
        assert Counter(i.split for i in images) == {"train": 3, "val": 1, "test": 1}
    assert [class_kind(n) for n in ("MT_Blowhole", "Pin Hole", "ok")] == ["blowhole", "pin_hole", "ok"]


def test_fit_keeps_the_whole_image_and_its_aspect(objects_dir):
    image = np.zeros((20, 60, 3), np.uint8)
    image[:, :30] = 200
    fitted = fit_to_roi(image, 90, 90)
    assert fitted.shape == (90, 90, 3)
    # Scaled 1.5x to 90x30 in the middle band; the bands above and below mirror it.
    assert np.array_equal(fitted[30:60], cv2.resize(image, (90, 30), interpolation=cv2.INTER_LINEAR))
    assert (fitted[:, :40] > 150).all() and (fitted[:, 50:] < 50).all()
    assert fit_to_roi(np.zeros((3, 200, 3), np.uint8), 64, 64).shape == (64, 64, 3)


def test_frames_show_the_class_images_of_their_own_split(tmp_path, objects_dir, line_profile):
    out = tmp_path / "d"
    bank = scan_objects(objects_dir)
    generate(out, line_profile, 30, seed=2, workers=1, progress=False, objects=bank, defect_rate=0.6,
             width=256, height=192)
    dataset = load_dataset(out)
    split_of = {i.relative: i.split for i in [*bank.good, *(i for v in bank.defects.values() for i in v)]}
    causes = Counter(e.defect for e in dataset)
    assert {d for d in causes if d.startswith("object:")} == {"object:blowhole", "object:crack"}
    assert any(d.startswith("param:") for d in causes)
    x, y, w, h = (v // 4 for v in line_profile.object_roi)  # frames at a quarter of the profile's size
    for entry in dataset:
        source = entry.extra[EXTRA_OBJECT_IMAGE]
        assert split_of[source] == entry.split
        folder = source.split("/")[0]
        expected = {"none": "MT_Free", "object:blowhole": "MT_Blowhole", "object:crack": "MT_Crack"}.get(entry.defect)
        if entry.defect_cause != "param":
            assert folder == expected
        else:
            assert folder == "MT_Free"
        # The object ROI shows the class's image (flat shade), not a drawn package.
        roi = cv2.cvtColor(dataset.read_image(entry)[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
        assert abs(float(np.median(roi)) - SHADE[folder]) < 45, (entry.id, folder, np.median(roi))


def test_objects_frames_are_deterministic_whatever_the_worker_count(tmp_path, objects_dir, line_profile):
    def digest(root: Path) -> str:
        h = hashlib.sha256((root / "manifest.jsonl").read_bytes())
        for image in sorted((root / "images").iterdir()):
            h.update(image.read_bytes())
        return h.hexdigest()

    bank = scan_objects(objects_dir)
    generate(tmp_path / "a", line_profile, 12, seed=9, workers=1, progress=False, objects=bank, width=256, height=192)
    generate(tmp_path / "b", line_profile, 12, seed=9, workers=2, progress=False, objects=bank, width=256, height=192)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_cli_synth_objects_and_its_errors(tmp_path, objects_dir, capsys):
    out = tmp_path / "d"
    assert main(["synth", "--objects", str(objects_dir), "--out", str(out), "--n", "6", "--workers", "1",
                 "--width", "256", "--height", "180", "--profile", str(TILE_LINE)]) == 0
    printed = capsys.readouterr().out
    assert "good 5, blowhole 5, crack 5 images" in printed and "wrote 6 real-object frames" in printed
    assert load_dataset(out).profile.name == "tile-line"

    def error(objects: Path) -> str:
        assert main(["synth", "--objects", str(objects), "--out", str(tmp_path / "x"), "--n", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "is not a folder" in error(tmp_path / "nothing")
    few = make_objects(tmp_path / "few", per_class=2)
    assert "'MT_Blowhole' has 2 image(s); each class needs at least 3" in error(few)
    only_good = tmp_path / "only_good"
    (only_good / "good").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(only_good / "good" / f"{i}.png"), _tile(100, i, (30, 30)))
    assert "no defect class folder" in error(only_good)
    no_good = tmp_path / "no_good"
    (no_good / "scratch").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(no_good / "scratch" / f"{i}.png"), _tile(100, i, (30, 30)))
    assert "no good class folder" in error(no_good)
    broken = make_objects(tmp_path / "broken")
    (broken / "MT_Crack" / "Imgs" / "exp0_num_0.jpg").write_bytes(b"not an image")
    assert "exp0_num_0.jpg is not an image OpenCV can read" in error(broken)
