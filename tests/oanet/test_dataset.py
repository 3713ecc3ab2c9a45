"""The dataset folder contract: manifest validation with line numbers, splits, image reading."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import cv2
import numpy as np
import pytest

from oanet.dataset import (
    DatasetError,
    ManifestEntry,
    load_dataset,
    parse_manifest,
    split_for_id,
    write_dataset,
)
from oanet.profile import load_profile

PROFILE = load_profile(str(resources.files("oanet") / "profiles" / "line-a.yaml"))
GOOD = {"id": "f1", "image": "images/f1.png", "label": 0, "defect": "none",
        "params": {"temp": 172.4, "lot_id": "AB1234-07", "us_power": 98}}


def _line(**changes) -> str:
    line = {**GOOD, **changes}
    return json.dumps({k: v for k, v in line.items() if v is not ...})


def _entry(i: int, **changes) -> ManifestEntry:
    fields = dict(id=f"f{i:06d}", image=f"images/f{i:06d}.png", label=0, defect="none",
                  params={"temp": 170.0}, split=split_for_id(f"f{i:06d}"))
    fields.update(changes)
    return ManifestEntry(**fields)


def test_round_trip_with_extra_keys_and_images(tmp_path):
    entries = [_entry(0, extra={"smudged": ["temp"], "nuisance": ["blur", "smudge"]}),
               _entry(1, label=1, defect="param:temp,tilt", params={"temp": 190.5, "tilt": -0.75})]
    write_dataset(tmp_path, PROFILE, entries)
    (tmp_path / "images").mkdir()
    image = np.full((768, 1024, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / entries[0].image), image)
    dataset = load_dataset(tmp_path)
    assert dataset.entries == entries and len(dataset) == 2
    assert dataset.profile == PROFILE
    assert dataset.entries[0].smudged_fields == {"temp"}
    assert dataset.entries[0].nuisance_kinds == ("blur", "smudge")
    assert dataset.entries[1].defect_cause == "param" and dataset.entries[1].defect_detail == ["temp", "tilt"]
    assert np.array_equal(dataset.read_image(dataset.entries[0]), image)
    with pytest.raises(DatasetError, match="frame f000001: cannot read image .*f000001.png"):
        dataset.read_image(dataset.entries[1])
    (tmp_path / entries[1].image).write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="not a decodable PNG/JPEG"):
        dataset.read_image(dataset.entries[1])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: malformed JSON"),
        ("[1, 2]", "line 2: a manifest line must be a JSON object"),
        (_line(id="f2", label=...), "line 2: label: missing key"),
        (_line(id="f2", label=2), "line 2: label: label must be 0 or 1, got 2"),
        (_line(id="f2", label=True), "line 2: label: Input should be a valid integer"),
        (_line(id="f2", split="dev"), "line 2: split: Input should be 'train', 'val' or 'test'"),
        (_line(), "line 2: duplicate id 'f1' (first on line 1)"),
        (_line(id="f2", params={"colour": 3}), "line 2: params names field 'colour', which is not in the line profile"),
        (_line(id="f2", params={"temp": "hot"}), "params.temp must be a number"),
        (_line(id="f2", params={"lot_id": 12}), "params.lot_id must be a string"),
        (_line(id="f2", defect="object"), "defect must be 'none', 'object:<kind>'"),
        (_line(id="f2", label=1, defect="param:colour"), "defect names field(s) not in the line profile: colour"),
        (_line(id="f2", label=1), "label 1 contradicts defect 'none'"),
        (_line(id="f2", image="/etc/passwd"), "image must be a path relative to the dataset folder"),
        (_line(id="f2", image="../x.png"), "image must be a path relative to the dataset folder"),
        (_line(id=""), "id: String should have at least 1 character"),
    ],
)
def test_bad_manifest_lines_are_named_by_number(line, message):
    with pytest.raises(DatasetError) as info:
        parse_manifest(_line() + "\n" + line + "\n", PROFILE, "m.jsonl")
    assert message in str(info.value) and str(info.value).startswith("m.jsonl line 2: ")


def test_extra_keys_null_params_and_blank_lines_are_fine():
    text = _line(camera="cam-2", params={"temp": None, "lot_id": "X"}) + "\n\n"
    [entry] = parse_manifest(text, PROFILE)
    assert entry.extra == {"camera": "cam-2"} and entry.params["temp"] is None


def test_empty_manifest():
    with pytest.raises(DatasetError, match="lists no frames"):
        parse_manifest("\n", PROFILE)


def test_missing_splits_are_deterministic_and_about_70_15_15():
    text = "\n".join(_line(id=f"f{i:06d}") for i in range(2000))
    splits = [e.split for e in parse_manifest(text, PROFILE)]
    assert splits == [e.split for e in parse_manifest(text, PROFILE)]
    counts = Counter(splits)
    assert 0.66 < counts["train"] / 2000 < 0.74
    assert 0.12 < counts["val"] / 2000 < 0.18 and 0.12 < counts["test"] / 2000 < 0.18


def test_val_is_carved_from_train_when_absent():
    text = "\n".join(_line(id=f"f{i}", split="train" if i % 10 < 7 else "test") for i in range(1000))
    entries = parse_manifest(text, PROFILE)
    counts = Counter(e.split for e in entries)
    assert counts["test"] == 300 and 100 < counts["val"] < 180 and counts["train"] + counts["val"] == 700
    assert all(e.split == "test" for e in entries if int(e.id[1:]) % 10 >= 7)


def test_explicit_splits_are_kept(tmp_path):
    entries = [_entry(i, split=s) for i, s in enumerate(["train", "val", "test", "train"])]
    write_dataset(tmp_path, PROFILE, entries)
    dataset = load_dataset(tmp_path)
    assert [e.id for e in dataset.split("train")] == ["f000000", "f000003"]
    assert len(dataset.split("val")) == 1
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        dataset.split("dev")


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="profile.yaml is missing"):
        load_dataset(tmp_path)
    write_dataset(tmp_path, PROFILE, [_entry(0)])
    (tmp_path / "manifest.jsonl").unlink()
    with pytest.raises(DatasetError, match="manifest.jsonl is missing"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(_line() + "\n")
    (tmp_path / "profile.yaml").write_text("name: x\n")
    with pytest.raises(DatasetError, match="invalid line profile: frame: missing key"):
        load_dataset(tmp_path)
