"""The distilled recogniser's pure side: charset, targets, CTC decoding, what a read may pass."""

from __future__ import annotations

import numpy as np
import pytest

from oanet.profile import LineProfile, load_profile
from stream.ocr.parse import parse_field
from stream.ocr.student import (
    TIME_STRIDE,
    ctc_decode,
    encode_text,
    input_batch,
    line_input,
    line_steps,
    profile_charset,
    target_text,
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
    [(text, conf)] = ctc_decode(logits, charset)
    assert text == "TEMP172.4C" and conf > 0.99
    logits[0, 30, :] = 0.0  # one undecided step lowers the whole line's confidence
    [(_, unsure)] = ctc_decode(logits, charset)
    assert unsure < 0.05
    doubled = np.repeat(_logits_for("TEMP", charset, steps=10), 2, axis=1)  # each char over 2 steps
    assert ctc_decode(doubled, charset)[0][0] == "TEMP"


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
    [(padded_text, padded_conf)] = ctc_decode(logits, charset)
    assert padded_text != "TEMP172.4C" and padded_conf < 0.5  # what reading every step gave
    [(text, conf)] = ctc_decode(logits, charset, [line])
    assert text == "TEMP172.4C" and conf > 0.99


def test_line_steps_cover_the_scaled_crop_and_no_more() -> None:
    narrow, wide = np.zeros((30, 90), np.uint8), np.zeros((30, 2000), np.uint8)
    assert line_steps(narrow, 32, 256) == -(-96 // TIME_STRIDE)  # 90 px at 30 high -> 96 at 32
    assert line_steps(wide, 32, 256) == 256 // TIME_STRIDE  # squeezed into the whole input
    batch, steps = input_batch([narrow, wide], 32, 256)
    assert batch.shape == (2, 1, 32, 256) and steps.tolist() == [24, 64]


def test_only_exact_well_formed_lines_pass(line_profile: LineProfile) -> None:
    temp, lot = line_profile.field("temp"), line_profile.field("lot_id")
    assert well_formed_read("TEMP172.4C", 0.9, temp).value == pytest.approx(172.4)
    # The parser accepts (or corrects) each of these, but none is exactly the taught line.
    for text in ("TEMPl72.4C", "TEMP172.4", "TEMPI72.4C", "TEMP 172.4C", "TEMP+172.4C"):
        assert parse_field(text, temp).value == pytest.approx(172.4), text
        assert well_formed_read(text, 0.9, temp) is None, text
    for text in ("TEMP172.40C", "TEMP1724C", "TEMP172.4C0", "TMP172.4C", ""):
        assert well_formed_read(text, 0.9, temp) is None, text
    assert well_formed_read("LOTAB1234-05", 0.9, lot).value == "AB1234-05"
    assert well_formed_read("LOTAB12340-5", 0.9, lot) is None


def test_a_read_that_passes_always_parses(line_profile: LineProfile) -> None:
    """Random decodes over the charset: whatever passes is a value the parser accepts as is."""
    rng = np.random.default_rng(0)
    charset = profile_charset(line_profile)
    passed = 0
    for spec in line_profile.fields:
        for _ in range(300):
            value = "AB1234-05" if spec.kind == "text" else round(float(rng.uniform(-50, 500)), spec.decimals or 0)
            text = list(target_text(spec, value))
            for _ in range(int(rng.integers(0, 3))):  # a few random edits
                i = int(rng.integers(0, len(text)))
                text[i] = charset[int(rng.integers(0, len(charset)))]
            reading = well_formed_read("".join(text), 0.99, spec)
            if reading is None:
                continue
            passed += 1
            again = parse_field("".join(text), spec)
            assert not again.missing and again.value == reading.value
            assert target_text(spec, reading.value) == "".join(text)
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
