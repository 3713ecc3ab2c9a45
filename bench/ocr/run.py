"""The `oanet bench ocr` run: the engines read the same frames in alternating blocks, then one
table row per engine and their cost ratio (the method: bench/ocr/__init__.py)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from oanet.ocr_settings import OCR_MODES, OcrSettings
from stream.ocr.engine import OcrEngine
from stream.ocr.errors import OcrError
from stream.ocr.reader import FrameResult
from stream.ocr.report import Run, print_engines, progress_bar
from stream.ocr.scoring import fmt_pct
from stream.ocr.student import teacher_settings
from stream.ocr.student_server import StudentServer
from stream.stats import percentile

BLOCK = 10  # frames per engine turn
SERVED = "served"  # the student's network on Triton (--student-server)


def engines_to_compare(profile, settings: OcrSettings, server: StudentServer | None = None) -> dict[str, OcrEngine]:
    """PaddleOCR template mode against the distilled recogniser (with its own fallback) when one
    is set, and the same recogniser served by Triton with `server`; else template against full
    mode."""
    if settings.recognizer is not None:
        engines = {"paddleocr": OcrEngine(profile, teacher_settings(settings), mode="template"),
                   "student": OcrEngine(profile, settings, mode="template")}
        if server is not None:
            engines[SERVED] = OcrEngine(profile, settings, mode="template", student_server=server)
        return engines
    return {mode: OcrEngine(profile, settings, mode=mode) for mode in OCR_MODES}


def alternate(dataset, entries, engines: dict[str, OcrEngine]) -> tuple[dict[str, Run], list[float]]:
    """Every engine reads each block of frames in turn (blocks, not single frames: switching models
    every frame evicts CPU caches and slows both); the recogniser's floor is sampled per block for
    the same reason. Returns each engine's run and the floors."""
    for engine in engines.values():
        engine.warm_up()  # model loading is not timed
    runs = {name: Run(dataset.profile) for name in engines}
    floors: list[float] = []
    first = next(iter(engines.values()))
    with progress_bar(len(entries), "bench ocr") as bar:
        for start in range(0, len(entries), BLOCK):
            block = [(e, dataset.read_bytes(e)) for e in entries[start : start + BLOCK]]
            for name, engine in engines.items():
                for entry, data in block:
                    runs[name].add(_timed_read(engine, entry, data))
            floors.append(first.recognizer_floor_ms(repeats=2))
            bar.update(len(block))
    return runs, floors


def _timed_read(engine: OcrEngine, entry, data: bytes) -> FrameResult:
    started = time.perf_counter()
    try:
        record, error = engine.read(data, entry.id), None
    except OcrError as exc:
        record, error = None, exc
    return FrameResult(entry, record, error, ocr_ms=(time.perf_counter() - started) * 1000)


def _print_row(name: str, run: Run, median_ms: float, per_line_ms: float) -> None:
    groups = [run.score.group(g) for g in ("clean", "nuisance", "smudged")]
    both = run.score.group("clean")
    both.merge(run.score.group("nuisance"))
    print(
        f"{name:<10}"
        + "".join(f"{fmt_pct(t.accuracy):>{w}}" for t, w in zip(groups, (9, 10, 10), strict=True))
        + f"{fmt_pct(both.missing_rate):>10}{fmt_pct(both.wrong / both.total if both.total else None):>9}"
        + f"{median_ms:>10.1f}{percentile(run.ocr_ms, 90, float('nan')):>8.1f}"
        + f"{per_line_ms:>9.2f}"
    )
    if run.unreadable:
        print(f"  {len(run.unreadable)} unreadable frame(s), e.g. {run.unreadable[0][0]}: {run.unreadable[0][1]}")


def run(dataset, entries, settings: OcrSettings, data: Path, server: StudentServer | None = None) -> int:
    fields = len(dataset.profile.fields)
    engines = engines_to_compare(dataset.profile, settings, server)
    runs, floors = alternate(dataset, entries, engines)
    print(f"oanet bench ocr: {len(entries)} frames of {data}, {fields} fields per frame, no cache, "
          f"{' and '.join(engines)} alternating in blocks of {BLOCK} frames")
    print(f"{'engine':<10}{'clean':>9}{'nuisance':>10}{'smudged':>10}{'missing':>10}{'wrong':>9}"
          f"{'ms/frame':>10}{'p90':>8}{'ms/line':>9}")
    medians, per_line = {}, {}
    for name, one in runs.items():
        medians[name] = statistics.median(one.ocr_ms) if one.ocr_ms else float("nan")
        per_line[name] = statistics.median(one.recognition_ms) / fields if one.recognition_ms else float("nan")
        _print_row(name, one, medians[name], per_line[name])
    if "student" in runs:
        print_engines(runs["student"], student=True)
        for name in ("student", SERVED):
            if name not in runs:
                continue
            one = runs[name]
            alone = statistics.median(one.student_ms) / fields if one.student_ms else float("nan")
            where = f"served by Triton at {server.url}" if name == SERVED and server is not None else "in this process"
            print(f"{name} is {per_line['paddleocr'] / per_line[name]:.1f}x cheaper per field line than PaddleOCR "
                  "template mode (OCR stage, fallbacks included; median ms/frame "
                  f"{medians['paddleocr'] / medians[name]:.1f}x); "
                  f"its network {where} {alone:.3f} ms per line (one call per frame)")
    else:
        print(f"template is {medians['full'] / medians['template']:.2f}x faster than full (median ms/frame, "
              "decode included; ms/line: OCR stage alone / fields per frame)")
    print(f"recognizer alone: {statistics.median(floors):.1f} ms per blank 48x320 line (median of "
          f"{len(floors)} samples; the machine's floor while this ran). A field line costs about this "
          "times its width at 48 px high / 320.")
    return 0
