"""The one percentile every report uses (OCR scoring, `oanet verdicts`, the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

_Empty = TypeVar("_Empty", float, None)


def percentile(values: Sequence[float], q: float, empty: _Empty = None) -> float | _Empty:
    """The q-th percentile with linear interpolation between the closest ranks (numpy's default,
    the same as `statistics.quantiles(method="inclusive")`); `empty` when there are no values."""
    return float(np.percentile(values, q)) if len(values) else empty
