"""Text-field values PaddleOCR has confirmed: how the student reads lot ids without guessing (issue 13).

A text field (a lot or batch id) prints a value for hundreds of frames, then the next lot's. The
student's calibration sees two or three such values, too few to bound its letters' misreads: on
unseen lots it read "VR0359-44" as "XR0359-44" at 0.99 on every frame of the lot, a letter its
training lots never printed (docs/benchmarks.md, "ocr19"), so such fields went to PaddleOCR on
every line. What a lot id does offer is repetition: a value PaddleOCR read on one line is the
value of the lot's next lines.

So the student's read of such a field is used only for a value PaddleOCR read the same on an
earlier line where the student read it too (a confirmation). A value the student read on a line
where PaddleOCR read another is disputed and never used again: the student misreads something
as it, and the two cannot be told apart. A read PaddleOCR could not parse says nothing either
way. A misread can still pass where it yields another lot's confirmed id (a one-glyph neighbour
of a lot this process has seen, read above the student's pooled threshold); that is the residual
risk, the same kind as a digit read as another digit in a number field.

Pure and in memory: each OCR process keeps its own (a lot costs each process one PaddleOCR
line), the newest `capacity` values per field (`OcrSettings.confirmed_text_values`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class ConfirmedValues:
    """Per text field: values PaddleOCR confirmed (newest `capacity`) and values it disputed."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._confirmed: dict[str, OrderedDict[str, None]] = {}
        self._disputed: dict[str, OrderedDict[str, None]] = {}
        # Engines of one process may read from several threads; each call is short.
        self._lock = threading.Lock()

    def trusts(self, field: str, value: str) -> bool:
        """Whether the student's read `value` of `field` may be used (PaddleOCR confirmed it)."""
        with self._lock:
            confirmed = self._confirmed.get(field)
            if confirmed is None or value not in confirmed:
                return False
            confirmed.move_to_end(value)
            return True

    def record(self, field: str, student_value: str, teacher_value: str | None) -> None:
        """PaddleOCR read `teacher_value` (None: nothing it could parse) on a line the student
        read as `student_value`."""
        if teacher_value is None:
            return
        with self._lock:
            if teacher_value == student_value:
                if not _contains(self._disputed, field, student_value):
                    _remember(self._confirmed, field, student_value, self.capacity)
            else:
                _remember(self._disputed, field, student_value, self.capacity)
                self._confirmed.get(field, OrderedDict()).pop(student_value, None)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Field -> (confirmed, disputed) values remembered now."""
        with self._lock:
            fields = set(self._confirmed) | set(self._disputed)
            return {f: (len(self._confirmed.get(f, ())), len(self._disputed.get(f, ()))) for f in sorted(fields)}


def _contains(table: dict[str, OrderedDict[str, None]], field: str, value: str) -> bool:
    return value in table.get(field, ())


def _remember(table: dict[str, OrderedDict[str, None]], field: str, value: str, capacity: int) -> None:
    values = table.setdefault(field, OrderedDict())
    values[value] = None
    values.move_to_end(value)
    while len(values) > capacity:
        values.popitem(last=False)
