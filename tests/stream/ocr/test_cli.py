"""`oanet ocr` and `oanet bench ocr` end to end on generated datasets (real OCR, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from oanet.cli import main
from oanet.profile import LineProfile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oanet.profile import load_profile
    from tests.stream.frames import DEFAULT_PROFILE
    from training.synth.generate import generate

    root = tmp_path_factory.mktemp("ocr-cli") / "d"
    generate(root, load_profile(DEFAULT_PROFILE), 12, seed=1, workers=1, progress=False)
    return root


def test_ocr_writes_records_scores_and_caches(dataset: Path, tmp_path: Path, capsys, line_profile: LineProfile) -> None:
    out = tmp_path / "records.jsonl"
    args = ["ocr", "--data", str(dataset), "--mode", "template", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "12 frames" in printed and "0 from cache" in printed
    assert "clean" in printed and "BELOW TARGET" not in printed
    assert "ms per field line" in printed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 12
    assert list(lines[0]["params"]) == line_profile.field_names
    assert lines[0]["id"] == "f000000" or lines[0]["id"].startswith("f")
    assert set(lines[0]) >= {"id", "params", "missing", "readings"}

    assert main(args) == 0
    assert "12 from cache" in capsys.readouterr().out
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["params"] for line in again] == [line["params"] for line in lines]


def test_field_never_printed_is_reported_all_missing(dataset: Path, tmp_path: Path, capsys) -> None:
    # Same frames, a profile that adds a field the machine never prints (no manifest truth).
    copy = tmp_path / "d2"
    copy.mkdir()
    (copy / "images").symlink_to(dataset / "images")
    (copy / "manifest.jsonl").write_text((dataset / "manifest.jsonl").read_text())
    profile = yaml.safe_load((dataset / "profile.yaml").read_text())
    profile["fields"].append({"name": "vacuum", "label": "VACUUM", "unit": "kPa", "roi": [504, 712, 496, 36]})
    (copy / "profile.yaml").write_text(yaml.safe_dump(profile))
    assert main(["ocr", "--data", str(copy), "--limit", "4", "--no-cache"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("vacuum"))
    assert "no ground truth" in row and "100.00%" in row


def test_bench_compares_both_modes(dataset: Path, capsys) -> None:
    assert main(["bench", "ocr", "--data", str(dataset), "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    assert "template" in printed and "full" in printed and "faster than full" in printed


def test_bad_dataset_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["ocr", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oanet ocr: error:") and "\n" not in err
