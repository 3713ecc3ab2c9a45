"""OCR feature cache: a dataset is read by OCR once, then served from disk.

Key: sha256 of (image bytes, profile, engine version, mode). Any change to the pixels, the
layout, the models, the libraries or the parser yields a new key, so a stale reading is never
served; old entries simply stop being used. Stored in one SQLite file (safe for concurrent
readers and several writer processes, no server, one file to delete).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from oanet.profile import LineProfile
from stream.ocr.errors import OcrError
from stream.ocr.records import ParameterRecord

CACHE_FILENAME = "ocr-features.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, record TEXT NOT NULL)"


class OcrCacheError(OcrError):
    """The OCR feature cache cannot be opened or written."""


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def profile_digest(profile: LineProfile) -> str:
    return hashlib.sha256(profile.model_dump_json().encode()).hexdigest()


def cache_key(image_sha256: str, profile_sha256: str, engine_version: str, mode: str) -> str:
    material = json.dumps([image_sha256, profile_sha256, engine_version, mode], separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


class OcrCache:
    """Records by key. Use as a context manager, or call `close()`."""

    def __init__(self, cache_dir: str | Path, profile: LineProfile, engine_version: str, mode: str):
        self.path = Path(cache_dir) / CACHE_FILENAME
        self.profile = profile
        self._profile_sha = profile_digest(profile)
        self._engine_version = engine_version
        self._mode = mode
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise OcrCacheError(f"cannot open the OCR feature cache {self.path}: {exc}") from None
        self.hits = 0
        self.misses = 0

    def key(self, image_bytes: bytes) -> str:
        return cache_key(image_digest(image_bytes), self._profile_sha, self._engine_version, self._mode)

    def get(self, image_bytes: bytes, frame_id: str | None = None) -> ParameterRecord | None:
        row = self._db.execute("SELECT record FROM records WHERE key = ?", (self.key(image_bytes),)).fetchone()
        if row is None:
            self.misses += 1
            return None
        try:
            record = ParameterRecord.from_json(json.loads(row[0]), self.profile)
        except (ValueError, TypeError):  # damaged or foreign entry: read the frame again
            self.misses += 1
            return None
        self.hits += 1
        return record.with_frame_id(frame_id)

    def put_many(self, items: Iterable[tuple[bytes, ParameterRecord]]) -> None:
        rows = [(self.key(data), json.dumps(record.to_json(), separators=(",", ":"))) for data, record in items]
        try:
            self._db.executemany("INSERT OR REPLACE INTO records (key, record) VALUES (?, ?)", rows)
            self._db.commit()
        except sqlite3.Error as exc:
            raise OcrCacheError(f"cannot write the OCR feature cache {self.path}: {exc}") from None

    def put(self, image_bytes: bytes, record: ParameterRecord) -> None:
        self.put_many([(image_bytes, record)])

    def count(self) -> int:
        """Entries stored (all engine versions and modes)."""
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OcrCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
