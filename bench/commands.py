"""Every `oanet bench` subcommand is registered here, one line per benchmark module.

A benchmark module exposes `register(bench)` (the `oanet bench` subparsers) and keeps its top
light: `oanet --help` imports it, so heavy imports go inside the handler. The product packages'
`commands.py` register everything else; nothing in them knows the benchmarks.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = (
    "bench.ocr",  # oanet bench ocr: OCR modes or the distilled recogniser on the same frames
    "bench.e2e",  # oanet bench e2e: the stream worker's stages alone and end to end
    "bench.triton",  # oanet bench triton: the served ensemble per concurrency, batching on/off
    "bench.chaos",  # oanet bench chaos: delivery while workers are killed and Triton restarts
)


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    for name in BENCHMARKS:
        importlib.import_module(name).register(bench)
