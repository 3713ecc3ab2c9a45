"""OCR stage settings (`ocr:` section of oanet.settings, env `OANET_OCR__*`).

Lives below `oanet.settings` (which nests it) so that neither the settings nor the OCR stage
import each other in a circle; `stream.ocr.settings` re-exports it for the stage's code.

Model and cache folders default to `.cache/` of the source checkout, where `make setup` puts
the models, so the defaults work from any working directory; override them with
`OANET_OCR__MODEL_DIR` / `OANET_OCR__CACHE_DIR` for an installed package or a shared cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

# oanet/ocr_settings.py -> the checkout root (editable install, as `make setup` does).
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = CHECKOUT_ROOT / ".cache" / "ocr-models"
DEFAULT_CACHE_DIR = CHECKOUT_ROOT / ".cache" / "ocr-features"
DEFAULT_PADDLEX_HOME = CHECKOUT_ROOT / ".cache" / "paddlex"

OcrMode = Literal["template", "full"]
OCR_MODES: tuple[str, ...] = get_args(OcrMode)


class OcrSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # template: recognition only on each field's ROI (fast); full: detection + recognition on
    # the panel ROI, then label matching (layout-free, slower).
    mode: OcrMode = "template"
    model_dir: Path = DEFAULT_MODEL_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    # PaddleX writes its own small state here (PADDLE_PDX_CACHE_HOME); never a download.
    paddlex_home: Path = DEFAULT_PADDLEX_HOME
    # Frames read per engine call by `oanet ocr` and training (their crops are pooled).
    batch_frames: int = Field(1, ge=1, le=64)
    # Most line crops per recognizer call (grouped by aspect ratio first). On CPU one crop per
    # call is fastest: a batch is padded to its widest crop, and the recognizer's cost is
    # linear in width (measured, 2 cores: 8.1 ms/line at 1, 8.8 at 5, 11.1 at 10 per frame).
    # Raise it on a GPU, where batching pays.
    rec_batch: int = Field(1, ge=1, le=256)
    # Template mode: re-read fields without a ROI, or whose template read was garbled, with
    # detection + recognition on the panel. Blank (no ink) fields are not retried.
    fallback: bool = True
    # onnxruntime intra-op threads per model; 0 = onnxruntime's default (all cores).
    threads: int = Field(0, ge=0, le=256)
    # A line recogniser distilled from PaddleOCR for this line (`oanet ocr distill --out DIR`):
    # template mode reads every field line with it first and gives PaddleOCR only the lines it
    # is not sure of. None: PaddleOCR reads every line.
    recognizer: Path | None = None
    # A text field the student's calibration could not trust (a lot id; `student.MIN_TEXT_VALUES`):
    # the student's read of it is used once PaddleOCR read that line's value on an earlier line
    # the student read the same way, in the same process (`stream.ocr.confirm`); the newest this
    # many reads per field are kept. 0: PaddleOCR reads such fields on every line.
    confirmed_text_values: int = Field(256, ge=0, le=65536)
    # Every this many uses of one confirmed read, PaddleOCR reads the line again and a read it
    # contradicts is disputed: two lots the student reads alike cost at most this many lines
    # minus one. 0: never (a mix-up lasts as long as the lot).
    confirmed_text_audit: int = Field(32, ge=0, le=1_000_000)

    @field_validator("confirmed_text_audit")
    @classmethod
    def _audit_leaves_some_use(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 would send every line to PaddleOCR; use 0 for no audit or at least 2")
        return value
