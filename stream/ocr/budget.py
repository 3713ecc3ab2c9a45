"""`oanet ocr distill`'s default training budget, apart so the command line reads it without
loading OpenCV or torch (stream/ocr/distill.py uses it).

The budget is a number of optimisation steps, not a time: the same frames, seed and steps give
the same student whatever the machine's load. Measured on the project's 2-core box
(docs/benchmarks.md, "A step budget"): about 6 steps a second with one torch thread while
another job holds the other core, so 600 frames take about 11 minutes in all (labels, steps,
checks, calibration, export), inside the 15 minutes of issue 13.
"""

from typing import Final

DEFAULT_STEPS: Final = 3000
# The safety net of the training loop: it stops there whatever the steps, and says so loudly.
DEFAULT_MAX_MINUTES: Final = 20.0
