"""`oanet ocr` and `oanet bench ocr` (being written)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    return None
