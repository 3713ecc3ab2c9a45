"""The distilled recogniser's pure side: charset, targets, CTC decoding, what a read may pass."""

from __future__ import annotations

import numpy as np
import pytest

from oanet.profile import LineProfile, load_profile
from stream.ocr.parse import parse_field
from stream.ocr.student import (
    TIME_STRIDE,
    StudentRead,
    ctc_decode,
    encode_text,
    input_batch,
    label_alone,
    label_part_ok,
    line_input,
    line_steps,
    other_labels_of,
    profile_charset,
    second_view_agrees,
    shifted_batch,
    split_value,
    step_confidence,
    target_text,
    value_charset,
    well_formed_read,
)
from tests.stream.frames import DEFAULT_PROFILE

LINE_B = DEFAULT_PROFILE.parent / "line-b.yaml"


@pytest.fixture(scope="module")
def line_b() -> LineProfile:
    return load_profile(LINE_B)


def test_charset_comes_from_the_profile(line_profile: LineProfile, line_b: LineProfile) -> None:
    a, b = profile_charset(line_profile), profile_charset(line_b)
    assert set("0123456789.-") <= set(a) and set("0123456789.-") <= set(b)
    # line-a: lot ids (two capitals, digits, a hyphen), units such as %RH and mm/s.
    assert set("ABCDEFGHIJKLMNOPQRSTUVWXYZ%/") <= set(a)
    # line-b prints lower-case units (l/min) and recipe ids R + digits, and no "%".
    assert set("lmin/R") <= set(b) and "%" not in b and "%" in a
    assert a != b
    assert " " not in a and ":" not in a and "+" not in a


def test_a_fields_value_charset_is_its_number_or_pattern_and_its_unit(line_profile: LineProfile) -> None:
    assert value_charset(line_profile.field("pressure")) == set("0123456789.-+kPa")
    lot = value_charset(line_profile.field("lot_id"))  # '^[A-Z]{2}[0-9]{4}-[0-9]{2}$'
    assert lot == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
    assert "Q" not in value_charset(line_profile.field("temp"))  # a lot's "Q" for "O" is no number's


def test_targets_leave_spaces_separators_and_plus_to_the_blank(line_profile: LineProfile) -> None:
    z = line_profile.field("z_offset")
    assert target_text(z, 3.5) == "ZOFFSET3.50um"
    assert target_text(z, -12.25) == "ZOFFSET-12.25um"
    assert target_text(line_profile.field("lot_id"), "AB1234-05") == "LOTAB1234-05"
    assert target_text(line_profile.field("us_power"), 95) == "USPOWER95mW"
    charset = profile_charset(line_profile)
    assert encode_text("ZOFFSET-12.25um", charset) is not None
    assert encode_text("TEMP: 1", charset) is None  # ":" and " " are not classes


def _logits_for(text: str, charset: str, steps: int = 40, sure: float = 12.0) -> np.ndarray:
    logits = np.zeros((1, steps, len(charset) + 1), np.float32)
    logits[0, :, 0] = sure  # blank everywhere ...
    for i, c in enumerate(text):  # ... and each character at every other step
        logits[0, 2 * i, 0] = 0.0
        logits[0, 2 * i, charset.index(c) + 1] = sure
    return logits


def test_ctc_decode_collapses_repeats_and_reports_the_least_sure_step(line_profile: LineProfile) -> None:
    charset = profile_charset(line_profile)
    logits = _logits_for("TEMP172.4C", charset)
    [read] = ctc_decode(logits, charset)
    assert read.text == "TEMP172.4C" and read.confidence > 0.99
    assert len(read.char_confidence) == len(read.text)
    logits[0, 30, :] = 0.0  # one undecided step lowers the whole line's confidence
    [unsure] = ctc_decode(logits, charset)
    assert unsure.confidence < 0.2 and unsure.tail_confidence < 0.2 and min(unsure.char_confidence) > 0.99
    doubled = np.repeat(_logits_for("TEMP", charset, steps=10), 2, axis=1)  # each char over 2 steps
    assert ctc_decode(doubled, charset)[0].text == "TEMP"


def test_a_read_is_as_sure_as_its_value_part(line_profile: LineProfile) -> None:
    """The left-edge defect (an unsure first step on every line) must not hold back a value
    the student is sure of; an unsure step anywhere in the value part, blanks included, must."""
    charset, temp = profile_charset(line_profile), line_profile.field("temp")
    logits = _logits_for("TEMP172.4C", charset)
    logits[0, 0, :] = 0.0  # step 0: the "T" barely ahead of everything else
    logits[0, 0, charset.index("T") + 1] = 1.0
    [read] = ctc_decode(logits, charset)
    assert read.text == "TEMP172.4C" and read.confidence < 0.1
    assert well_formed_read(read, temp).confidence > 0.99
    for step in (9, 2 * len("TEMP1") + 1, 2 * len("TEMP172.4C") + 3):  # before "1", a blank inside, the tail
        unsure = logits.copy()
        unsure[0, step, :] = 0.0
        [read] = ctc_decode(unsure, charset)
        assert read.text == "TEMP172.4C" and well_formed_read(read, temp).confidence < 0.2, step


def _probs(rows: list[dict[int, float]]) -> np.ndarray:
    """Per-step class probabilities over 4 classes (0 = blank) from {class: probability} rows."""
    out = np.zeros((len(rows), 4))
    for t, row in enumerate(rows):
        for k, p in row.items():
            out[t, k] = p
    return out


def test_where_a_character_starts_is_not_doubt_about_what_it_is() -> None:
    """Blank against the neighbouring character on a character's border changes nothing
    once collapsed; blank in a one-step character, a split run or a new character does."""
    # Path 1 1 _ 2: step 1 may be blank, step 2 may be 1 or 2, nothing else.
    path = [1, 1, 0, 2]
    border = _probs([{1: 1.0}, {1: 0.5, 0: 0.5}, {0: 0.5, 2: 0.3, 3: 0.2}, {2: 1.0}])
    assert step_confidence(border, path).tolist() == pytest.approx([1.0, 1.0, 0.8, 1.0])
    # A one-step character that may be blank: it may be dropped.
    assert step_confidence(_probs([{0: 1.0}, {1: 0.5, 0: 0.5}, {0: 1.0}]), [0, 1, 0])[1] == pytest.approx(0.5)
    # The middle of a run turned blank would read the character twice.
    assert step_confidence(_probs([{1: 1.0}, {1: 0.6, 0: 0.4}, {1: 1.0}]), [1, 1, 1])[1] == pytest.approx(0.6)
    # Between two equal characters only a blank keeps them apart.
    assert step_confidence(_probs([{1: 1.0}, {0: 0.6, 1: 0.4}, {1: 1.0}]), [1, 0, 1])[1] == pytest.approx(0.6)


def test_doubt_whether_a_glyph_is_there_is_not_doubt_which_it_is() -> None:
    # A one-step character that may be blank: it may be dropped, it is no other character.
    maybe_dropped = _probs([{0: 1.0}, {1: 0.6, 0: 0.4}, {0: 1.0}])
    assert step_confidence(maybe_dropped, [0, 1, 0])[1] == pytest.approx(0.6)
    assert step_confidence(maybe_dropped, [0, 1, 0], presence_free=True)[1] == pytest.approx(1.0)
    # A blank step that may hold a character: one may be added, none is changed.
    maybe_added = _probs([{1: 1.0}, {0: 0.55, 3: 0.45}, {2: 1.0}])
    assert step_confidence(maybe_added, [1, 0, 2])[1] == pytest.approx(0.55)
    assert step_confidence(maybe_added, [1, 0, 2], presence_free=True)[1] == pytest.approx(1.0)
    # A character that may be another: doubt either way.
    maybe_another = _probs([{0: 1.0}, {1: 0.6, 2: 0.3, 0: 0.1}, {0: 1.0}])
    assert step_confidence(maybe_another, [0, 1, 0], presence_free=True)[1] == pytest.approx(0.7)


def test_a_read_keeps_both_doubts_apart(line_profile: LineProfile) -> None:
    charset = profile_charset(line_profile)
    logits = _logits_for("LOTDX2675-77", charset)
    x = 2 * len("LOTD")
    logits[0, x, 0] = logits[0, x, charset.index("X") + 1] - 0.4  # "X" or nothing, 0.6 / 0.4
    [read] = ctc_decode(logits, charset)
    assert read.text == "LOTDX2675-77" and 0.55 < read.char_confidence[4] < 0.65
    assert read.char_identity is not None and min(read.char_identity) > 0.99
    assert read.doubts_one_glyph_only(3, 0.8) and not read.doubts_one_glyph_only(3, 0.5)  # nothing below 0.5
    logits[0, x, charset.index("K") + 1] = logits[0, x, charset.index("X") + 1] - 0.4  # "X" or "K" too
    [read] = ctc_decode(logits, charset)
    assert read.text == "LOTDX2675-77" and read.char_identity[4] < 0.8 and not read.doubts_one_glyph_only(3, 0.8)


def test_a_label_read_alone_and_sure_is_a_hidden_value(line_profile: LineProfile) -> None:
    speed = line_profile.field("speed")
    assert label_alone(StudentRead.uniform("SPEED", 0.99), speed, 0.8)
    assert label_alone(StudentRead.uniform("SPE", 0.99), speed, 0.8)  # the stain covers the label's end too
    # Unsure of a step, the tail included: something may follow.
    assert not label_alone(StudentRead("SPEED", (0.99,) * 5, 0.5), speed, 0.8)
    assert not label_alone(StudentRead.uniform("SPEED", 0.7), speed, 0.8)
    # Anything that is not the label's start, a value included, is not a hidden value.
    for text in ("SPEED4", "SPEED45.0mm/s", "SPFED", "PEED", "S", ""):
        assert not label_alone(StudentRead.uniform(text, 0.99), speed, 0.8), text
    assert label_alone(StudentRead.uniform("ZOFFSE", 0.99), line_profile.field("z_offset"), 0.8)


def test_a_character_seen_only_by_half_is_unsure(line_profile: LineProfile) -> None:
    charset = profile_charset(line_profile)
    logits = _logits_for("TEMP172.4C", charset)
    seven = 2 * len("TEMP1")
    logits[0, seven + 1, :] = logits[0, seven, :]  # "7" over two steps, each blank-or-7 at 0.5
    logits[0, seven : seven + 2, 0] = logits[0, seven : seven + 2, charset.index("7") + 1] - 0.1
    [read] = ctc_decode(logits, charset)
    assert read.text == "TEMP172.4C" and 0.4 < read.char_confidence[len("TEMP1")] < 0.6


def test_the_right_padding_is_not_read(line_profile: LineProfile) -> None:
    """Steps past a line's own columns saw only the batch's black padding: CTC never taught
    them anything (blank and a repeat of the last character are both right there), so they
    must neither add characters nor set the line's confidence (the "TEMP17ms" bug)."""
    charset = profile_charset(line_profile)
    logits = _logits_for("TEMP172.4C", charset, steps=40)
    line = 2 * len("TEMP172.4C")
    logits[0, line:, :] = 0.0
    logits[0, line:, 0] = 1.0  # the padding: blank barely ahead ...
    logits[0, line + 3 :: 4, charset.index("m") + 1] = 2.0  # ... or a phantom unit
    logits[0, line + 5 :: 8, charset.index("s") + 1] = 2.0
    [padded] = ctc_decode(logits, charset)
    assert padded.text != "TEMP172.4C" and padded.confidence < 0.5  # what reading every step gave
    [read] = ctc_decode(logits, charset, [line])
    assert read.text == "TEMP172.4C" and read.confidence > 0.99


def test_line_steps_cover_the_scaled_crop_and_no_more() -> None:
    narrow, wide = np.zeros((30, 90), np.uint8), np.zeros((30, 2000), np.uint8)
    assert line_steps(narrow, 32, 256) == -(-96 // TIME_STRIDE)  # 90 px at 30 high -> 96 at 32
    assert line_steps(wide, 32, 256) == 256 // TIME_STRIDE  # squeezed into the whole input
    batch, steps = input_batch([narrow, wide], 32, 256)
    assert batch.shape == (2, 1, 32, 256) and steps.tolist() == [24, 64]


def _sure(text: str) -> StudentRead:
    return StudentRead.uniform(text, 0.9)


def test_only_exact_well_formed_lines_pass(line_profile: LineProfile) -> None:
    temp, lot = line_profile.field("temp"), line_profile.field("lot_id")
    assert well_formed_read(_sure("TEMP172.4C"), temp).value == pytest.approx(172.4)
    # The parser accepts (or corrects) each of these, but none is exactly the taught line.
    for text in ("TEMPl72.4C", "TEMP172.4", "TEMPI72.4C", "TEMP 172.4C", "TEMP+172.4C"):
        assert parse_field(text, temp).value == pytest.approx(172.4), text
        assert well_formed_read(_sure(text), temp) is None, text
    for text in ("TEMP172.40C", "TEMP1724C", "TEMP172.4C0", "TMP172.4C", "TEMF172.4C", "172.4C", ""):
        assert well_formed_read(_sure(text), temp) is None, text
    assert well_formed_read(_sure("LOTAB1234-05"), lot).value == "AB1234-05"
    assert well_formed_read(_sure("LOTAB12340-5"), lot) is None


def test_the_label_may_show_the_left_edge_defect_only(line_profile: LineProfile) -> None:
    exposure, bond, lot = (line_profile.field(n) for n in ("exposure", "bond_force", "lot_id"))
    for text in ("EXPOSURE10.54ms", "BEXPOSURE10.54ms", "XPOSURE10.54ms"):
        reading = well_formed_read(_sure(text), exposure)
        assert reading.value == pytest.approx(10.54) and reading.raw_text == text, text
    assert well_formed_read(_sure("ONDFORCE30.1gf"), bond).value == pytest.approx(30.1)
    for text in ("BBEXPOSURE10.54ms", "EXPOSUR10.54ms", "EXPOSURE.10.54ms"):
        assert well_formed_read(_sure(text), exposure) is None, text
    # A dropped value letter must not borrow the label's last one ("LO" + "TL3961-89").
    assert well_formed_read(_sure("LOTL3961-89"), lot) is None
    assert well_formed_read(_sure("BLOTIL3961-89"), lot).value == "IL3961-89"


def test_one_label_letter_read_as_another_is_forgiven_where_it_moves_nothing(line_profile: LineProfile) -> None:
    temp, bond, power = (line_profile.field(n) for n in ("temp", "bond_force", "us_power"))
    others = other_labels_of(line_profile, temp)
    assert "TEMP" not in others and "TILT" in others
    # An unseen face's first letter ("BEAK" for PEAK on line-c): the value part is read on its own.
    for text in ("BEMP172.4C", "TFMP172.4C", "TEHP172.4C"):
        assert well_formed_read(_sure(text), temp, others).value == pytest.approx(172.4), text
    assert well_formed_read(_sure("BONDPORCE30.1gf"), bond, other_labels_of(line_profile, bond)).value == 30.1
    # Not at the label's end (a character could cross into the value), not two letters, not a
    # changed length beyond the left-edge defect.
    for text in ("TEMF172.4C", "BEMF172.4C", "TEMPP172.4C", "EMPP172.4C"):
        assert well_formed_read(_sure(text), temp, others) is None, text
    # A label ending in a digit: "Q25.1" is cut "Q" + "25.1", no label part: refused.
    oxygen = power.model_copy(update={"name": "oxygen", "label": "O2", "unit": "ppm", "decimals": 1})
    assert well_formed_read(_sure("Q25.1ppm"), oxygen) is None
    assert well_formed_read(_sure("O25.1ppm"), oxygen).value == pytest.approx(5.1)
    # Not when the read is one letter from another field's label too (or is that label).
    assert well_formed_read(_sure("TEXP172.4C"), temp, others).value == pytest.approx(172.4)
    assert well_formed_read(_sure("TEXP172.4C"), temp, ("TEXT",)) is None
    assert well_formed_read(_sure("TEXP172.4C"), temp, ("TEXP",)) is None
    assert label_part_ok("BEAK", "PEAK") and not label_part_ok("BEAK", "PEAK", ("BEAD",))
    assert not label_part_ok("B", "P")  # a one-letter label is all it has


def test_the_value_part_is_cut_where_no_digit_can_hide_in_the_label(line_profile: LineProfile) -> None:
    z, lot, power = (line_profile.field(n) for n in ("z_offset", "lot_id", "us_power"))
    assert split_value("ZOFFSET-14.55um", z) == ("ZOFFSET", "-14.55um")
    assert split_value("ZOFFSE7-14.55um", z) == ("ZOFFSE7", "-14.55um")  # then refused as a label part
    assert split_value("ZOFFSET14.55", z) is None  # no unit
    assert split_value("USPOWER95mW", power) == ("USPOWER", "95mW")
    assert split_value("LOTIL3961-89", lot) == ("LOT", "IL3961-89")
    assert split_value("LOT3961-89", lot) == ("L", "OT3961-89")  # then refused: "L" is no label part
    assert well_formed_read(_sure("LOT3961-89"), lot) is None
    # A label ending in a digit: the exact label first, else the digit would join the value.
    zone = z.model_copy(update={"label": "ZONE 2", "unit": "C", "decimals": 1})
    assert split_value("ZONE25.0C", zone) == ("ZONE2", "5.0C")
    assert well_formed_read(_sure("ZONE225.0C"), zone).value == pytest.approx(25.0)
    assert well_formed_read(_sure("ONE25.0C"), zone) is None  # "ONE" + "25.0": not ZONE 2's 5.0


def test_a_read_that_passes_always_parses(line_profile: LineProfile) -> None:
    """Random decodes over the charset: whatever passes is a value the parser accepts as is,
    and its value part is exactly the taught value part of that value."""
    rng = np.random.default_rng(0)
    charset = profile_charset(line_profile)
    passed = 0
    for spec in line_profile.fields:
        label = "".join(spec.label.split())
        for _ in range(300):
            value = "AB1234-05" if spec.kind == "text" else round(float(rng.uniform(-50, 500)), spec.decimals or 0)
            text = list(target_text(spec, value))
            for _ in range(int(rng.integers(0, 3))):  # a few random edits
                i = int(rng.integers(0, len(text)))
                text[i] = charset[int(rng.integers(0, len(charset)))]
            if rng.random() < 0.3:  # the left-edge defect
                text = text[1:] if rng.random() < 0.5 else ["B", *text]
            read = "".join(text)
            reading = well_formed_read(_sure(read), spec)
            if reading is None:
                continue
            passed += 1
            taught = target_text(spec, reading.value)
            again = parse_field(taught, spec)
            assert not again.missing and again.value == reading.value
            value_part = taught[len(label) :]
            assert read.endswith(value_part) and len(read) - len(value_part) in (len(label) - 1, len(label), len(label) + 1)
    assert passed > 100


def test_line_input_is_polarity_free_and_left_aligned() -> None:
    dark = np.full((24, 60), 20, np.uint8)
    dark[6:18, 5:40] = 230
    light = 255 - dark
    a, b = line_input(dark, 32, 128), line_input(light, 32, 128)
    assert a.shape == (32, 128) and a.dtype == np.float32
    assert np.allclose(a, b, atol=1e-3)
    assert a.max() == pytest.approx(1.0) and a[:, 81:].max() == 0.0  # 60 px at 24 high -> 80 at 32


def test_the_learning_rate_holds_through_ctcs_blank_phase() -> None:
    """A short budget must not spend its high rate before CTC has left the all-blank phase."""
    from stream.ocr.distill import DECAY_SHARE, WARMUP_STEPS, learning_rate_factor

    assert learning_rate_factor(0, 0.0) == pytest.approx(1 / WARMUP_STEPS)
    assert learning_rate_factor(WARMUP_STEPS, 0.3) == 1.0
    assert learning_rate_factor(500, 1.0 - DECAY_SHARE) == 1.0
    assert learning_rate_factor(900, 0.8) == pytest.approx(0.5)
    assert learning_rate_factor(1000, 1.0) == pytest.approx(0.0)


def test_a_blank_and_the_neighbours_count_where_the_collapsed_text_stays() -> None:
    """Path 1 2 2 _: at step 1 the "2" emitted there and, blank there, the "2" emitted by the next
    step are the same text, and so is a "1" held one step longer; at step 2 only blank is."""
    probs = np.zeros((4, 4))
    probs[0, 1] = probs[3, 0] = 1.0
    probs[1, [2, 0, 1, 3]] = [0.5, 0.25, 0.125, 0.0625]
    probs[2, [2, 0, 1, 3]] = [0.5, 0.25, 0.125, 0.0625]
    assert step_confidence(probs, [1, 2, 2, 0]).tolist() == [1.0, 0.875, 0.75, 1.0]


def test_lines_decoded_together_read_as_each_alone(line_profile: LineProfile) -> None:
    charset = profile_charset(line_profile)
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 4.0, (4, 30, len(charset) + 1)).astype(np.float32)
    logits[..., 0] += 3.0  # blank often, as on a real line
    steps = [30, 7, 1, 18]
    together = ctc_decode(logits, charset, steps)
    assert together == [ctc_decode(logits[i : i + 1], charset, [n])[0] for i, n in enumerate(steps)]
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    paths = probs.argmax(axis=2)
    assert np.allclose(step_confidence(probs, paths), np.stack([step_confidence(p, q) for p, q in zip(probs, paths)]),
                       rtol=0.0, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3, 640, 641, 9000])
def test_line_input_levels_are_numpys(size: int) -> None:
    """The background and the ink level `line_input` stretches between: numpy's median (to the
    bit, from a histogram) and 99.5th percentile (linear, from one partial sort)."""
    from stream.ocr.student import _median, _percentile

    rng = np.random.default_rng(size)
    gray = rng.integers(0, 256, (1, size), np.uint8)
    assert _median(gray) == float(np.median(gray.astype(np.float32)))
    scaled = (rng.random(size) ** 4 * 255).astype(np.float32)
    for q in (99.5, 0.0, 50.0, 100.0):
        assert _percentile(scaled, q) == pytest.approx(float(np.percentile(scaled, q)), rel=1e-6)


def test_a_students_text_fields_need_distinct_calibration_values(line_profile: LineProfile, tmp_path) -> None:
    from dataclasses import replace as with_

    from stream.ocr.student import MIN_TEXT_VALUES, NEVER, OnnxStudentNetwork, Student, load_meta
    from tests.serving_fixtures import make_student

    folder = make_student(line_profile, tmp_path / "s", threshold=0.8)
    network = OnnxStudentNetwork(folder / "recognizer.onnx", threads=1)
    text = [f.name for f in line_profile.fields if f.kind == "text"]
    number = next(f.name for f in line_profile.fields if f.kind == "number")
    assert text  # line-a prints a lot id

    def student(values: dict | None) -> Student:
        stats = {**load_meta(folder).stats, **({"calibration": {"text_values": values}} if values is not None else {})}
        return Student.from_meta(with_(load_meta(folder), stats=stats), line_profile, network, "d", "test")

    # Calibrated before the values were counted, or on too few of them: PaddleOCR reads the lot id.
    for values in (None, {name: MIN_TEXT_VALUES - 1 for name in text}):
        assert all(student(values).threshold_for(name) == NEVER for name in text)
        assert student(values).threshold_for(number) == 0.8
    assert all(student({name: MIN_TEXT_VALUES for name in text}).threshold_for(name) == 0.8 for name in text)


def test_a_shifted_batch_moves_every_line_right_with_black_coming_in() -> None:
    batch = np.arange(2 * 1 * 3 * 8, dtype=np.float32).reshape(2, 1, 3, 8) + 1
    moved = shifted_batch(batch, 2)
    assert moved.shape == batch.shape and moved.dtype == batch.dtype
    assert (moved[..., :2] == 0).all()
    np.testing.assert_array_equal(moved[..., 2:], batch[..., :6])


def test_a_second_view_agrees_only_with_a_well_formed_read_of_the_same_value(line_profile: LineProfile) -> None:
    temp = line_profile.field("temp")
    reading = well_formed_read(_sure("TEMP172.4C"), temp)
    assert reading is not None
    assert second_view_agrees(_sure("TEMP172.4C"), reading, temp)
    assert second_view_agrees(StudentRead.uniform("EMP172.4C", 0.2), reading, temp)  # the left-edge defect, unsure
    for other in ("TEMP172.9C", "TEMP1724C", "TEMP172.4C-", "172.4C", ""):
        assert not second_view_agrees(_sure(other), reading, temp), other


def test_the_second_view_is_the_same_lines_moved_half_a_time_step(line_profile: LineProfile, tmp_path) -> None:
    from stream.ocr.student import SECOND_VIEW_SHIFT, Student, load_meta
    from tests.serving_fixtures import make_student

    folder = make_student(line_profile, tmp_path / "s")
    meta = load_meta(folder)

    class Recording:
        def __init__(self) -> None:
            self.batches: list[np.ndarray] = []

        def logits(self, batch: np.ndarray) -> np.ndarray:
            self.batches.append(batch)
            return np.zeros((len(batch), meta.width // TIME_STRIDE, len(meta.charset) + 1), np.float32)

    network = Recording()
    student = Student.from_meta(meta, line_profile, network, "d", "test")
    crops = [np.full((20, 60), 200, np.uint8), np.full((18, 40), 30, np.uint8)]
    crops[0][5:15, 10:30] = 20
    crops[1][4:14, 5:25] = 220
    student.recognize(crops)
    student.recognize_shifted(crops)
    first, second = network.batches
    assert SECOND_VIEW_SHIFT == TIME_STRIDE // 2
    np.testing.assert_array_equal(second, shifted_batch(first, SECOND_VIEW_SHIFT))
    assert student.recognize_shifted([]) == [] and len(network.batches) == 2
