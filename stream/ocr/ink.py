"""Does a student's read account for all the ink of its value? (issue 13)

The students' dangerous reads are confident and short: a value with a digit dropped
("EXPOSURE1.10ms" for EXPOSURE 11.10 ms at 0.97, "SPEED7.0mm/s" for 17.0), a lot id with a
letter missing. Such a read is well formed and the parser accepts it, so only a threshold above
its confidence kept it out, and that threshold sent a quarter of the right reads to PaddleOCR
too (docs/benchmarks.md). A dropped glyph leaves ink that no character of the read explains.

On the student's own input (`student.line_input`: bright ink on black, stretched to [0, 1]):
- ink columns are grouped into *runs*: a glyph, or glyphs that touch;
- runs are grouped into *words* by gaps wider than a share of the line's glyph width, and a
  separator (":" or "=": two short bands stacked, or one short band whose grey rows show two
  bars) ends a word;
- the runs after the label's words are the value's (with its unit). There must not be more of
  them than the read has value characters: each glyph is at least one run, and glyphs that
  touch only make fewer runs, so a surplus is ink the read left out. An explicit "+" (printed
  before positive values of signed fields, and left to the CTC blank) may be one more run: told
  by its height, or where a face prints it as tall as the digits, by its shape (`is_cross`).

A glyph read as another of a different width is the other dangerous read: an unseen lot's "YI"
read "II" at 0.95. When a value's runs and characters pair one to one, each run's width (in
glyph heights) must lie in the range that character's runs had on the training lines
(`learn_glyph_widths`, stored with the student): a wide "Y" is no "I".

Where CTC puts a character in time is no help here: the students emit a character up to a
glyph's width right of its ink (measured: "mm" of a unit emitted 30 columns after its runs),
so counting, not positions, is the check. Pure functions, no model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Input level above which a pixel is ink (the input is stretched: background 0, ink near 1).
INK_LEVEL = 0.5
# Runs with less ink than this many pixels are specks (noise, JPEG), not glyphs.
MIN_RUN_PIXELS = 4
# Rows of the text band: rows holding at least this share of the fullest row's ink.
BAND_ROW_SHARE = 0.15
# A separator's bands are each shorter than this share of the text height (":", "=").
SEPARATOR_BAND_SHARE = 0.5
# A bold or blurred "=" can close the gap between its bars at `INK_LEVEL`: one band in the mask,
# which then counted as a glyph of the value and sent right reads to PaddleOCR ("VAC = -78.6 kPa"
# on line-b, 2026-12-04: 7 of its 160 clean vacuum lines). Its rows' mean ink still shows two
# bars (peaks 0.97-0.98) with a dip between (0.46-0.64), where a "-" shows one bar (peak
# 0.92-0.98, no dip): a short run is a separator where its rows above this share of its fullest
# row form two bands or more (docs/benchmarks.md, "ocr24").
SEPARATOR_BAR_SHARE = 0.75
# The explicit "+" is between these shares of the line's median run height (a digit's or a
# capital's): measured 0.80-0.85. Taller is a glyph's body; flatter is a "-", and a dropped
# minus changes the value.
PLUS_SHARES = (0.4, 0.9)
# ... and about as wide as it is tall (measured: 0.9-1.6), where a "1" whose flag blur or a face
# shortens is a third as wide.
PLUS_MIN_ASPECT = 0.6
# A gap wider than both this many times the line's median gap between runs and this share of
# its median run width separates words. Proportional faces space some glyphs wider than others
# ("E XPOSURE" 0.6 of a glyph apart; a "1" 3 times the median gap from its neighbour); a space
# is about a glyph wide.
WORD_GAP_FACTOR = 2.0
WORD_GAP_WIDTH_SHARE = 0.6


# A "+" as tall as the digits (faces print it at 90% of their height and more, where `PLUS_SHARES`
# ends) is told from a digit by its shape: ink through its middle, none in its corners (this share
# of its height and width from each corner), and the same under a mirror either way. Measured on
# line-a's number lines (student input, 32 rows): such pluses 0.84-1.00 alike mirrored, no corner
# ink; the first digits of that height and width 0.48-0.68 ("4", whose corners are as empty).
CROSS_CORNER_SHARE = 0.3
CROSS_MAX_CORNER_INK = 0.05
CROSS_MIN_SYMMETRY = 0.8


@dataclass(frozen=True)
class InkRun:
    start: int  # first input column
    end: int  # one past the last
    height: int  # rows from its first ink row to its last
    separator: bool  # ":" or "=": two or more short bands stacked
    cross: bool = False  # shaped like a "+" (`is_cross`): measured on runs of a digit's height only


@dataclass(frozen=True)
class InkCount:
    """The value's runs against the read's value characters, the number and the unit apart
    when the unit stands as a word of its own (glyphs that touch in one part cannot then hide a
    surplus in the other: "/s" touching hid a dropped "1" in "17.0 mm/s")."""

    runs: int  # runs of the value (the number, or the number and the unit when they touch)
    characters: int  # its characters in the read
    allowed: int  # runs the read may leave unexplained (an explicit "+")
    unit_runs: int = 0  # runs of the unit's own word (0: not apart)
    unit_characters: int = 0

    @property
    def unexplained(self) -> int:
        return max(0, self.runs - self.characters - self.allowed) + max(0, self.unit_runs - self.unit_characters)


def _body(runs: Sequence[InkRun]) -> float:
    """The line's glyph height: the median height of its runs."""
    heights = [r.height for r in runs if not r.separator]
    return _median(heights) if heights else 0.0


def _median(values: Sequence[int]) -> float:
    """float(np.median(values)) of a line's few run sizes (numpy's costs more than sorting them)."""
    ordered, middle = sorted(values), len(values) // 2
    return float(ordered[middle]) if len(values) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _edges(mask: np.ndarray) -> np.ndarray:
    """Along axis 0: +1 where a run of True starts, -1 one past where it ends (one row longer)."""
    padded = np.zeros((mask.shape[0] + 2, *mask.shape[1:]), np.int8)
    padded[1:-1] = mask
    return padded[1:] - padded[:-1]


def ink_runs(image: np.ndarray, width: int | None = None) -> list[InkRun]:
    """Runs of ink columns of a student input [H, W] (its first `width` columns: the line)."""
    mask = (image[:, :width] if width is not None else image) > INK_LEVEL
    if not mask.any():
        return []
    row_ink = mask.sum(axis=1)
    rows = np.flatnonzero(row_ink >= max(1.0, BAND_ROW_SHARE * row_ink.max()))
    text_height = int(rows[-1] - rows[0] + 1)
    # Every run at once (a loop over them cost a tenth of a millisecond a line). Reducing from one
    # run's first column to the next one's takes the blank gap between them too, which holds no ink.
    column_ink = mask.sum(axis=0)
    column_edges = _edges(column_ink > 0)
    all_starts = np.flatnonzero(column_edges == 1)
    keep = np.add.reduceat(column_ink, all_starts) >= MIN_RUN_PIXELS
    starts, ends = all_starts[keep], np.flatnonzero(column_edges == -1)[keep]
    if not len(starts):
        return []
    row_edges = _edges(np.logical_or.reduceat(mask, all_starts, axis=1)[:, keep]).T
    # Transposed, the edges come out run by run, each run's bands top to bottom.
    band_run, band_start = np.nonzero(row_edges == 1)
    band_end = np.nonzero(row_edges == -1)[1]
    band_count = np.bincount(band_run, minlength=len(starts))
    first_band = np.cumsum(band_count) - band_count
    longest = np.maximum.reduceat(band_end - band_start, first_band)
    separator = (band_count >= 2) & (longest < SEPARATOR_BAND_SHARE * text_height)
    tops = band_start[first_band]
    heights = band_end[first_band + band_count - 1] - tops
    grey = image[:, :width] if width is not None else image
    for i in np.flatnonzero(~separator & (heights < SEPARATOR_BAND_SHARE * text_height)):
        separator[i] = _two_bars(grey[tops[i] : tops[i] + heights[i], starts[i] : ends[i]])
    runs = [InkRun(*run) for run in zip(starts.tolist(), ends.tolist(), heights.tolist(), separator.tolist(),
                                        strict=True)]
    # Only a run that `PLUS_SHARES` finds too tall and that is as wide as a "+" needs its shape.
    body = _body(runs)
    for i, run in enumerate(runs):
        if not run.separator and PLUS_SHARES[1] * body <= run.height < body and \
                run.end - run.start >= PLUS_MIN_ASPECT * run.height:
            box = mask[tops[i] : tops[i] + run.height, run.start : run.end]
            if is_cross(box):
                runs[i] = InkRun(run.start, run.end, run.height, False, True)
    return runs


def _two_bars(box: np.ndarray) -> bool:
    """Whether a short run's grey ink ([rows, columns] of the input, cut to the run) holds two
    bars or more stacked: rows above `SEPARATOR_BAR_SHARE` of its fullest row's mean ink, in two
    groups or more (a "=" whose gap the mask closed)."""
    rows = box.mean(axis=1)
    bars = rows >= SEPARATOR_BAR_SHARE * rows.max()
    return int(bars[0]) + int(np.count_nonzero(bars[1:] & ~bars[:-1])) >= 2


def is_cross(box: np.ndarray) -> bool:
    """Whether a run's ink (boolean [rows, columns], cut to its rows and columns) is a "+": ink in
    its middle, (almost) none in its corners, alike mirrored left-right and top-bottom."""
    rows, columns = box.shape
    total = int(box.sum())
    if rows < 3 or columns < 3 or not total:
        return False
    if not box[rows // 3 : rows - rows // 3, columns // 3 : columns - columns // 3].any():
        return False
    r, c = max(1, round(CROSS_CORNER_SHARE * rows)), max(1, round(CROSS_CORNER_SHARE * columns))
    corners = int(box[:r, :c].sum() + box[:r, -c:].sum() + box[-r:, :c].sum() + box[-r:, -c:].sum())
    alike = min(int((box & box[::-1]).sum()), int((box & box[:, ::-1]).sum()))
    return corners <= CROSS_MAX_CORNER_INK * total and alike >= CROSS_MIN_SYMMETRY * total


def words(runs: Sequence[InkRun]) -> list[list[InkRun]]:
    """Runs grouped into words: split at wide gaps (`WORD_GAP_FACTOR`, `WORD_GAP_WIDTH_SHARE`)
    and at a separator (which belongs to no word)."""
    glyphs = [r for r in runs if not r.separator]
    if not glyphs:
        return []
    gaps = [b.start - a.end for a, b in zip(glyphs, glyphs[1:])]
    gap = max(WORD_GAP_FACTOR * _median(gaps) if gaps else 0.0,
              WORD_GAP_WIDTH_SHARE * _median([r.end - r.start for r in glyphs]))
    out: list[list[InkRun]] = []
    previous: InkRun | None = None
    for run in runs:
        if run.separator:
            previous = None
            continue
        if previous is None or run.start - previous.end > gap:
            out.append([])
        out[-1].append(run)
        previous = run
    return out


def label_and_value_words(runs: Sequence[InkRun], label_words: int) -> tuple[list[list[InkRun]], list[list[InkRun]]]:
    """(the label's words, the words of the value and its unit): split at the first separator
    when the line has one (a label holds no ":" or "="), else after the label's `label_words`
    words."""
    separators = [i for i, r in enumerate(runs) if r.separator]
    if separators:
        return words(runs[: separators[0]]), words(runs[separators[0] + 1 :])
    found = words(runs)
    return found[:label_words], found[label_words:]


def value_words(runs: Sequence[InkRun], label_words: int) -> list[list[InkRun]]:
    """The words of the value and its unit (`label_and_value_words`)."""
    return label_and_value_words(runs, label_words)[1]


def _leading_plus(found: Sequence[Sequence[InkRun]], runs: Sequence[InkRun], plus_allowed: bool) -> bool:
    """Whether the value's first run may be an explicit "+": allowed there, and of a "+"'s
    height and width (`PLUS_SHARES`, `PLUS_MIN_ASPECT`)."""
    if not plus_allowed or not found:
        return False
    first, body = found[0][0], _body(runs)
    return first.cross or PLUS_SHARES[0] * body <= first.height < PLUS_SHARES[1] * body and \
        first.end - first.start >= PLUS_MIN_ASPECT * first.height


def count_value_ink(
    runs: Sequence[InkRun], label_words: int, value_text: str, unit: str, plus_allowed: bool
) -> InkCount:
    """The value's runs (`value_words`) against the read's `value_text` (number and `unit`).

    The last word is the unit's when there is another before it and it has no more runs than
    the unit has characters. `plus_allowed`: the panel may print a "+" before this value; its
    first run is then one more when it looks like one (`_leading_plus`).
    """
    found = value_words(runs, label_words)
    allowed = int(_leading_plus(found, runs, plus_allowed))
    if unit and len(found) >= 2 and len(found[-1]) <= len(unit):
        number = sum(len(w) for w in found[:-1])
        return InkCount(number, len(value_text) - len(unit), allowed, len(found[-1]), len(unit))
    return InkCount(sum(len(w) for w in found), len(value_text), allowed)


# Learnt widths: the central share of a character's training runs, widened by these factors (a
# blurred or bolder print is a little wider, a thinner one narrower). Pairs of a run and a
# character are made only where the counts match, so a few are mispaired: the ends are cut.
WIDTH_PERCENTILES = (0.5, 99.5)
WIDTH_MARGINS = (0.75, 1.3)
# ... and by this much on both sides: about one input column of a glyph 16-20 rows high (a thin
# "I" is one or two columns wide, so a share of its width alone is no margin).
WIDTH_SLACK = 0.06
# A character needs this many training runs before its width is checked.
MIN_WIDTH_SAMPLES = 20

GlyphWidths = dict[str, tuple[float, float]]


def paired_glyphs(
    runs: Sequence[InkRun], label_words: int, value_text: str, unit: str, plus_allowed: bool = False
) -> list[tuple[str, float]]:
    """(character, run width in glyph heights) for the value's characters, where its runs pair
    with them one to one: the whole value, or the number apart from a unit word of its own. A
    leading "+" (`_leading_plus`) is left out first: paired with the first digit, it would shift
    every pair by one."""
    found = value_words(runs, label_words)
    body = _body(runs)
    if not found or body <= 0:
        return []
    if _leading_plus(found, runs, plus_allowed):
        found = [word[1:] if i == 0 else word for i, word in enumerate(found)]
        found = [word for word in found if word]
    flat = [r for word in found for r in word]
    if len(flat) == len(value_text):
        text, paired = value_text, flat
    elif unit and len(found) >= 2 and sum(len(w) for w in found[:-1]) == len(value_text) - len(unit):
        text, paired = value_text[: len(value_text) - len(unit)], [r for word in found[:-1] for r in word]
    else:
        return []
    return [(c, (r.end - r.start) / body) for c, r in zip(text, paired, strict=True)]


def learn_glyph_widths(pairs: Iterable[tuple[str, float]]) -> GlyphWidths:
    """Each character's allowed width range from (character, width) pairs of training lines."""
    seen: dict[str, list[float]] = {}
    for char, width in pairs:
        seen.setdefault(char, []).append(width)
    out = {}
    for char, widths in sorted(seen.items()):
        if len(widths) >= MIN_WIDTH_SAMPLES:
            low, high = np.percentile(widths, WIDTH_PERCENTILES)
            out[char] = (round(max(0.0, float(low) * WIDTH_MARGINS[0] - WIDTH_SLACK), 4),
                         round(float(high) * WIDTH_MARGINS[1] + WIDTH_SLACK, 4))
    return out


def misfit_glyphs(pairs: Iterable[tuple[str, float]], widths: GlyphWidths) -> int:
    """How many paired runs are too wide or too narrow for the character read there."""
    return sum(1 for char, width in pairs if char in widths and not widths[char][0] <= width <= widths[char][1])
