"""The OCR stage's I/O shell: PaddleOCR (PP-OCRv4 mobile, onnxruntime) over a line profile.

Runs offline exactly as PLATFORM.md ("OCR") describes: explicit local model folders, no
document orientation/unwarping/text-line orientation models (each would be downloaded),
PaddleX's model-hoster probe off, PaddleX's cache in a folder of ours, no `save_to_img`.

Modes:
- `template`: each field's ROI is cut out, trimmed to its ink and recognized (no detection);
  the crops of one or several frames go to the recognizer as one batch.
- `full`: detection + recognition on the panel, then lines are matched to fields by label.
  Template mode also uses it, on a small region, for fields without a ROI and for template
  reads that came out garbled (e.g. a line shifted out of its slot).

With a distilled recogniser (`OcrSettings.recognizer`, `oanet ocr distill`), template mode
reads every field line with it first, in one batched call, and gives PaddleOCR only the lines
whose read is below its field's calibrated threshold (`Student.threshold_for`), that the ink
check refuses, that the parser rejects, or, close above the threshold, that a second view of
the line reads otherwise (`student.SECOND_VIEW_BELOW`). A text field its calibration could not
trust (a lot id) is used from the student only through what PaddleOCR read on an earlier line
the student read the same way (`stream.ocr.confirm`). Each reading records the engine that
produced it.
With `student_server` the student's network runs on Triton (`stream.ocr.student_server`); a
call it does not answer sends those lines to PaddleOCR, with a warning at most once a minute.

Models load once per process and are shared by every engine (one per profile).

At about 500 lines on purpose: the one class that talks to PaddleOCR; parsing (parse.py), crops
(crops.py), records (records.py) and the student (student.py) are already apart.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oanet.profile import LineProfile
from stream.ocr import crops as cropping
from stream.ocr.confirm import ConfirmedValues, TextRead, confirmed_reading, text_read
from stream.ocr.errors import OcrError, StudentUnavailable
from stream.ocr.parse import PARSER_VERSION, match_field, normalize, parse_field, parse_lines
from stream.ocr.records import (
    ENGINE_PADDLE,
    ENGINE_PADDLE_DETECTION,
    ENGINE_STUDENT,
    REASON_AMBIGUOUS,
    REASON_DECIMALS,
    REASON_GARBLED,
    REASON_IMPLAUSIBLE,
    REASON_NO_LABEL,
    REASON_NO_TEXT,
    REASON_NOT_READ,
    REASON_PATTERN,
    FieldReading,
    ParameterRecord,
)
from stream.ocr.settings import OcrMode, OcrSettings
from stream.ocr.student import (SECOND_VIEW_BELOW, Student, label_alone, other_labels_of, second_view_agrees,
                                student_digest, unexplained_ink, well_formed_read)
from stream.ocr.student_server import StudentServer, TritonStudentNetwork, served_meta
from stream.ocr_models import DET_MODEL, MODEL_FILE, REC_MODEL, model_dirs

log = logging.getLogger(__name__)

FrameData = bytes | bytearray | memoryview | np.ndarray  # encoded image bytes or a decoded BGR array
# Reasons a template read is retried with detection: the slot had ink but no usable value.
_RETRY_REASONS = frozenset(
    {REASON_NO_LABEL, REASON_GARBLED, REASON_DECIMALS, REASON_IMPLAUSIBLE, REASON_PATTERN, REASON_AMBIGUOUS}
)
# PaddleOCR's detector settings for panel text (its OCR pipeline defaults for PP-OCRv4).
_DET_LIMIT_SIDE = 64
_DET_LIMIT_TYPE = "min"
# Full mode: boxes below this recognition score with no ASCII character are dropped.
JUNK_SCORE = 0.5

_models: dict[tuple[Any, ...], Any] = {}
_models_lock = threading.Lock()
_digests: dict[Path, str] = {}


def _offline_environment(settings: OcrSettings) -> None:
    # Must be set before paddlex is imported: it reads them at import time.
    os.environ["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
    os.environ.setdefault("PADDLE_PDX_CACHE_HOME", str(settings.paddlex_home))
    Path(os.environ["PADDLE_PDX_CACHE_HOME"]).mkdir(parents=True, exist_ok=True)
    import paddlex  # noqa: F401  (configures its logger on import)

    # PaddleX logs every model creation at INFO on stderr; keep it for `oanet -v` only.
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("paddlex").setLevel(logging.WARNING)


def _engine_config(settings: OcrSettings) -> dict[str, Any] | None:
    return {"intra_op_num_threads": settings.threads} if settings.threads else None


def _recognizer(settings: OcrSettings) -> Any:
    dirs = model_dirs(settings.model_dir)
    key = ("rec", str(dirs[REC_MODEL]), settings.threads)
    with _models_lock:
        if key not in _models:
            _offline_environment(settings)
            from paddlex import create_model

            started = time.perf_counter()
            _models[key] = create_model(
                model_name=REC_MODEL,
                model_dir=str(dirs[REC_MODEL]),
                engine="onnxruntime",
                engine_config=_engine_config(settings),
            )
            log.debug("loaded %s in %.1f s", REC_MODEL, time.perf_counter() - started)
        return _models[key]


def _pipeline(settings: OcrSettings) -> Any:
    dirs = model_dirs(settings.model_dir)
    key = ("ocr", str(dirs[DET_MODEL]), str(dirs[REC_MODEL]), settings.threads)
    with _models_lock:
        if key not in _models:
            _offline_environment(settings)
            from paddleocr import PaddleOCR

            started = time.perf_counter()
            _models[key] = PaddleOCR(
                text_detection_model_name=DET_MODEL,
                text_detection_model_dir=str(dirs[DET_MODEL]),
                text_recognition_model_name=REC_MODEL,
                text_recognition_model_dir=str(dirs[REC_MODEL]),
                use_doc_orientation_classify=False,
                use_doc_unwarping=False,
                use_textline_orientation=False,
                text_det_limit_side_len=_DET_LIMIT_SIDE,
                text_det_limit_type=_DET_LIMIT_TYPE,
                engine="onnxruntime",
                engine_config=_engine_config(settings),
            )
            log.debug("loaded the PaddleOCR pipeline in %.1f s", time.perf_counter() - started)
        return _models[key]


def _file_digest(path: Path) -> str:
    if path not in _digests:
        _digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return _digests[path]


def engine_version(settings: OcrSettings) -> str:
    """Identifies what produced a reading: libraries, model weights and parser.

    Cheap (no model load), so a fully cached dataset is served without loading PaddleOCR.
    """
    dirs = model_dirs(settings.model_dir)
    parts = [
        f"paddleocr={importlib.metadata.version('paddleocr')}",
        f"paddlex={importlib.metadata.version('paddlex')}",
        f"det={_file_digest(dirs[DET_MODEL] / MODEL_FILE)}",
        f"rec={_file_digest(dirs[REC_MODEL] / MODEL_FILE)}",
        f"parser={PARSER_VERSION}",
    ]
    if settings.recognizer is not None:
        parts.append(f"student={student_digest(settings.recognizer)}")
    return ";".join(parts)


def _is_junk(text: str, score: float) -> bool:
    """A low-confidence box without one ASCII character: a speck read as a CJK glyph.

    Panels print ASCII; dropping such a box (seen between a label and its value) lets the
    line parse. A box holding anything ASCII is kept: it may carry a sign or a digit.
    """
    return score < JUNK_SCORE and not any(c.isascii() and not c.isspace() for c in normalize(text))


class OcrEngine:
    """Reads parameter records from frames of one line profile.

    Not thread-safe: the PaddleX predictors it shares keep per-call state (batch size), so use
    it from one thread; scale out with processes (one stream worker per partition set).
    """

    def __init__(self, profile: LineProfile, settings: OcrSettings | None = None, mode: OcrMode | None = None,
                 student_server: StudentServer | None = None):
        self.profile = profile
        self.settings = settings or OcrSettings()
        self.mode: OcrMode = mode or self.settings.mode
        model_dirs(self.settings.model_dir)  # fail now, with the set-up hint, not mid-stream
        self._template_fields = [i for i, f in enumerate(profile.fields) if f.roi is not None]
        # What a student's label part may not resemble, per field index (`label_part_ok`).
        self._other_labels = [other_labels_of(profile, f) for f in profile.fields]
        self._full_region = cropping.union_roi(
            [profile.panel_roi, *(f.roi for f in profile.fields if f.roi is not None)],
            pad=0,
            frame=(profile.frame.width, profile.frame.height),
        )
        self.student: Student | None = None
        self._student_ms = 0.0
        # Calls the served student did not answer since the last warning (lines went to PaddleOCR).
        self._student_misses = 0
        self._next_miss_warning = 0.0
        # Lot ids and other text fields the student may read once PaddleOCR confirmed its read.
        capacity = self.settings.confirmed_text_values
        self._confirmed = ConfirmedValues(capacity, self.settings.confirmed_text_audit) if capacity else None
        if self.mode == "template" and self.settings.recognizer is not None:
            network = TritonStudentNetwork(student_server) if student_server is not None else None
            self.student = Student(self.settings.recognizer, profile, self.settings.threads, network=network)
        elif self.mode == "template" and student_server is not None:  # no files here: all from the server
            self.student = Student.from_meta(served_meta(student_server), profile,
                                             TritonStudentNetwork(student_server), student_server.digest,
                                             f"{student_server.model} version {student_server.version}")

    @property
    def version(self) -> str:
        version = engine_version(self.settings)
        if self.student is not None and self.settings.recognizer is None:  # the served student's
            version += f";{self.student.version}"
        return version

    def warm_up(self) -> None:
        """Load the models this engine's mode needs (otherwise done on first use)."""
        if self.mode == "template":
            _recognizer(self.settings)
        if self.mode == "full" or self.settings.fallback:
            _pipeline(self.settings)

    def recognizer_floor_ms(self, repeats: int = 5) -> float:
        """Best time per line of the recognizer alone on blank 48x320 lines, batched by 8.

        The floor of template mode on this machine right now (what `bench ocr` compares
        against); on a shared machine it also shows how loaded the CPU was.
        """
        recognizer = _recognizer(self.settings)
        lines = [np.full((48, 320, 3), 255, np.uint8)] * 8
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            list(recognizer.predict(lines, batch_size=len(lines)))
            best = min(best, (time.perf_counter() - started) * 1000 / len(lines))
        return best

    # -- public reading API ---------------------------------------------------------------

    def decode_fitted(self, data: FrameData) -> np.ndarray:
        """Decode and scale one frame to the profile; ImageDecodeError / FrameMismatchError."""
        return cropping.fit_to_profile(cropping.decode_image(data), self.profile)

    def read(self, data: FrameData, frame_id: str | None = None) -> ParameterRecord:
        """One frame -> its record. Raises OcrError subclasses for undecodable/mismatched frames."""
        result = self.read_batch([data], [frame_id])[0]
        if isinstance(result, OcrError):
            raise result
        return result

    def read_batch(
        self, frames: Sequence[FrameData], frame_ids: Sequence[str | None] | None = None
    ) -> list[ParameterRecord | OcrError]:
        """Several frames at once (one recognizer batch in template mode).

        A frame that cannot be decoded or mapped onto the profile yields its OcrError in place,
        so one bad frame does not sink the others.
        """
        ids = list(frame_ids) if frame_ids is not None else [None] * len(frames)
        started = time.perf_counter()
        prepared: list[np.ndarray | OcrError] = []
        for data in frames:
            try:
                prepared.append(self.decode_fitted(data))
            except OcrError as exc:
                prepared.append(exc)
        good = [i for i, p in enumerate(prepared) if not isinstance(p, OcrError)]
        images = [prepared[i] for i in good]
        decode_ms = (time.perf_counter() - started) * 1000 / max(1, len(frames))
        started = time.perf_counter()
        self._student_ms = 0.0
        if self.mode == "template":
            readings = self._read_template(images)
        else:
            readings = [self._read_full(image) for image in images]
        ocr_ms = (time.perf_counter() - started) * 1000 / max(1, len(images))
        timings = {"decode": decode_ms, "ocr": ocr_ms}
        if self.student is not None:
            timings["student"] = self._student_ms / max(1, len(images))  # its network call alone
        out: list[ParameterRecord | OcrError] = list(prepared)  # type: ignore[arg-type]
        for i, frame_readings in zip(good, readings, strict=True):
            out[i] = ParameterRecord(
                readings=tuple(frame_readings),
                frame_id=ids[i],
                mode=self.mode,
                timings_ms=dict(timings),
            )
        return out

    # -- template mode ------------------------------------------------------------------

    def _read_template(self, images: list[np.ndarray]) -> list[list[FieldReading]]:
        fields = self.profile.fields
        readings: list[list[FieldReading | None]] = [[None] * len(fields) for _ in images]
        jobs: list[tuple[int, int]] = []
        slots: list[np.ndarray] = []
        for f_index, image in enumerate(images):
            for i in self._template_fields:
                trimmed = cropping.trim_to_ink(cropping.crop(image, fields[i].roi))
                if trimmed is None:
                    readings[f_index][i] = FieldReading.absent(fields[i].name, REASON_NO_TEXT)
                else:
                    jobs.append((f_index, i))
                    slots.append(trimmed)
        to_confirm: dict[tuple[int, int], TextRead] = {}
        if self.student is not None and jobs:
            jobs, slots, to_confirm = self._read_with_student(jobs, slots, readings)
        for job, (text, score) in zip(jobs, self._recognize(slots), strict=True):
            f_index, i = job
            reading = parse_field(text, fields[i], score).by(ENGINE_PADDLE)
            readings[f_index][i] = reading
            if job in to_confirm and self._confirmed is not None:
                self._confirmed.record(fields[i].name, to_confirm[job], None if reading.missing else str(reading.value))
        return [self._complete(image, row) for image, row in zip(images, readings, strict=True)]

    def _read_with_student(
        self, jobs: list[tuple[int, int]], slots: list[np.ndarray], readings: list[list[FieldReading | None]]
    ) -> tuple[list[tuple[int, int]], list[np.ndarray], dict[tuple[int, int], TextRead]]:
        """Student reads every line at once; returns the lines left for PaddleOCR, and the text
        reads among them that PaddleOCR's read of the same line confirms or disputes."""
        assert self.student is not None
        fields = self.profile.fields
        left_jobs: list[tuple[int, int]] = []
        left_slots: list[np.ndarray] = []
        to_confirm: dict[tuple[int, int], TextRead] = {}
        near_threshold: list[tuple[tuple[int, int], np.ndarray, FieldReading]] = []
        started = time.perf_counter()
        try:
            reads = self.student.recognize(slots)
        except StudentUnavailable as exc:
            self._student_ms += (time.perf_counter() - started) * 1000
            self._student_missed(exc, len(slots))
            return jobs, slots, to_confirm
        self._student_ms += (time.perf_counter() - started) * 1000
        for job, slot, read in zip(jobs, slots, reads, strict=True):
            f_index, i = job
            spec = fields[i]
            if label_alone(read, spec, self.student.threshold):
                # A value nothing can read: missing in the student's name, as PaddleOCR's read of
                # the label would parse (its reason decides the detection retry as before).
                hidden = parse_field(read.text, spec, read.confidence)
                if hidden.missing:
                    readings[f_index][i] = hidden.by(ENGINE_STUDENT)
                    continue
            memo = self._confirmed
            confirmation_bar = self.student.confirmation_threshold(spec.name) if memo is not None else None
            if memo is not None and confirmation_bar is not None:
                found = text_read(read, spec, self._other_labels[i], self.student.glyph_widths, confirmation_bar)
                if found is not None:
                    key, confidence = found
                    value = memo.value_for(spec.name, key)
                    confirmed = None if value is None else confirmed_reading(spec, value, read, confidence)
                    if confirmed is not None:
                        readings[f_index][i] = confirmed.by(ENGINE_STUDENT)
                        continue
                    to_confirm[job] = key
            else:
                reading = well_formed_read(read, spec, self._other_labels[i])
                # A read that leaves ink unexplained (a dropped digit) falls back however sure it is.
                if reading is not None and reading.confidence >= self.student.threshold_for(spec.name) and \
                        not unexplained_ink(read, spec, self.student.glyph_widths):
                    if reading.confidence < SECOND_VIEW_BELOW:
                        near_threshold.append((job, slot, reading))
                    else:
                        readings[f_index][i] = reading.by(ENGINE_STUDENT)
                    continue
            left_jobs.append(job)
            left_slots.append(slot)
        for job, slot, reading in self._second_view(near_threshold):
            if reading is not None:
                readings[job[0]][job[1]] = reading.by(ENGINE_STUDENT)
            else:
                left_jobs.append(job)
                left_slots.append(slot)
        return left_jobs, left_slots, to_confirm

    def _second_view(
        self, near_threshold: list[tuple[tuple[int, int], np.ndarray, FieldReading]]
    ) -> list[tuple[tuple[int, int], np.ndarray, FieldReading | None]]:
        """Reads accepted on their threshold but below `SECOND_VIEW_BELOW`, each kept where the
        student's second view of its line gives the same value (one network call for all), else
        None: the line goes to PaddleOCR."""
        if not near_threshold:
            return []
        assert self.student is not None
        started = time.perf_counter()
        try:
            again = self.student.recognize_shifted([slot for _, slot, _ in near_threshold])
        except StudentUnavailable as exc:
            self._student_missed(exc, len(near_threshold))
            again = [None] * len(near_threshold)
        finally:
            self._student_ms += (time.perf_counter() - started) * 1000
        fields = self.profile.fields
        return [(job, slot, reading if read is not None and second_view_agrees(
                    read, reading, fields[job[1]], self._other_labels[job[1]]) else None)
                for (job, slot, reading), read in zip(near_threshold, again, strict=True)]

    def _student_missed(self, exc: StudentUnavailable, lines: int) -> None:
        """The served student did not answer: its lines go to PaddleOCR (correct, slower); say so
        once a minute, not once per frame, while it lasts."""
        self._student_misses += 1
        now = time.monotonic()
        if now >= self._next_miss_warning:
            log.warning("the served OCR student did not answer %d call(s), PaddleOCR read their lines instead "
                        "(last: %d lines): %s", self._student_misses, lines, exc)
            self._student_misses = 0
            self._next_miss_warning = now + 60.0

    def _recognize(self, slots: list[np.ndarray]) -> list[tuple[str, float]]:
        """PaddleOCR's recognizer on trimmed line crops -> (raw text, confidence) per crop."""
        if not slots:
            return []
        recognizer = _recognizer(self.settings)
        # A batch is padded to its widest crop, so crops of similar aspect ratio go together.
        # (Measured on CPU: batches, even across frames, only add padding; the cost per line
        # is the recognizer's convolution over a 48 px high strip, linear in its width.)
        order = sorted(range(len(slots)), key=lambda i: slots[i].shape[1] / slots[i].shape[0])
        out: list[tuple[str, float]] = [("", 0.0)] * len(slots)
        calls = -(-len(order) // self.settings.rec_batch)
        size = -(-len(order) // calls)  # balanced: 10 crops, rec_batch 8 -> 5 + 5, not 8 + 2
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            results = recognizer.predict([slots[i] for i in chunk], batch_size=len(chunk))
            for i, r in zip(chunk, results, strict=True):
                out[i] = (str(r["rec_text"]), float(r["rec_score"]))
        return out

    def _complete(self, image: np.ndarray, row: list[FieldReading | None]) -> list[FieldReading]:
        """Fill fields without a ROI and retry garbled template reads with detection."""
        fields = self.profile.fields
        todo = [
            i for i, r in enumerate(row) if r is None or (r.missing and r.reason in _RETRY_REASONS)
        ]
        not_found = REASON_NOT_READ  # for fields without a ROI when nothing looks for them
        if todo and self.settings.fallback:
            if any(fields[i].roi is None for i in todo):
                region = self._full_region
            else:
                # Detection only around the failed slots: far cheaper than the whole panel,
                # and still finds a line shifted out of its slot by half a line pitch.
                pad = max(fields[i].roi[3] for i in todo) // 2
                frame = (self.profile.frame.width, self.profile.frame.height)
                region = cropping.union_roi([fields[i].roi for i in todo], pad, frame)
            found, had_text = self._detect_and_parse(image, region, [fields[i].name for i in todo])
            not_found = REASON_NO_LABEL if had_text else REASON_NO_TEXT
            for i in todo:
                retry = found.get(fields[i].name)
                if retry is not None and (row[i] is None or not retry.missing):
                    row[i] = retry.by(ENGINE_PADDLE_DETECTION)
        return [r if r is not None else FieldReading.absent(fields[i].name, not_found) for i, r in enumerate(row)]

    # -- full mode ----------------------------------------------------------------------

    def _read_full(self, image: np.ndarray) -> list[FieldReading]:
        found, had_text = self._detect_and_parse(image, self._full_region, None)
        # Not found: the panel had text but no line with this label, or no text at all.
        reason = REASON_NO_LABEL if had_text else REASON_NO_TEXT
        return [
            found[f.name].by(ENGINE_PADDLE_DETECTION) if f.name in found else FieldReading.absent(f.name, reason)
            for f in self.profile.fields
        ]

    def _detect_and_parse(
        self, image: np.ndarray, region: Sequence[int], only: list[str] | None
    ) -> tuple[dict[str, FieldReading], bool]:
        lines = self._detect_lines(cropping.crop(image, region))
        return parse_lines(lines, self.profile, only), bool(lines)

    def _detect_lines(self, region: np.ndarray) -> list[tuple[str, float]]:
        """Detection + recognition -> printed lines (text, confidence), top to bottom.

        A printed line the detector split into several boxes is split again into one line
        per field wherever a box starts with a field label (two fields side by side).
        """
        if cropping.ink_box(region) is None:
            return []  # blank or black panel: nothing to detect, skip the models
        result = next(iter(_pipeline(self.settings).predict(region)))
        boxes = [
            cropping.TextBox(str(text), float(score), *map(float, box))
            for text, score, box in zip(result["rec_texts"], result["rec_scores"], result["rec_boxes"], strict=True)
            if str(text).strip() and not _is_junk(str(text), float(score))
        ]
        lines: list[tuple[str, float]] = []
        for row in cropping.group_rows(boxes):
            groups: list[list[cropping.TextBox]] = []
            for box in row:
                if not groups or self._starts_with_label(box.text):
                    groups.append([box])
                else:
                    groups[-1].append(box)
            for group in groups:
                lines.append((" ".join(b.text for b in group), min(b.score for b in group)))
        return lines

    def _starts_with_label(self, text: str) -> bool:
        return match_field(normalize(text), self.profile.fields) is not None
