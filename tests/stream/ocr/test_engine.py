"""The real PaddleOCR (offline PP-OCRv4 models from `make setup`) on rendered and generated frames.

Models load once per session (fixtures in tests/stream/conftest.py). Frame counts are small so
the whole module stays well under a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from oanet.dataset import load_dataset
from oanet.profile import LineProfile, parse_profile
from stream.ocr.engine import OcrEngine
from stream.ocr.errors import FrameMismatchError, ImageDecodeError, OcrModelError
from stream.ocr.parse import values_equal
from stream.ocr.records import REASON_NO_LABEL, REASON_NO_TEXT, ParameterRecord
from stream.ocr.scoring import TARGETS, Score
from stream.ocr.settings import OcrSettings
from tests.stream.frames import encode

pytestmark = pytest.mark.slow


def _accuracy(profile: LineProfile, records: list[ParameterRecord], truths: list[dict]) -> float:
    pairs = [
        (profile.field(r.name), r.value, truth[r.name])
        for record, truth in zip(records, truths, strict=True)
        for r in record.readings
    ]
    return sum(values_equal(*p) for p in pairs) / len(pairs)


def test_template_mode_reads_rendered_frames(template_engine: OcrEngine, make_frame) -> None:
    frames = [make_frame(seed, dark_panel=seed % 3 == 0) for seed in range(12)]
    records = [template_engine.read(encode(image), f"r{i}") for i, (image, _) in enumerate(frames)]
    assert _accuracy(template_engine.profile, records, [p for _, p in frames]) >= TARGETS["clean"]
    record = records[0]
    assert record.frame_id == "r0" and record.mode == "template"
    assert record.names == template_engine.profile.field_names
    assert all(0.0 < r.confidence <= 1.0 for r in record.readings if not r.missing)
    assert record.timings_ms["ocr"] > 0


def test_read_batch_pools_frames_and_keeps_errors_in_place(template_engine: OcrEngine, make_frame) -> None:
    (a, truth_a), (b, truth_b) = make_frame(21), make_frame(22)
    results = template_engine.read_batch([encode(a), b"", b], ["a", "bad", "b"])
    assert isinstance(results[1], ImageDecodeError)
    assert _accuracy(template_engine.profile, [results[0], results[2]], [truth_a, truth_b]) == 1.0


def test_full_mode_reads_rendered_frames(full_engine: OcrEngine, make_frame) -> None:
    frames = [make_frame(seed) for seed in (31, 32, 33)]
    records = [full_engine.read(image) for image, _ in frames]
    assert _accuracy(full_engine.profile, records, [p for _, p in frames]) >= TARGETS["nuisance"]
    assert records[0].mode == "full"


def test_generated_dataset_meets_the_targets(template_engine: OcrEngine, tmp_path: Path, line_profile) -> None:
    from training.synth.generate import generate

    generate(tmp_path / "d", line_profile, 24, seed=3, workers=1, progress=False)
    dataset = load_dataset(tmp_path / "d")
    score = Score(dataset.profile)
    engine = OcrEngine(dataset.profile, template_engine.settings, mode="template")
    for entry in dataset.entries:
        record = engine.read(dataset.read_bytes(entry), entry.id)
        score.add(record, entry.params, bool(entry.nuisance_kinds), entry.smudged_fields)
    for group in ("clean", "nuisance"):
        tally = score.group(group)
        if tally.total:
            assert tally.accuracy >= TARGETS[group], (group, score.examples)


@pytest.mark.parametrize("fill", [0, 255, 128])
def test_blank_or_black_frames_are_all_missing(template_engine: OcrEngine, full_engine: OcrEngine, fill: int) -> None:
    image = np.full((768, 1024, 3), fill, np.uint8)
    for engine in (template_engine, full_engine):
        record = engine.read(encode(image))
        assert all(record.missing_mask)
        assert {r.reason for r in record.readings} == {REASON_NO_TEXT}


def test_noise_frame_does_not_crash(template_engine: OcrEngine) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    record = template_engine.read(encode(noise))
    assert len(record.readings) == len(template_engine.profile.fields)


def test_frames_of_another_size_are_scaled_and_read(template_engine: OcrEngine, make_frame) -> None:
    image, truth = make_frame(41, height_px=24)
    small = cv2.resize(image, (1280, 960), interpolation=cv2.INTER_LINEAR)
    record = template_engine.read(encode(small, ".jpg"))
    assert _accuracy(template_engine.profile, [record], [truth]) == 1.0


def test_bad_inputs_raise_specific_errors(template_engine: OcrEngine) -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        template_engine.read(b"")
    with pytest.raises(ImageDecodeError, match="not a decodable"):
        template_engine.read(b"GIF89a garbage")
    with pytest.raises(FrameMismatchError, match="does not fit line profile"):
        template_engine.read(encode(np.zeros((1024, 768, 3), np.uint8)))


def test_missing_models_fail_with_the_setup_hint(line_profile: LineProfile, tmp_path: Path) -> None:
    with pytest.raises(OcrModelError, match="make setup"):
        OcrEngine(line_profile, OcrSettings(model_dir=tmp_path))


def _with_unprinted_fields(profile: LineProfile) -> LineProfile:
    data = profile.model_dump(mode="json", exclude_none=True)
    data["fields"] += [
        # A slot below the last printed line that the machine never fills...
        {"name": "vacuum", "label": "VACUUM", "unit": "kPa", "decimals": 1, "roi": [504, 712, 496, 36]},
        # ...and a field without a ROI: template mode looks for it with detection.
        {"name": "flow", "label": "N2 FLOW", "unit": "l/min", "decimals": 1},
    ]
    return parse_profile(data)


def test_a_field_that_is_never_printed_is_always_missing(make_frame, line_profile: LineProfile, ocr_settings) -> None:
    profile = _with_unprinted_fields(line_profile)
    template = OcrEngine(profile, ocr_settings, mode="template")
    full = OcrEngine(profile, ocr_settings, mode="full")
    for seed in (51, 52):
        image, truth = make_frame(seed, profile=profile, printed=set(line_profile.field_names))
        for engine in (template, full):
            record = engine.read(image)
            assert record.reading("vacuum").missing and record.reading("flow").missing
            assert record.reading("flow").reason in (REASON_NO_TEXT, REASON_NO_LABEL)
            printed = [r for r in record.readings if r.name in line_profile.field_names]
            assert sum(values_equal(profile.field(r.name), r.value, truth[r.name]) for r in printed) >= 9


class _ScriptedStudent:
    """Stands in for a distilled recogniser: reads from a script, in one call per frame."""

    threshold = 0.9
    glyph_widths: dict[str, tuple[float, float]] = {}

    def __init__(self, reads: list, field_thresholds: dict[str, float] | None = None,
                 confirmation: dict[str, float] | None = None, second_view: dict[int, tuple[str, float]] | None = None):
        from stream.ocr.student import StudentRead

        self.reads = [r if isinstance(r, StudentRead) else StudentRead.uniform(*r) for r in reads]
        self.calls: list[int] = []
        self.field_thresholds = field_thresholds or {}
        self.confirmation = confirmation or {}  # text fields read only once PaddleOCR confirmed them
        # line index -> its second view's read where it differs from the first
        self.second_view = {i: StudentRead.uniform(*r) for i, r in (second_view or {}).items()}
        self.shifted_calls: list[int] = []
        self._last: list = []

    def threshold_for(self, name: str) -> float:
        from stream.ocr.student import NEVER

        return NEVER if name in self.confirmation else self.field_thresholds.get(name, self.threshold)

    def confirmation_threshold(self, name: str) -> float | None:
        return self.confirmation.get(name)

    def recognize(self, crops: list) -> list:
        self.calls.append(len(crops))
        self._last = list(crops)
        return self.reads[: len(crops)]

    def recognize_shifted(self, crops: list) -> list:
        self.shifted_calls.append(len(crops))
        lines = [next(i for i, c in enumerate(self._last) if c is crop) for crop in crops]
        return [self.second_view.get(i, self.reads[i]) for i in lines]


def test_student_reads_first_and_paddleocr_takes_what_it_is_not_sure_of(
    line_profile: LineProfile, ocr_settings, make_frame
) -> None:
    from stream.ocr.ink import InkRun
    from stream.ocr.records import ENGINE_PADDLE, ENGINE_STUDENT
    from stream.ocr.student import StudentRead, target_text, unexplained_ink, well_formed_read

    frame, params = make_frame(3)
    fields = line_profile.fields
    reads = [(target_text(f, params[f.name]), 0.99) for f in fields]
    reads[1] = (reads[1][0], 0.5)  # right but unsure: PaddleOCR reads it
    reads[2] = ("EXPOSURE1O.25ms", 0.99)  # sure but not a well-formed line: PaddleOCR reads it
    reads[3] = (target_text(fields[3], 12.5), 0.99)  # a confident wrong value passes: calibration's job
    # Sure and well formed, but its line has one more glyph than it has characters (a dropped
    # digit): the ink check gives it to PaddleOCR.
    text = target_text(fields[5], params[fields[5].name])
    value = text[len(fields[5].label):]
    label = [InkRun(10 + 16 * i, 24 + 16 * i, 20, False) for i in range(len(fields[5].label))]
    separator = [InkRun(label[-1].end + 4, label[-1].end + 8, 12, True)]
    glyphs = [InkRun(separator[0].end + 4 + 16 * i, separator[0].end + 18 + 16 * i, 20, False)
              for i in range(len(value) + 1)]
    reads[5] = StudentRead(text, (0.99,) * len(text), 0.99, ink=tuple(label + separator + glyphs))
    assert well_formed_read(reads[5], fields[5]) is not None and unexplained_ink(reads[5], fields[5]) == 1
    engine = OcrEngine(line_profile, ocr_settings)
    engine.student = _ScriptedStudent(reads)  # type: ignore[assignment]
    record = engine.read(frame)
    assert engine.student.calls == [len(fields)]  # every line of the frame in one call
    engines = [r.engine for r in record.readings]
    assert engines[1] == engines[2] == engines[5] == ENGINE_PADDLE
    assert engines[0] == engines[3] == engines[4] == ENGINE_STUDENT
    assert _accuracy(line_profile, [record], [{**params, fields[3].name: 12.5}]) == 1.0
    # Thresholds per field: field 1's own (0.4) takes its read at 0.5; field 4's own (0.995) is
    # above its read at 0.99; the others keep the pooled 0.9.
    engine.student = _ScriptedStudent(reads, {fields[1].name: 0.4, fields[4].name: 0.995})  # type: ignore[assignment]
    engines = [r.engine for r in engine.read(frame).readings]
    assert engines[2] == engines[4] == engines[5] == ENGINE_PADDLE
    assert engines[0] == engines[1] == engines[3] == ENGINE_STUDENT
    assert "student" in record.timings_ms


def test_a_read_close_above_its_threshold_is_used_only_where_a_second_view_reads_the_same(
    line_profile: LineProfile, ocr_settings, make_frame
) -> None:
    from stream.ocr.records import ENGINE_PADDLE, ENGINE_STUDENT
    from stream.ocr.student import SECOND_VIEW_BELOW, target_text

    frame, params = make_frame(7)
    fields = [f for f in line_profile.fields if f.kind == "number"]
    indices = [line_profile.fields.index(f) for f in fields[:4]]
    reads = [(target_text(f, params[f.name]), 0.99) for f in line_profile.fields]
    near = (SECOND_VIEW_BELOW + 0.6) / 2  # above the pooled 0.6 below, below the second-view bar
    for i in indices:
        reads[i] = (reads[i][0], near)
    first, second, third, fourth = indices
    wrong_value = target_text(line_profile.fields[second], params[line_profile.fields[second].name] + 1)
    engine = OcrEngine(line_profile, ocr_settings)
    student = _ScriptedStudent(reads, second_view={
        second: (wrong_value, 0.99),  # the second view reads another value: PaddleOCR decides
        third: ("garbled", 0.99),  # ... or no line at all: PaddleOCR too
        fourth: (reads[fourth][0], 0.3),  # the same value, however unsure: the first read stands
    })
    student.threshold = 0.6
    engine.student = student  # type: ignore[assignment]
    record = engine.read(frame)
    engines = {i: record.readings[i].engine for i in indices}
    assert engines == {first: ENGINE_STUDENT, second: ENGINE_PADDLE, third: ENGINE_PADDLE, fourth: ENGINE_STUDENT}
    assert record.readings[fourth].confidence == pytest.approx(near, abs=1e-4)
    # The lines near their threshold, and only those, were read again, in one call.
    assert student.calls == [len(line_profile.fields)] and student.shifted_calls == [len(indices)]
    assert _accuracy(line_profile, [record], [params]) == 1.0
    # Sure reads are never read twice.
    sure = _ScriptedStudent([(text, 0.99) for text, _ in reads])
    engine.student = sure  # type: ignore[assignment]
    engine.read(frame)
    assert sure.shifted_calls == []


def test_a_label_the_student_reads_alone_and_sure_is_missing_without_paddleocr(
    line_profile: LineProfile, ocr_settings, make_frame
) -> None:
    from stream.ocr.records import ENGINE_PADDLE, ENGINE_PADDLE_DETECTION, ENGINE_STUDENT
    from stream.ocr.student import label_text, target_text

    frame, params = make_frame(6)
    fields = line_profile.fields
    reads = [(target_text(f, params[f.name]), 0.99) for f in fields]
    reads[2] = (label_text(fields[2]), 0.99)  # a stain over the value, as the student sees it
    reads[3] = (label_text(fields[3])[:4], 0.99)  # ... over the label's end too
    reads[4] = (label_text(fields[4]), 0.5)  # unsure that nothing follows: PaddleOCR reads the line
    engine = OcrEngine(line_profile, ocr_settings)
    engine.student = _ScriptedStudent(reads)  # type: ignore[assignment]
    record = engine.read(frame)
    # The whole label: missing, never a value, in the student's name (the frame prints one: the
    # script hides it), with the reason PaddleOCR's read of the label gets: nothing retries it.
    hidden = record.readings[2]
    assert hidden.missing and hidden.value is None and hidden.engine == ENGINE_STUDENT, hidden
    assert (hidden.raw_text, hidden.reason) == (reads[2][0], REASON_NO_TEXT)
    # Part of the label: its reason (no label found) sends the slot to detection, as after
    # PaddleOCR's read of the same text, and detection finds the printed line.
    assert record.readings[3].engine == ENGINE_PADDLE_DETECTION and not record.readings[3].missing
    assert record.readings[4].engine == ENGINE_PADDLE and not record.readings[4].missing
    assert _accuracy(line_profile, [record], [params]) == pytest.approx((len(fields) - 1) / len(fields))


def test_a_lot_id_is_read_by_the_student_only_once_paddleocr_confirmed_its_read(
    line_profile: LineProfile, ocr_settings, make_frame
) -> None:
    from stream.ocr.records import ENGINE_PADDLE, ENGINE_STUDENT
    from stream.ocr.student import target_text

    lot = next(f for f in line_profile.fields if f.kind == "text")
    index = line_profile.fields.index(lot)
    frame, params = make_frame(4)
    other_frame, other_params = make_frame(5)
    assert params[lot.name] != other_params[lot.name]

    def reads(lot_value: str, confidence: float = 0.99) -> list[tuple[str, float]]:
        out = [(target_text(f, params[f.name]), 0.99) for f in line_profile.fields]
        out[index] = (target_text(lot, lot_value), confidence)
        return out

    def lot_engine(engine: OcrEngine, frame_image: np.ndarray, script: list) -> tuple[str, object]:
        engine.student = _ScriptedStudent(script, confirmation={lot.name: 0.9})  # type: ignore[assignment]
        reading = engine.read(frame_image).reading(lot.name)
        return reading.engine, reading.value

    engine = OcrEngine(line_profile, ocr_settings.model_copy(update={"confirmed_text_audit": 3}))
    right = reads(params[lot.name])
    # First sight of the lot: PaddleOCR reads it (and agrees); from then on the student does.
    assert lot_engine(engine, frame, right) == (ENGINE_PADDLE, params[lot.name])
    assert lot_engine(engine, frame, right) == (ENGINE_STUDENT, params[lot.name])
    # Below the field's calibrated threshold a confirmed value still goes to PaddleOCR.
    assert lot_engine(engine, frame, reads(params[lot.name], 0.5)) == (ENGINE_PADDLE, params[lot.name])
    # A confident misread of an unseen lot as another well-formed id: PaddleOCR disputes it, and
    # the student's read of that id is never used, not even on a frame that prints it.
    misread = other_params[lot.name]
    assert lot_engine(engine, frame, reads(misread)) == (ENGINE_PADDLE, params[lot.name])
    assert lot_engine(engine, other_frame, reads(misread)) == (ENGINE_PADDLE, misread)
    assert lot_engine(engine, other_frame, reads(misread)) == (ENGINE_PADDLE, misread)
    # A read that can be no lot id (the student drops the lot's first letter on every line):
    # it stands for what PaddleOCR read on the line that first showed it, then is the student's.
    dropped = reads(params[lot.name])
    dropped[index] = (lot.label + params[lot.name][1:], 0.99)
    assert lot_engine(engine, frame, dropped) == (ENGINE_PADDLE, params[lot.name])
    assert lot_engine(engine, frame, dropped) == (ENGINE_STUDENT, params[lot.name])
    # A lot the student reads the same way passes as the first lot (the residual risk) until
    # the audit: every third use of a confirmed read (the setting) PaddleOCR reads the line
    # again, contradicts it, and from then on neither lot is the student's.
    assert lot_engine(engine, other_frame, dropped) == (ENGINE_STUDENT, params[lot.name])
    assert lot_engine(engine, other_frame, dropped) == (ENGINE_PADDLE, other_params[lot.name])
    assert lot_engine(engine, other_frame, dropped) == (ENGINE_PADDLE, other_params[lot.name])
    assert lot_engine(engine, frame, dropped) == (ENGINE_PADDLE, params[lot.name])
    # With the memo off the lot id is never the student's.
    off = OcrEngine(line_profile, ocr_settings.model_copy(update={"confirmed_text_values": 0}))
    for _ in range(2):
        assert lot_engine(off, frame, right) == (ENGINE_PADDLE, params[lot.name])
