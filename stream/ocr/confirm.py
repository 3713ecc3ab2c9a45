"""Text-field values PaddleOCR has confirmed: how the student reads lot ids without guessing (issue 13).

A text field (a lot or batch id) prints a value for hundreds of frames, then the next lot's. The
student's calibration sees two or three such values, too few to bound its letters' misreads: on
unseen lots it read "VR0359-44" as "XR0359-44" at 0.99 on every frame of the lot, a letter its
training lots never printed (docs/benchmarks.md, "ocr19"), so such fields went to PaddleOCR on
every line. What a lot id does offer is repetition: a value PaddleOCR read on one line is the
value of the lot's next lines, and the student reads the lot's lines the same way, right or not.

So the student's read of such a field is used only through what PaddleOCR read on an earlier
line the student read the same way (a confirmation), as a `TextRead`:

- a read that is a well-formed value (`well_formed_read`, ink check passed) stands for that value
  only: PaddleOCR must have read the same value. Where it read another, the read is disputed and
  never used again: the student misreads something as a valid id, and the two cannot be told
  apart (a real lot with that id would get the other lot's value).
- a read that can be no value (a letter dropped: "LOTM1038-76" for "TM1038-76", on every frame of
  that lot) is a fingerprint of the line, not a value: it stands for the value PaddleOCR read on
  the line that first showed it, where that value is one edit (a character dropped, added or
  changed) from what the student read after the label. The edit bound is the second opinion a
  well-formed read gets from being equal: a PaddleOCR misread is taken over only where the
  student's read is within one edit of it too, not whatever the student read. Where PaddleOCR
  later reads another value on a line the student read the same way, the fingerprint is
  disputed: two lots look alike to the student.

A read is a key at or above the student's pooled threshold, or below it where the only doubt
is whether one glyph is there at all (`StudentRead.doubts_one_glyph_only`): unseen lots' first
letters come out as "X or nothing" at 0.6 / 0.4, each reading its own key, while a letter that
may be another letter is no key.

A read PaddleOCR could not parse says nothing either way. A wrong value can still pass where a
new lot's read equals a read this process confirmed for another lot (a one-glyph neighbour read
as that lot's id, or two lots whose ids differ only in a letter the student drops), above the
student's pooled threshold: the student's read alone cannot tell them apart. So every
`audit_every`-th use of a confirmed read goes to PaddleOCR again, and a read it contradicts is
disputed from then on: such a mix-up costs at most `audit_every - 1` lines of a lot, where
without the audit it would last as long as the lot.

Pure and in memory: each OCR process keeps its own (each way of reading a lot costs the process
one PaddleOCR line), the newest `capacity` reads per field (`OcrSettings.confirmed_text_values`,
`OcrSettings.confirmed_text_audit`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from oanet.profile import FieldSpec
from stream.ocr.ink import GlyphWidths
from stream.ocr.parse import edit_distance, parse_field
from stream.ocr.records import FieldReading
from stream.ocr.student import (StudentRead, label_text, target_text, unexplained_ink, value_text,
                                well_formed_read)


@dataclass(frozen=True)
class TextRead:
    """A student's read of a text field's line, as the memo keys it."""

    # The value read (well formed), else what the line read after the label, or after the label
    # less its first letter (the whole line where neither starts it).
    text: str
    well_formed: bool


def text_read(read: StudentRead, spec: FieldSpec, other_labels: Sequence[str], widths: GlyphWidths | None,
              bar: float) -> tuple[TextRead, float] | None:
    """The memo's key for `read` of a line of text field `spec`, and its confidence; None when
    the read is below `bar` in more than whether one glyph is there, or a well-formed read leaves
    ink unexplained (it can be neither the value it spells nor a stable fingerprint of the line)."""
    reading = well_formed_read(read, spec, other_labels)
    if reading is not None:
        # Well formed: the read ends in exactly the value part taught for its value.
        start = len(read.text) - len(value_text(spec, str(reading.value)))
        key = TextRead(str(reading.value), True)
        if unexplained_ink(read, spec, widths):
            return None
    else:
        start = _label_end(read.text, label_text(spec))
        key = TextRead(read.text[start:], False)
        if start == len(read.text):
            return None
    confidence = read.confidence_from(start)
    if confidence < bar and not read.doubts_one_glyph_only(start, bar):
        return None
    return key, confidence


def _label_end(text: str, label: str) -> int:
    """Where a malformed read's label ends: after the label, or after the label without its first
    letter (the left-edge defect `well_formed_read` forgives: "OTM1038-76", the "L" half seen and
    its step unsure); 0 where neither starts the read."""
    for prefix in (label, label[1:]):
        if len(prefix) >= 2 and text.startswith(prefix):
            return len(prefix)
    return 1 if len(label) == 1 and text.startswith(label) else 0


def confirmed_reading(spec: FieldSpec, value: str, read: StudentRead, confidence: float) -> FieldReading | None:
    """The reading of a line whose read stands for the confirmed `value`; None where the parser
    would not take the value back (never a missing reading in the student's name)."""
    reading = parse_field(target_text(spec, value), spec, confidence)
    return None if reading.missing or str(reading.value) != value else replace(reading, raw_text=read.text)


@dataclass
class _Confirmed:
    value: str
    uses: int = 0


class ConfirmedValues:
    """Per text field: what PaddleOCR read on lines the student read a given way (the newest
    `capacity` reads), and the reads it disputed."""

    def __init__(self, capacity: int, audit_every: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if audit_every < 0 or audit_every == 1:
            raise ValueError(f"audit_every must be 0 (never) or at least 2, got {audit_every}")
        self.capacity = capacity
        self.audit_every = audit_every
        self._confirmed: dict[str, OrderedDict[TextRead, _Confirmed]] = {}
        self._disputed: dict[str, OrderedDict[TextRead, None]] = {}
        # Engines of one process may read from several threads; each call is short.
        self._lock = threading.Lock()

    def value_for(self, field: str, read: TextRead) -> str | None:
        """The value the student's `read` of `field` stands for; None until PaddleOCR confirmed
        one, and on an audit turn (the line goes to PaddleOCR, whose read is then `record`ed)."""
        with self._lock:
            entry = self._confirmed.get(field, {}).get(read)
            if entry is None:
                return None
            self._confirmed[field].move_to_end(read)
            entry.uses += 1
            if self.audit_every and entry.uses % self.audit_every == 0:
                return None
            return entry.value

    def record(self, field: str, read: TextRead, teacher_value: str | None) -> None:
        """PaddleOCR read `teacher_value` (None: nothing it could parse) on a line the student
        read as `read`."""
        if teacher_value is None:
            return
        with self._lock:
            if read in self._disputed.get(field, ()):
                return
            confirmed = self._confirmed.setdefault(field, OrderedDict())
            known = confirmed.get(read)
            contradicted = read.well_formed and teacher_value != read.text
            if contradicted or (known is not None and known.value != teacher_value):
                _remember(self._disputed.setdefault(field, OrderedDict()), read, None, self.capacity)
                confirmed.pop(read, None)
            elif known is None and (read.well_formed or edit_distance(read.text, teacher_value) <= 1):
                _remember(confirmed, read, _Confirmed(teacher_value), self.capacity)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Field -> (confirmed, disputed) reads remembered now."""
        with self._lock:
            fields = {f for table in (self._confirmed, self._disputed) for f, entries in table.items() if entries}
            return {f: (len(self._confirmed.get(f, ())), len(self._disputed.get(f, ()))) for f in sorted(fields)}


def _remember(entries: OrderedDict, read: TextRead, entry: _Confirmed | None, capacity: int) -> None:
    entries[read] = entry
    entries.move_to_end(read)
    while len(entries) > capacity:
        entries.popitem(last=False)
