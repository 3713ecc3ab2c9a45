"""OCR stage: PaddleOCR reads the printed parameter panel into a ParameterRecord."""
