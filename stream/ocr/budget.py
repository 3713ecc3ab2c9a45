"""`oanet ocr distill`'s default training budget, apart so the command line reads it without
loading OpenCV or torch (stream/ocr/distill.py uses it).

The budget is a number of optimisation steps, not a time: the same frames, seed and steps give
the same student whatever the machine's load. Measured on the project's 2-core box
(docs/benchmarks.md, "A step budget"): 3,000 steps of 32 lines took 319-329 s with one torch
thread while other jobs ran (load 3-6), and 600 frames 6.5 minutes in all (labels, steps,
checks, calibration, export), inside the 15 minutes of issue 13. More steps did not lower the
fallback (5,000: 12 min 52 s, kept step 1,000).
"""

from typing import Final

DEFAULT_STEPS: Final = 3000
# Networks trained side by side from different seeds, each on its own process and torch thread,
# the best on the held-out selection frames kept: two fill the 2-core box in the wall time of
# one. On line-a the seed alone moved the unseen lots' clean fallback from 3.3% to 18.6%.
DEFAULT_RESTARTS: Final = 2
# The safety net of the training loop: it stops there whatever the steps, and says so loudly.
DEFAULT_MAX_MINUTES: Final = 20.0
# Decay of the weights' moving average that guides the consistency term and is the network kept:
# about the last 200 steps, a tenth of the cosine's span at the default budget.
EMA_DECAY: Final = 0.995
# A student whose well-formed reads of number fields are wrong on more than this share of its
# calibration views is not written at all (`stream.ocr.calibration.unreliable`). Thresholds bound
# the wrong reads the calibration lines show; a network that drops minus signs and digits all over
# has more of them than a few hundred lines can show, at any confidence: one read an unseen
# frame's "O2 := 243 ppm" as 43 at 0.9999, bold digits touching, so the ink check could not count
# them (docs/benchmarks.md, "ocr19"). Measured on 18 students of line-a, line-b and line-c: the 9
# that learnt their line 0.08-0.31%, the 9 that did not 1.97-8.7%. Number fields only: their
# glyphs are printed on every lot, where a text field's wrong reads are mostly letters of lots the
# student never saw (only PaddleOCR-confirmed values of those are used: `student.MIN_TEXT_VALUES`).
MAX_NUMBER_WRONG_RATE: Final = 0.01
