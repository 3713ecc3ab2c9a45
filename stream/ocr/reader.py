"""Read a whole dataset through the OCR stage, with the feature cache (for `oanet ocr`, training).

The engine (and PaddleOCR) is only created when a frame is not in the cache, so a dataset read
before is served without loading any model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from oanet.dataset import Dataset, ManifestEntry
from stream.ocr.cache import OcrCache
from stream.ocr.engine import OcrEngine, engine_version
from stream.ocr.errors import OcrError
from stream.ocr.records import REASON_NOT_READ, ParameterRecord
from stream.ocr.settings import OcrMode, OcrSettings, current_ocr_settings


@dataclass(frozen=True)
class FrameResult:
    entry: ManifestEntry
    record: ParameterRecord | None  # None when the frame could not be read (see error)
    error: OcrError | None = None
    cached: bool = False
    ocr_ms: float | None = None  # wall time of the OCR stage for this frame (None if cached)


def iter_records(
    dataset: Dataset,
    entries: Sequence[ManifestEntry] | None = None,
    settings: OcrSettings | None = None,
    mode: OcrMode | None = None,
    use_cache: bool = True,
    engine: OcrEngine | None = None,
) -> Iterator[FrameResult]:
    """One FrameResult per entry, in order. Dataset read errors (missing file) raise."""
    settings = settings or OcrSettings()
    mode = mode or settings.mode
    entries = list(dataset.entries if entries is None else entries)
    cache = OcrCache(settings.cache_dir, dataset.profile, engine_version(settings), mode) if use_cache else None
    try:
        for start in range(0, len(entries), settings.batch_frames):
            batch = entries[start : start + settings.batch_frames]
            blobs = [dataset.read_bytes(e) for e in batch]
            found = [cache.get(b, e.id) if cache is not None else None for b, e in zip(blobs, batch, strict=True)]
            todo = [i for i, r in enumerate(found) if r is None]
            fresh: dict[int, ParameterRecord | OcrError] = {}
            per_frame_ms = None
            if todo:
                engine = engine or OcrEngine(dataset.profile, settings, mode=mode)
                started = time.perf_counter()
                results = engine.read_batch([blobs[i] for i in todo], [batch[i].id for i in todo])
                per_frame_ms = (time.perf_counter() - started) * 1000 / len(todo)
                fresh = dict(zip(todo, results, strict=True))
                if cache is not None:
                    cache.put_many(
                        (blobs[i], r) for i, r in fresh.items() if isinstance(r, ParameterRecord)
                    )
            for i, entry in enumerate(batch):
                if found[i] is not None:
                    yield FrameResult(entry, found[i], cached=True)
                elif isinstance(fresh[i], OcrError):
                    yield FrameResult(entry, None, error=fresh[i], ocr_ms=per_frame_ms)  # type: ignore[arg-type]
                else:
                    yield FrameResult(entry, fresh[i], ocr_ms=per_frame_ms)  # type: ignore[arg-type]
    finally:
        if cache is not None:
            cache.close()


def read_dataset_records(
    dataset: Dataset,
    settings: OcrSettings | None = None,
    mode: OcrMode | None = None,
    use_cache: bool = True,
) -> dict[str, ParameterRecord]:
    """Frame id -> record for every frame; unreadable frames get an all-missing record."""
    settings = settings or OcrSettings()
    out: dict[str, ParameterRecord] = {}
    for result in iter_records(dataset, settings=settings, mode=mode, use_cache=use_cache):
        out[result.entry.id] = result.record or ParameterRecord.all_missing(
            dataset.profile, REASON_NOT_READ, result.entry.id, mode or settings.mode
        )
    return out


def read_records(
    dataset: Dataset,
    entries: Sequence[ManifestEntry] | None = None,
    settings: OcrSettings | None = None,
    mode: OcrMode | None = None,
    progress: bool = True,
) -> list[ParameterRecord]:
    """OCR features for training: one record per entry (in order), read once then cached.

    A frame the OCR stage cannot read (undecodable image) gets an all-missing record, which is
    what the model would see for it in the stream.
    """
    from tqdm import tqdm

    settings = settings or current_ocr_settings()
    entries = list(dataset.entries if entries is None else entries)
    out: list[ParameterRecord] = []
    with tqdm(total=len(entries), desc="ocr features", unit="frame", file=sys.stderr,
              disable=not progress or None, dynamic_ncols=True, leave=False) as bar:
        for result in iter_records(dataset, entries, settings, mode):
            if result.record is not None:
                out.append(result.record)
            else:
                out.append(ParameterRecord.all_missing(
                    dataset.profile, REASON_NOT_READ, result.entry.id, mode or settings.mode
                ))
            bar.update(1)
    return out
