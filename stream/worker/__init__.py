"""The stream worker: frames topic -> decode -> OCR -> model -> verdicts topic / dead letters.

Pure core (no I/O, unit-tested): `imageinfo` (PNG/JPEG header checks), `frames` (admission:
headers, policy, limits -> `Frame`), `messages` (`Verdict`, `DeadLetter`), `checkpoint`
(committable offsets). Seam: `inference` (the `Inference` protocol that `TritonClient` and
`local_model` (the exported model in-process) implement), `repository` (the served version's
line profile from its export manifest).
Shell: `ocr_stage` (process pool), `loop` (`StreamWorker`), `metrics`, `logs`, `cli`.
"""
