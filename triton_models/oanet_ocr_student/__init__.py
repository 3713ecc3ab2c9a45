"""Triton model `oanet_ocr_student`: the line's OCR student (ONNX), served by the ONNX Runtime
backend (NGC container) or by the Python-backend runner `model.py` in this folder."""
