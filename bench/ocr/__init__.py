"""`oanet bench ocr`: PaddleOCR's template and full modes, or PaddleOCR against a distilled
recogniser, on the same frames: accuracy per frame group, ms per frame and per field line.

The flags and the handler; the run is in bench/ocr/run.py. The engines alternate in blocks of
frames, so a busy shared CPU slows both alike and their ratio holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from oanet.flags import add_setting_flag
from stream.commands import add_ocr_data_flags


def register(bench: argparse._SubParsersAction) -> None:
    bench_ocr = bench.add_parser(
        "ocr",
        help="template vs full mode on the same frames: accuracy, ms/frame, ms per field line",
    )
    add_ocr_data_flags(bench_ocr, default_limit=100)
    add_setting_flag(bench_ocr, "--recognizer", "ocr.recognizer", type=Path, metavar="DIR",
                     help="compare PaddleOCR template mode with this distilled recogniser (with its fallback) "
                     "instead of template with full mode")
    bench_ocr.add_argument("--student-server", metavar="HOST:PORT",
                           help="with --recognizer: also read with that student's network served by the Triton at "
                           "this gRPC address (oanet_ocr_student of a version exported with it; "
                           "worker.student_inference=triton), a third engine in the same alternation")
    bench_ocr.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from bench.ocr.run import run
    from stream.ocr.report import ocr_settings, select_frames

    settings = ocr_settings(args)
    server = None
    if args.student_server:
        from stream.ocr.errors import StudentError
        from stream.ocr.student import student_digest
        from stream.ocr.student_server import served_student

        if settings.recognizer is None:
            raise StudentError("--student-server needs --recognizer DIR (the student it serves)")
        server = served_student({"url": args.student_server, "ssl": False}, student_digest(settings.recognizer))
    dataset, entries = select_frames(args)
    return run(dataset, entries, settings, args.data, server)
