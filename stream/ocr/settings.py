"""The OCR stage's view of its settings: the model (defined in `oanet.ocr_settings`, below
`oanet.settings`) and the effective `ocr` section.
"""

from __future__ import annotations

from oanet.ocr_settings import (
    CHECKOUT_ROOT,
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL_DIR,
    DEFAULT_PADDLEX_HOME,
    OcrMode,
    OcrSettings,
)
from oanet.settings import load_settings

__all__ = [
    "CHECKOUT_ROOT",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_PADDLEX_HOME",
    "OcrMode",
    "OcrSettings",
    "current_ocr_settings",
]


def current_ocr_settings() -> OcrSettings:
    """The `ocr` section of the effective settings (env, .env)."""
    return load_settings().ocr
