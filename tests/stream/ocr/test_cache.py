"""OCR feature cache: keyed by image content, profile, engine version and mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oanet.dataset import ManifestEntry, load_dataset, write_dataset
from oanet.profile import LineProfile
from stream.ocr.cache import OcrCache
from stream.ocr.reader import iter_records, read_dataset_records
from stream.ocr.records import REASON_NOT_READ, FieldReading, ParameterRecord
from stream.ocr.settings import OcrSettings
from tests.stream.frames import encode


def _record(profile: LineProfile, value: float) -> ParameterRecord:
    readings = tuple(
        FieldReading(f.name, value if f.kind == "number" else "AB1234-07", "raw", 0.9) for f in profile.fields
    )
    return ParameterRecord(readings, mode="template")


def test_hit_and_miss(tmp_path: Path, line_profile: LineProfile) -> None:
    with OcrCache(tmp_path, line_profile, "v1", "template") as cache:
        assert cache.get(b"image-a") is None
        cache.put(b"image-a", _record(line_profile, 1.0))
        hit = cache.get(b"image-a", frame_id="f7")
        assert hit is not None and hit.frame_id == "f7" and hit.values[1] == 1.0
        assert cache.get(b"image-b") is None
        assert (cache.hits, cache.misses) == (1, 2)
    # Persistent across processes/opens.
    with OcrCache(tmp_path, line_profile, "v1", "template") as cache:
        assert cache.get(b"image-a") is not None
        assert cache.count() == 1


def test_key_changes_with_engine_mode_and_profile(tmp_path: Path, line_profile: LineProfile) -> None:
    with OcrCache(tmp_path, line_profile, "v1", "template") as cache:
        cache.put(b"image-a", _record(line_profile, 1.0))
    with OcrCache(tmp_path, line_profile, "v2", "template") as cache:
        assert cache.get(b"image-a") is None
    with OcrCache(tmp_path, line_profile, "v1", "full") as cache:
        assert cache.get(b"image-a") is None
    moved = line_profile.model_copy(update={"name": "line-b"})
    with OcrCache(tmp_path, moved, "v1", "template") as cache:
        assert cache.get(b"image-a") is None


class _CountingEngine:
    """Stands in for OcrEngine: no model, counts the frames it is asked to read."""

    def __init__(self, profile: LineProfile) -> None:
        self.profile = profile
        self.frames = 0

    def read_batch(self, frames, frame_ids):
        self.frames += len(frames)
        return [_record(self.profile, 2.0).with_frame_id(i) for i in frame_ids]


def _dataset(root: Path, profile: LineProfile, n: int = 3) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    entries = []
    for i in range(n):
        (images / f"f{i}.png").write_bytes(encode(np.full((8, 8, 3), 10 * i, np.uint8)))
        entries.append(ManifestEntry(f"f{i}", f"images/f{i}.png", 0, "none", {}, "train"))
    return write_dataset(root, profile, entries)


def test_a_dataset_is_read_once(tmp_path: Path, line_profile: LineProfile) -> None:
    dataset = load_dataset(_dataset(tmp_path / "d", line_profile))
    settings = OcrSettings(cache_dir=tmp_path / "cache", batch_frames=2)
    engine = _CountingEngine(line_profile)
    first = list(iter_records(dataset, settings=settings, engine=engine))
    assert engine.frames == 3 and not any(r.cached for r in first)
    second = list(iter_records(dataset, settings=settings, engine=engine))
    assert engine.frames == 3 and all(r.cached for r in second)
    assert [r.record.frame_id for r in second] == ["f0", "f1", "f2"]
    assert second[0].record.values == first[0].record.values
    list(iter_records(dataset, settings=settings, engine=engine, use_cache=False))
    assert engine.frames == 6


def test_unreadable_dataset_frame_becomes_all_missing(tmp_path: Path, line_profile: LineProfile) -> None:
    root = _dataset(tmp_path / "d", line_profile, n=1)
    (root / "images" / "f0.png").write_bytes(b"broken")
    records = read_dataset_records(load_dataset(root), OcrSettings(cache_dir=tmp_path / "cache"))
    assert all(records["f0"].missing_mask)
    assert {r.reason for r in records["f0"].readings} == {REASON_NOT_READ}


def test_read_records_for_training_keeps_entry_order(tmp_path: Path, line_profile: LineProfile, monkeypatch) -> None:
    from stream.ocr import reader

    dataset = load_dataset(_dataset(tmp_path / "d", line_profile))
    engine = _CountingEngine(line_profile)
    original = reader.iter_records
    monkeypatch.setattr(reader, "iter_records", lambda *a, **k: original(*a, engine=engine, **k))
    settings = OcrSettings(cache_dir=tmp_path / "cache")
    entries = list(reversed(dataset.entries))
    records = reader.read_records(dataset, entries, settings=settings, progress=False)
    assert [r.frame_id for r in records] == ["f2", "f1", "f0"]
    assert records[0].names == line_profile.field_names and not any(records[0].missing_mask)
