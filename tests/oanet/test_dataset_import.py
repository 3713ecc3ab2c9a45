"""`oanet dataset import`: real frames + a labels CSV -> a validated dataset folder, or one clear error."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from oanet.cli import main
from oanet.dataset import load_dataset
from oanet.dataset_import import UNSPECIFIED_DEFECT, DatasetImportError, import_dataset
from oanet.profile import load_profile

PROFILE_FILE = Path(__file__).parents[1] / "data" / "profiles" / "line-t.yaml"
PROFILE = load_profile(PROFILE_FILE)  # 320x240 frames; fields temp, force, ...
HEADER = "image,label,defect,group,temp"


def _frame(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    ramp = np.add.outer(np.arange(height), np.arange(width)) + 7 * seed  # cheap to encode, distinct per seed
    return np.repeat((ramp % 256).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture
def line(tmp_path: Path) -> Path:
    """A folder of 24 frames in two sub-folders (lots), PNG and JPEG, and one BMP."""
    images = tmp_path / "frames"
    for i in range(24):
        folder = images / f"lot{i // 12}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = (".png", ".jpg")[i % 2] if i != 23 else ".bmp"
        assert cv2.imwrite(str(folder / f"f{i:02d}{suffix}"), _frame(i))
    return images


def _csv(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _rows(images: Path) -> list[str]:
    """Label 1 every third frame; groups of three consecutive frames; temp on even frames."""
    rows = []
    for path in sorted(images.rglob("f*.*")):
        i = int(path.stem[1:])
        label = int(i % 3 == 0)
        defect = ("object:scratch" if i % 2 else "param:temp") if label else ""
        temp = f"{170 + i / 10:.1f}" if i % 2 == 0 else ""
        rows.append(f"{path.relative_to(images).as_posix()},{label},{defect},g{i // 3},{temp}")
    return rows


def test_import_builds_a_dataset_every_tool_reads(tmp_path, line):
    labels = _csv(tmp_path, _rows(line))
    out = tmp_path / "ds"
    result = import_dataset(line, labels, PROFILE, out, seed=4, progress=False)
    dataset = load_dataset(out)
    assert result.frames == len(dataset) == 24
    assert dataset.profile == PROFILE
    by_id = {e.id: e for e in dataset}
    first = by_id["lot0/f00.png"]
    assert first.label == 1 and first.defect == "param:temp" and first.params == {"temp": 170.0}
    assert by_id["lot0/f01.jpg"].params == {}  # no value in the CSV: OCR reads it at training
    assert by_id["lot0/f03.jpg"].defect == "object:scratch"
    # Bytes kept for PNG/JPEG; another format is stored as PNG with the same pixels.
    assert (out / by_id["lot0/f01.jpg"].image).read_bytes() == (line / "lot0/f01.jpg").read_bytes()
    bmp = by_id["lot1/f23.bmp"]
    assert bmp.image == "images/lot1/f23.png" and result.converted == 1
    assert np.array_equal(dataset.read_image(bmp), cv2.imread(str(line / "lot1/f23.bmp")))
    # Groups stay in one split; every split has frames; the seed decides.
    splits_of_group = defaultdict(set)
    for entry in dataset:
        splits_of_group[entry.extra["group"]].add(entry.split)
    assert all(len(s) == 1 for s in splits_of_group.values())
    assert {e.split for e in dataset} == {"train", "val", "test"}
    again = tmp_path / "again"
    import_dataset(line, labels, PROFILE, again, seed=4, progress=False)
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()
    splits = {seed: [e.split for e in load_dataset(import_dataset(line, labels, PROFILE, tmp_path / f"s{seed}",
                                                                  seed=seed, progress=False).root)]
              for seed in range(5)}
    assert len({tuple(s) for s in splits.values()}) > 1


def test_given_splits_are_kept_and_a_group_follows_its_given_split(tmp_path, line):
    rows = [f"lot0/f{i:02d}.{('png', 'jpg')[i % 2]},{i % 2},,{'A' if i < 4 else f'b{i}'},,"
            + ("test" if i == 0 else "val" if i == 5 else "") for i in range(12)]
    labels = _csv(tmp_path, rows, header="image,label,defect,group,temp,split")
    dataset = load_dataset(import_dataset(line, labels, PROFILE, tmp_path / "ds", progress=False).root)
    split = {e.id: e.split for e in dataset}
    assert [split[f"lot0/f{i:02d}.{('png', 'jpg')[i % 2]}"] for i in range(4)] == ["test"] * 4
    assert split["lot0/f05.jpg"] == "val"
    unspecified = [e for e in dataset if e.label == 1]
    assert unspecified and all(e.defect == UNSPECIFIED_DEFECT for e in unspecified)


def test_without_val_split_validation_is_carved_by_group(tmp_path, line):
    rows = [f"lot0/f{i:02d}.{('png', 'jpg')[i % 2]},{i % 2},,g{i // 2},,{'test' if i >= 10 else 'train'}"
            for i in range(12)]
    labels = _csv(tmp_path, rows, header="image,label,defect,group,temp,split")
    dataset = load_dataset(import_dataset(line, labels, PROFILE, tmp_path / "ds", progress=False).root)
    groups = defaultdict(set)
    for e in dataset:
        groups[e.extra["group"]].add(e.split)
    assert {s for g in groups.values() for s in g} == {"train", "val", "test"}
    assert all(len(s) == 1 for s in groups.values())


BAD_LINES = [
    (["lot0/f00.png,1,,g,", "lot0/nothere.png,0,,g,"], "line 3: image .*nothere.png not found"),
    (["lot0/f00.png,2,,g,"], "line 2: label must be 0 or 1, got '2'"),
    (["lot0/f00.png,1,object:Blow Hole,g,"], "line 2: defect must be"),
    (["lot0/f00.png,1,param:humidity,g,"], "line 2: defect 'param:humidity' names field.* not in the line profile: humidity"),
    (["lot0/f00.png,0,object:scratch,g,"], "line 2: label 0 contradicts defect"),
    (["lot0/f00.png,0,,g,", "lot0/f02.png,0,,g,", "lot0/./f00.png,1,,h,"],
     "line 4: duplicate image 'lot0/f00.png' \\(first on line 2\\)"),
    (["lot0/f00.png,0,,g,hot"], "line 2: temp must be a number, got 'hot'"),
    (["../frames/lot0/f00.png,0,,g,"], "line 2: image .* must be a path relative to --images"),
    (["lot0/f00.png,0,,g"], "line 2: 4 cell\\(s\\), the header has 5"),
    (["lot0/f00.png,0,,g,", "lot0/corrupt.png,0,,g,"], "line 3: image .*corrupt.png is not a decodable image"),
    (["lot0/f00.png,0,,g,", "lot0/wide.png,0,,g,"], "line 3: image .*wide.png is 400x100, the profile 'line-t' "
     "frame is 320x240"),
]


@pytest.mark.parametrize(("lines", "message"), BAD_LINES)
def test_a_bad_line_is_one_error_with_its_line_number_and_nothing_is_written(tmp_path, line, lines, message):
    (line / "lot0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert cv2.imwrite(str(line / "lot0" / "wide.png"), _frame(0, 400, 100))
    out = tmp_path / "ds"
    with pytest.raises(DatasetImportError, match=message):
        import_dataset(line, _csv(tmp_path, lines), PROFILE, out, progress=False)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "labels.csv"]  # no temporary folder left


@pytest.mark.parametrize(("header", "lines", "message"), [
    ("image,label,colour", ["lot0/f00.png,0,red"], "line 1: unknown column\\(s\\) 'colour'; expected image"),
    ("image,defect", ["lot0/f00.png,"], "line 1: the header has no 'label' column"),
    ("image,label,label", ["lot0/f00.png,0,0"], "line 1: duplicate column\\(s\\): label"),
    ("image,label,split", ["lot0/f00.png,0,dev"], "line 2: split must be one of train, val, test"),
    ("image,label,group,split", ["lot0/f00.png,0,B7,train", "lot0/f02.png,0,B7,test"],
     "line 3: group 'B7' is in split train on line 2 and test here"),
    ("image,label", [], "lists no frames"),
])
def test_bad_csv_structure_is_one_clear_error(tmp_path, line, header, lines, message):
    with pytest.raises(DatasetImportError, match=message):
        import_dataset(line, _csv(tmp_path, lines, header=header), PROFILE, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_cli_imports_and_reports_errors_on_one_line(tmp_path, line, capsys):
    labels = _csv(tmp_path, _rows(line))
    out = tmp_path / "ds"
    args = ["dataset", "import", "--images", str(line), "--labels", str(labels), "--profile", str(PROFILE_FILE),
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "imported 24 frames" in printed and "from the CSV for 12 frame(s); 12 read by OCR" in printed

    # A non-empty --out needs --overwrite; a failed import with --overwrite leaves the old folder as it was.
    assert main(args) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    before = (out / "manifest.jsonl").read_text()
    (line / "lot0" / "f00.png").unlink()
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oanet dataset: error:") and "line 2: image" in err[0]
    assert (out / "manifest.jsonl").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "frames", "labels.csv"]


def test_training_takes_a_line_without_parameter_columns_through_ocr_only(tmp_path, line):
    from training.data import load_bundle
    from training.errors import TrainingError

    rows = [r.rsplit(",", 1)[0] + "," for r in _rows(line)]  # no temp values
    out = import_dataset(line, _csv(tmp_path, rows), PROFILE, tmp_path / "ds", progress=False).root
    assert load_bundle(out, 32, "ocr", splits=()).feature_names == ["temp", "force", "speed"]
    with pytest.raises(TrainingError, match="--features ocr reads the printed panel"):
        load_bundle(out, 32, "truth", splits=())
