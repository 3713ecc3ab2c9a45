"""The ink check: a read must have a character for every glyph of its value (`stream.ocr.ink`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oanet.profile import FieldSpec, LineProfile
from stream.ocr.crops import trim_to_ink
from stream.ocr.ink import (
    INK_LEVEL,
    MIN_WIDTH_SAMPLES,
    PLUS_SHARES,
    InkRun,
    count_value_ink,
    ink_runs,
    is_cross,
    learn_glyph_widths,
    misfit_glyphs,
    paired_glyphs,
    value_words,
    words,
)
from stream.ocr.student import (
    TIME_STRIDE,
    StudentRead,
    ctc_decode,
    line_input,
    line_steps,
    unexplained_ink,
    well_formed_read,
)

HEIGHT, WIDTH = 32, 512


def printed(text: str, font: int = cv2.FONT_HERSHEY_SIMPLEX, thickness: int = 2) -> tuple[np.ndarray, int]:
    """A panel line as the reader cuts it -> the student's input and its time steps."""
    canvas = np.full((48, 640), 20, np.uint8)
    cv2.putText(canvas, text, (8, 34), font, 0.8, 235, thickness, cv2.LINE_AA)
    trimmed = trim_to_ink(canvas)
    assert trimmed is not None
    return line_input(trimmed, HEIGHT, WIDTH), line_steps(trimmed, HEIGHT, WIDTH)


def read_of(text: str, image: np.ndarray, steps: int) -> StudentRead:
    """A read of `text` with the ink of `image` measured (the network's emissions do not matter
    to the check: it counts glyphs, not where CTC put them)."""
    return StudentRead(text, (0.99,) * len(text), 0.99, ink=tuple(ink_runs(image, steps * TIME_STRIDE)))


@pytest.fixture()
def speed(line_profile: LineProfile) -> FieldSpec:
    return next(f for f in line_profile.fields if f.name == "speed")


@pytest.fixture()
def z_offset(line_profile: LineProfile) -> FieldSpec:
    return next(f for f in line_profile.fields if f.name == "z_offset")


@pytest.fixture()
def lot(line_profile: LineProfile) -> FieldSpec:
    return next(f for f in line_profile.fields if f.name == "lot_id")


@pytest.mark.parametrize("separator", [": ", ":", " = ", "  ", "= "])
def test_a_right_read_explains_all_the_ink(speed: FieldSpec, separator: str) -> None:
    image, steps = printed(f"SPEED{separator}17.0 mm/s")
    read = read_of("SPEED17.0mm/s", image, steps)
    assert well_formed_read(read, speed) is not None
    assert unexplained_ink(read, speed) == 0


@pytest.mark.parametrize("separator", [": ", ":", " = ", "  ", "= "])
def test_a_dropped_leading_digit_leaves_ink_unexplained(speed: FieldSpec, separator: str) -> None:
    """The students' confident wrong read: "SPEED7.0mm/s" for SPEED 17.0 mm/s. Well formed, so
    only the ink tells it apart."""
    image, steps = printed(f"SPEED{separator}17.0 mm/s")
    read = read_of("SPEED7.0mm/s", image, steps)
    assert well_formed_read(read, speed) is not None  # the parser accepts it
    assert unexplained_ink(read, speed) == 1


def test_a_dropped_lot_letter_leaves_ink_unexplained(lot: FieldSpec) -> None:
    image, steps = printed("LOT: YI0409-10", thickness=1)  # at 2, "YI" touch: one run
    assert unexplained_ink(read_of("LOTYI0409-10", image, steps), lot) == 0
    # "Y0409-10" is no lot id (the pattern refuses it before the ink is looked at); counted alone
    # it leaves the "I" unexplained.
    runs = ink_runs(image, steps * TIME_STRIDE)
    assert count_value_ink(runs, 1, "Y0409-10", "", False).unexplained == 1


@pytest.mark.parametrize("font", [cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
                                  cv2.FONT_HERSHEY_PLAIN])
def test_other_faces(speed: FieldSpec, font: int) -> None:
    image, steps = printed("SPEED: 117.5 mm/s", font=font, thickness=1)
    assert unexplained_ink(read_of("SPEED117.5mm/s", image, steps), speed) == 0
    assert unexplained_ink(read_of("SPEED17.5mm/s", image, steps), speed) >= 1


def test_an_explicit_plus_needs_no_character(z_offset: FieldSpec) -> None:
    """The panel may print "+2.61"; the student is taught to leave the "+" to the blank, so it
    may stay unexplained. A dropped minus may not: it changes the value."""
    image, steps = printed("Z OFFSET: +2.61 um")
    assert unexplained_ink(read_of("ZOFFSET2.61um", image, steps), z_offset) == 0
    image, steps = printed("Z OFFSET: -2.61 um")
    assert unexplained_ink(read_of("ZOFFSET-2.61um", image, steps), z_offset) == 0
    assert unexplained_ink(read_of("ZOFFSET2.61um", image, steps), z_offset) == 1


def test_separators_and_words() -> None:
    image, steps = printed("SPEED = 17.0 mm/s")
    runs = ink_runs(image, steps * TIME_STRIDE)
    assert sum(r.separator for r in runs) == 1  # "=": two short bands
    assert [len(w) for w in words(runs)] == [5, 4, 3]  # SPEED | 17.0 | mm/s ("/s" touch)
    assert [len(w) for w in value_words(runs, label_words=1)] == [4, 3]
    image, steps = printed("SPEED  17.0 mm/s")  # no separator: the label's words end it
    runs = ink_runs(image, steps * TIME_STRIDE)
    assert not any(r.separator for r in runs)
    assert [len(w) for w in value_words(runs, label_words=1)] == [4, 3]


def test_touching_glyphs_can_only_hide_a_surplus() -> None:
    """Glyphs that touch are one run: fewer runs than characters is never refused."""
    runs = [InkRun(0, 10, 20, False), InkRun(14, 20, 12, True), InkRun(24, 60, 20, False)]
    count = count_value_ink(runs, label_words=1, value_text="17.0C", unit="C", plus_allowed=False)
    assert count.runs == 1 and count.unexplained == 0
    assert count_value_ink(runs, 1, "", "", False).unexplained == 1


def test_the_unit_word_is_counted_apart() -> None:
    """"/s" touching in the unit must not hide a dropped digit in the number."""
    glyph = [InkRun(x, x + 10, 20, False) for x in (0, 12, 24, 36, 48)]  # LABEL
    number = [InkRun(x, x + 10, 20, False) for x in (100, 112, 124, 136)]  # 17.0
    unit = [InkRun(x, x + 10, 14, False) for x in (180, 192)] + [InkRun(204, 230, 20, False)]  # m m /s
    runs = glyph + number + unit
    assert count_value_ink(runs, 1, "17.0mm/s", "mm/s", False).unexplained == 0
    assert count_value_ink(runs, 1, "7.0mm/s", "mm/s", False).unexplained == 1
    # Number and unit touching (no gap): one word, counted together.
    assert count_value_ink(glyph + number + [InkRun(148, 158, 14, False)], 1, "17.0m", "m", False).unexplained == 0


def test_blank_input_and_unmeasured_reads(speed: FieldSpec) -> None:
    assert ink_runs(np.zeros((HEIGHT, WIDTH), np.float32)) == []
    assert unexplained_ink(StudentRead.uniform("SPEED7.0mm/s", 0.99), speed) == 0  # ink not measured


def test_decoding_with_inputs_measures_the_ink() -> None:
    image, steps = printed("SPEED: 17.0 mm/s")
    logits = np.zeros((1, WIDTH // TIME_STRIDE, 3), np.float32)
    logits[0, :, 0] = 5.0  # blank everywhere
    (read,) = ctc_decode(logits, "ab", [steps], image[None, None])
    assert read.ink == tuple(ink_runs(image, steps * TIME_STRIDE)) and len(read.ink) >= 12
    (unmeasured,) = ctc_decode(logits, "ab", [steps])
    assert unmeasured.ink is None


FACES = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def test_widths_are_learnt_where_runs_and_characters_pair() -> None:
    image, steps = printed("LOT: YI0409-10", thickness=1)
    pairs = paired_glyphs(ink_runs(image, steps * TIME_STRIDE), 1, "YI0409-10", "")
    assert [c for c, _ in pairs] == list("YI0409-10")
    widths = dict(pairs)
    assert widths["Y"] > 2 * widths["I"]  # in glyph heights
    # Runs and characters that do not pair one to one teach nothing.
    assert paired_glyphs(ink_runs(image, steps * TIME_STRIDE), 1, "Y0409-10", "") == []
    learnt = learn_glyph_widths([("Y", 0.8)] * MIN_WIDTH_SAMPLES + [("I", 0.2)] * (MIN_WIDTH_SAMPLES - 1))
    assert set(learnt) == {"Y"} and learnt["Y"][0] < 0.8 < learnt["Y"][1]


def test_a_glyph_read_as_one_of_another_width_is_refused(lot: FieldSpec) -> None:
    """An unseen lot's "YI" read "II" at 0.95 (docs/benchmarks.md): the same count of glyphs, but
    a "Y" is three times as wide as any "I" of the training lines."""
    pairs = []
    for face in FACES:
        for text in ("IY1234-56", "YI0409-10", "IL3961-89", "WY7049-76"):
            image, steps = printed(f"LOT: {text}", font=face, thickness=1)
            pairs += paired_glyphs(ink_runs(image, steps * TIME_STRIDE), 1, text, "")
    widths = learn_glyph_widths(pairs * 5)
    image, steps = printed("LOT: YI0409-10", thickness=1)
    assert unexplained_ink(read_of("LOTYI0409-10", image, steps), lot, widths) == 0
    swapped = read_of("LOTII0409-10", image, steps)
    assert well_formed_read(swapped, lot) is not None  # a lot id the pattern accepts
    assert unexplained_ink(swapped, lot, widths) == 1
    assert unexplained_ink(swapped, lot) == 0  # a student without learnt widths: count only
    assert misfit_glyphs([("Y", 0.1), ("Q", 5.0)], widths) == 1  # a character never learnt is not checked


def test_a_leading_plus_is_left_out_of_the_pairs() -> None:
    """Paired with the first digit, a "+" would shift every pair by one and refuse right reads
    ("ZOFFSET1.59um": "1" measured as wide as a "+", "5" as narrow as a ".")."""
    image, steps = printed("Z OFFSET: +1.59 um", thickness=1)
    runs = ink_runs(image, steps * TIME_STRIDE)
    pairs = paired_glyphs(runs, 2, "1.59um", "um", plus_allowed=True)
    assert [c for c, _ in pairs] == list("1.59um")
    widths = dict(pairs)
    assert widths["1"] < widths["5"] and widths["."] < widths["5"]


@pytest.mark.parametrize(("line", "value"), [("Z OFFSET= 1.10 um", "1.10"), ("Z OFFSET=+1.10 um", "1.10"),
                                             ("Z OFFSET 1.10um", "1.10"), ("Z OFFSET: -1.10 um", "-1.10")])
def test_a_label_missing_its_last_letter_stands_only_with_every_value_glyph_paired(
        z_offset: FieldSpec, line: str, value: str) -> None:
    """Students drop a label's last letter where it touches the separator ("ZOFFSE" for "T="), a
    read the label rule alone refuses. With the ink it stands when each value glyph has its own
    run; the same read with the dropped "T" turned into a digit of the value does not."""
    image, steps = printed(line, thickness=1)
    right = read_of(f"ZOFFSE{value}um", image, steps)
    reading = well_formed_read(right, z_offset)
    assert reading is not None and reading.value == pytest.approx(float(value)) and reading.raw_text == right.text
    assert unexplained_ink(right, z_offset) == 0
    for wrong in (f"ZOFFSE7{value}um", f"ZOFFSE1{value}um"):
        assert well_formed_read(read_of(wrong, image, steps), z_offset) is None, wrong
    # Without the ink measured, the label rule alone decides (refused).
    assert well_formed_read(StudentRead.uniform(right.text, 0.99), z_offset) is None


def test_dropped_label_letters_are_bounded(line_profile: LineProfile, lot: FieldSpec) -> None:
    bond = line_profile.field("bond_force")
    image, steps = printed("BOND FORCE: 30.1 gf", thickness=1)
    for text, value in (("NDFORCE30.1gf", 30.1), ("NDFORC30.1gf", 30.1), ("ONDFORC30.1gf", 30.1)):
        reading = well_formed_read(read_of(text, image, steps), bond)
        assert reading is not None and reading.value == pytest.approx(value), text
    # Three letters off the start, a letter off the middle, the label's first half alone: refused.
    for text in ("DFORCE30.1gf", "BONDFRCE30.1gf", "BOND30.1gf", "BONDFOR30.1gf"):
        assert well_formed_read(read_of(text, image, steps), bond) is None, text
    # Text fields keep the label rule alone: "LO" + "TL3961-89" could borrow the label's "T".
    image, steps = printed("LOT: IL3961-89", thickness=1)
    assert well_formed_read(read_of("LOIL3961-89", image, steps), lot) is None


def _tall_plus_line(share: float) -> tuple[np.ndarray, int]:
    """ "Z OFFSET: +2.61 um" with a "+" `share` of the digits' height (faces that print it tall)."""
    canvas = np.full((48, 640), 20, np.uint8)
    cv2.putText(canvas, "Z OFFSET:", (8, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 235, 2, cv2.LINE_AA)
    (digits_w, digits_h), _ = cv2.getTextSize("2", cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
    size = int(round(share * (digits_h + 1)))
    left, top = 150, 34 - digits_h + (digits_h - size) // 2
    cv2.line(canvas, (left, top + size // 2), (left + size, top + size // 2), 235, 2)
    cv2.line(canvas, (left + size // 2, top), (left + size // 2, top + size), 235, 2)
    cv2.putText(canvas, "2.61 um", (left + size + 8, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 235, 2, cv2.LINE_AA)
    trimmed = trim_to_ink(canvas)
    assert trimmed is not None
    return line_input(trimmed, HEIGHT, WIDTH), line_steps(trimmed, HEIGHT, WIDTH)


def test_a_plus_as_tall_as_the_digits_is_told_by_its_shape(z_offset: FieldSpec) -> None:
    image, steps = _tall_plus_line(0.95)
    runs = ink_runs(image, steps * TIME_STRIDE)
    first = value_words(runs, 2)[0][0]
    assert first.cross and first.height >= PLUS_SHARES[1] * sorted(r.height for r in runs)[len(runs) // 2]
    assert unexplained_ink(read_of("ZOFFSET2.61um", image, steps), z_offset) == 0
    # A minus before the same digits is no plus: dropping it changes the value.
    image, steps = printed("Z OFFSET: -2.61 um")
    assert unexplained_ink(read_of("ZOFFSET2.61um", image, steps), z_offset) == 1


@pytest.mark.parametrize("font", FACES)
def test_no_digit_is_taken_for_a_tall_plus(z_offset: FieldSpec, font: int) -> None:
    """A dropped leading digit taken for a "+" would pass the count: no digit of any face is a cross."""
    for digit in "0123456789":
        image, steps = printed(f"Z OFFSET: {digit}2.61 um", font=font, thickness=1)
        runs = ink_runs(image, steps * TIME_STRIDE)
        assert not any(r.cross for r in runs), digit
        assert unexplained_ink(read_of("ZOFFSET2.61um", image, steps), z_offset) == 1, digit
        # The shape alone, whatever the digit's height (only runs of 90-100% of it are measured).
        first = value_words(runs, 2)[0][0]
        box = image[:, first.start : first.end] > INK_LEVEL
        rows = np.flatnonzero(box.any(axis=1))
        assert not is_cross(box[rows[0] : rows[-1] + 1]), digit
    assert not is_cross(np.ones((20, 14), bool)) and not is_cross(np.zeros((20, 14), bool))
    ring = np.zeros((20, 14), bool)
    ring[[0, -1], 2:-2] = ring[2:-2, [0, -1]] = True  # an "0": symmetric, but hollow and cornered
    assert not is_cross(ring)


def test_runs_of_a_known_input() -> None:
    """Runs are columns with ink, specks of fewer than 4 pixels dropped; a run's height spans its
    first to its last ink row; two or more bands, each under half the text height, make a separator."""
    image = np.zeros((HEIGHT, 60), np.float32)
    image[4:24, 2:5] = 1.0  # a bar: the text height, 20 rows
    image[8:12, 10:12] = image[16:20, 10:12] = 0.9  # ":"
    image[4:12, 20:23] = image[16:24, 20:23] = 1.0  # two bands, each under half the text height
    image[4:15, 30:32] = image[17:24, 30:32] = 1.0  # two bands, one longer than half of it
    image[20, 40:43] = 1.0  # a speck of 3 pixels
    image[5:9, 50:58] = 0.6  # cut at column 54 by `width`
    assert ink_runs(image, 54) == [InkRun(2, 5, 20, False), InkRun(10, 12, 12, True), InkRun(20, 23, 20, True),
                                   InkRun(30, 32, 20, False), InkRun(50, 54, 4, False)]
    assert ink_runs(image[:, :1], None) == [] and ink_runs(np.full((3, 2), 0.5, np.float32)) == []


def test_a_separator_whose_bars_the_mask_joins_is_still_a_separator() -> None:
    """A bold or blurred "=": ink above `INK_LEVEL` fills the gap between its bars, so the mask sees
    one short band; its rows' mean ink still shows two bars, where a "-" shows one, and a dip a
    little under a bar's level is no gap."""
    image = np.zeros((HEIGHT, 80), np.float32)
    image[4:24, 2:8] = 1.0  # a glyph of the label: the text height, 20 rows
    image[9:12, 14:24] = image[14:17, 14:24] = 0.95  # "=": two bars ...
    image[12:14, 14:24] = 0.55  # ... joined at the mask's level
    image[11:16, 30:40] = np.array([0.6, 0.95, 0.97, 0.9, 0.55], np.float32)[:, None]  # "-"
    image[10:17, 46:56] = np.array([0.9, 0.95, 0.85, 0.8, 0.85, 0.95, 0.6], np.float32)[:, None]  # a dip, no gap
    image[4:24, 62:68] = 1.0  # a digit
    runs = ink_runs(image, 80)
    assert [(r.start, r.height, r.separator) for r in runs] == [(2, 20, False), (14, 8, True), (30, 5, False),
                                                              (46, 7, False), (62, 20, False)]
    # The value starts after the "=", with the minus: a read that drops the minus leaves it unexplained.
    assert [[r.start for r in word] for word in value_words(runs, label_words=1)] == [[30, 46, 62]]
    assert count_value_ink(runs, 1, "-88", "", False).unexplained == 0
    assert count_value_ink(runs, 1, "88", "", False).unexplained == 1
