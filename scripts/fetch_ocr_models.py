"""Obtain the PP-OCRv4 mobile ONNX models offline, from a package-registry wheel.

The weights ship inside `rapidocr-onnxruntime` (PyPI). We download that wheel without
installing it (it would drag in a third OpenCV) and unpack only the two model files into one
folder per model, in the layout PaddleX expects. Idempotent: a complete folder is left alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "rapidocr-onnxruntime==1.4.4"
MODELS = {
    "PP-OCRv4_mobile_det": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    "PP-OCRv4_mobile_rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
}


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check",
           "-d", str(dest), WHEEL]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("rapidocr_onnxruntime-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [line for line in result.stderr.splitlines() if "is ignored" not in line]
        raise SystemExit(f"fetch_ocr_models: cannot download {WHEEL}: {' '.join(lines[-3:])}")
    return wheels[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for one sub-folder per model")
    args = parser.parse_args()
    marker = args.out / ".complete"
    if marker.exists():
        return 0
    print(f"setup: fetching PP-OCRv4 mobile models from the {WHEEL} wheel into {args.out}")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for model_name, member in MODELS.items():
                target = args.out / model_name
                target.mkdir(parents=True, exist_ok=True)
                (target / "inference.onnx").write_bytes(archive.read(member))
    from stream.ocr_models import write_model_configs

    write_model_configs(args.out)
    marker.touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
