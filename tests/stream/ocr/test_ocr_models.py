"""Model folders for PaddleX: inference.yml written from the ONNX files, clear error when absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stream.ocr.errors import OcrModelError
from stream.ocr.settings import DEFAULT_MODEL_DIR, OcrSettings
from stream.ocr_models import CONFIG_FILE, DET_MODEL, MODEL_FILE, REC_MODEL, model_dirs, write_model_configs


def test_configs_name_the_models_and_carry_the_character_list(tmp_path: Path) -> None:
    source = model_dirs(OcrSettings().model_dir)  # set up by `make setup`
    for name in (DET_MODEL, REC_MODEL):
        (tmp_path / name).mkdir()
        shutil.copy(source[name] / MODEL_FILE, tmp_path / name / MODEL_FILE)
    write_model_configs(tmp_path)
    det = yaml.safe_load((tmp_path / DET_MODEL / CONFIG_FILE).read_text(encoding="utf-8"))
    rec = yaml.safe_load((tmp_path / REC_MODEL / CONFIG_FILE).read_text(encoding="utf-8"))
    assert det["Global"]["model_name"] == DET_MODEL and det["PostProcess"]["name"] == "DBPostProcess"
    assert rec["Global"]["model_name"] == REC_MODEL and rec["PostProcess"]["name"] == "CTCLabelDecode"
    characters = rec["PostProcess"]["character_dict"]
    assert len(characters) == 6623 and "一" in characters and "0" in characters
    assert model_dirs(tmp_path)[REC_MODEL] == tmp_path / REC_MODEL


def test_missing_models_name_the_setup_step(tmp_path: Path) -> None:
    with pytest.raises(OcrModelError, match="make setup"):
        model_dirs(tmp_path)
    with pytest.raises(OcrModelError, match="make setup"):
        write_model_configs(tmp_path)


def test_default_model_dir_is_the_checkout_cache() -> None:
    assert DEFAULT_MODEL_DIR.parts[-2:] == (".cache", "ocr-models")
    assert OcrSettings(model_dir="/elsewhere").model_dir == Path("/elsewhere")
