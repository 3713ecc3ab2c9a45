"""The stream worker: frames topic -> decode -> OCR -> model -> verdicts topic / dead letters.

Pure core (no I/O, unit-tested): `imageinfo` (PNG/JPEG header checks), `frames` (admission:
headers, policy, limits -> `Frame`), `messages` (`Verdict`, `DeadLetter`), `checkpoint`
(committable offsets). Seam: `inference` (the `Inference` protocol, `ModelInfo`,
`TritonUnavailable`, `InferenceRejected`), `local_model` (the exported model in-process).
Shell: `ocr_stage` (process pool), `loop` (`StreamWorker`), `metrics`, `logs`, `cli`.
"""
