"""Spliced text-field lines (`stream.ocr.splice`): a lot id redrawn with other glyphs of its frame."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from oanet.profile import LineProfile
from stream.ocr.crops import trim_to_ink
from stream.ocr.ink import ink_runs, value_words
from stream.ocr.lines import Line
from stream.ocr.splice import (SOURCE_SPLICE, cut_line, frame_lean, glyph_bank, paired_characters, shear, splice_line,
                               spliced_lines)
from stream.ocr.student import line_input

HEIGHT = 32


def _line(profile: LineProfile, name: str, printed: str, value, frame: str = "f1", italic: bool = False) -> Line:
    """A field line printed as the panel prints it, cut as the reader cuts it."""
    canvas = np.full((48, 640), 20, np.uint8)
    face = cv2.FONT_HERSHEY_COMPLEX_SMALL | cv2.FONT_ITALIC if italic else cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, printed, (8, 34), face, 1.4 if italic else 0.8, 235, 1, cv2.LINE_AA)
    trimmed = trim_to_ink(canvas)
    assert trimmed is not None
    index = [f.name for f in profile.fields].index(name)
    return Line(frame, index, canvas, trimmed, value, "manifest")


@pytest.fixture()
def frame(line_profile: LineProfile) -> list[Line]:
    lines = [_line(line_profile, "lot_id", "LOT: AB1234-05", "AB1234-05"),
             _line(line_profile, "temp", "TEMP: 172.4 C", 172.4),
             _line(line_profile, "pressure", "PRESSURE: 98.6 kPa", 98.6)]
    # Capitals and digits only: the same crop height, so the glyphs share scale and baseline.
    assert lines[0].trimmed.shape[0] == lines[1].trimmed.shape[0]
    return lines


def test_the_glyphs_of_a_frame_are_cut_where_runs_pair_with_characters(line_profile, frame) -> None:
    cut = cut_line(frame[1], line_profile.field("temp"), HEIGHT)
    assert "".join(c for c, _ in cut.label) == "TEMP" and "".join(c for c, _ in cut.value) == "172.4C"
    bank = glyph_bank(frame, line_profile, HEIGHT)[frame[0].trimmed.shape[0]]
    assert set("LOTAB1234-05EMP7.C") <= set(bank)
    assert all(g.shape[0] == HEIGHT and g.shape[1] > 0 for glyphs in bank.values() for g in glyphs)
    unlabelled = Line("f1", frame[1].field, frame[1].slot, frame[1].trimmed)
    assert cut_line(unlabelled, line_profile.field("temp"), HEIGHT) is None


def test_a_spliced_lot_id_is_a_new_id_of_the_frames_glyphs(line_profile, frame) -> None:
    lot = line_profile.field("lot_id")
    bank = glyph_bank(frame, line_profile, HEIGHT)
    seen = set()
    for seed in range(20):
        copy = splice_line(frame[0], lot, bank, np.random.default_rng(seed), HEIGHT)
        if copy is None:  # a draw that gave the same id, or one the pattern refuses
            continue
        assert copy.source == SOURCE_SPLICE and copy.frame_id == "f1" and copy.field == frame[0].field
        assert re.fullmatch(lot.pattern, copy.value) and copy.value != "AB1234-05"
        # Letters only from this frame's lines (LOT, AB, TEMP, C, PRESSURE: no "Z", no "Y").
        assert set(copy.value[:2]) <= set("LOTABEMPCRSU")
        seen.add(copy.value)
        # One ink run per character of the value, the label part as it was printed.
        image = line_input(copy.trimmed, HEIGHT, 1024)
        runs = [r for word in value_words(ink_runs(image), 1) for r in word]
        assert len(runs) == len(copy.value), copy.value
        original = cut_line(frame[0], lot, HEIGHT)
        start = original.value[0][1].start
        assert np.abs(image[:, :start].astype(float) - original.image[:, :start]).max() < 0.05
    assert len(seen) >= 10


def test_spliced_lines_are_drawn_per_frame_and_only_for_text_fields(line_profile, frame) -> None:
    other = [_line(line_profile, "lot_id", "LOT: XY9876-54", "XY9876-54", frame="f2")]
    copies = spliced_lines([*frame, *other], line_profile, np.random.default_rng(0), 3, HEIGHT)
    assert 3 <= len(copies) <= 6 and {c.field for c in copies} == {frame[0].field}
    # f2's only glyphs are its own: its copies hold only its letters.
    assert all(set(c.value[:2]) <= set("LOTXY") for c in copies if c.frame_id == "f2")
    again = spliced_lines([*frame, *other], line_profile, np.random.default_rng(0), 3, HEIGHT)
    assert [c.value for c in copies] == [c.value for c in again]  # the same draws, the same lines
    assert spliced_lines(frame, line_profile, np.random.default_rng(0), 0, HEIGHT) == []
    numbers = line_profile.model_copy(update={"fields": [f for f in line_profile.fields if f.kind != "text"]})
    assert spliced_lines(frame[1:], numbers, np.random.default_rng(0), 2, HEIGHT) == []


def test_a_shear_and_its_opposite_give_the_image_back() -> None:
    image = np.zeros((HEIGHT, 40), np.float32)
    image[4:28, 10:14] = np.linspace(0.2, 1.0, 24)[:, None]
    leaned = shear(image, 0.2)
    assert leaned.shape == (HEIGHT, 40 + 7) and shear(image, 0.0) is image
    # Each row of the bar moved right by a whole number of columns, 0.2 per row below the top.
    for row in range(4, 28):
        assert np.flatnonzero(leaned[row]).tolist() == list(range(10 + round(0.2 * row), 14 + round(0.2 * row)))
    # Leaned back pixel for pixel (the margin on the left), thin strokes and all.
    assert np.array_equal(shear(leaned, -0.2)[:, 7 : 7 + 40], image)


def test_an_italic_frame_is_cut_upright_and_its_copies_leaned_back(line_profile) -> None:
    frame = [_line(line_profile, "lot_id", "LOT: AB1234-05", "AB1234-05", italic=True),
             _line(line_profile, "temp", "TEMP: 172.4 C", 172.4, italic=True)]
    lot = line_profile.field("lot_id")
    # As printed, the leaning glyphs share columns: fewer characters pair than when stood upright.
    assert paired_characters(frame, line_profile, HEIGHT, 0.0) < paired_characters(frame, line_profile, HEIGHT, 0.2)
    lean = frame_lean(frame, line_profile, HEIGHT)
    assert lean > 0.0 and cut_line(frame[0], lot, HEIGHT, lean).value
    bank = glyph_bank(frame, line_profile, HEIGHT, lean)
    copies = [c for seed in range(10) if (c := splice_line(frame[0], lot, bank, np.random.default_rng(seed), HEIGHT,
                                                           lean)) is not None]
    assert copies
    original = line_input(frame[0].trimmed, HEIGHT, 1024)
    label_end = ink_runs(original)[2].end
    for copy in copies:
        image = line_input(copy.trimmed, HEIGHT, 1024)
        # Leaned back as printed: the copy's label is the original's, column for column.
        assert np.abs(image[:, :label_end].astype(float) - original[:, :label_end]).max() < 0.02
        # Stood upright again, its value pairs one run per character.
        stood = shear(image, lean)
        runs = [r for word in value_words(ink_runs(stood), 1) for r in word]
        assert len(runs) == len(copy.value), copy.value


def test_an_upright_frame_is_cut_as_printed(line_profile, frame) -> None:
    assert frame_lean(frame, line_profile, HEIGHT) == 0.0


def test_a_line_gives_glyphs_only_where_label_and_value_both_pair(line_profile, frame) -> None:
    # Labelled with one character more than it prints: its label's runs would pair by count,
    # but a count that is off in one part is no proof the other part's is right.
    mislabelled = Line("f1", frame[1].field, frame[1].slot, frame[1].trimmed, 1172.4, "manifest")
    cut = cut_line(mislabelled, line_profile.field("temp"), HEIGHT)
    assert cut is not None and cut.label == [] and cut.value == []
    bank = glyph_bank([frame[0], mislabelled], line_profile, HEIGHT)[frame[0].trimmed.shape[0]]
    assert "M" not in bank and "P" not in bank  # TEMP's letters only came from the mislabelled line
