"""`oanet ocr` (read a dataset's printed parameters and score them) and `oanet bench ocr`."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from oanet.flags import add_setting_flag, settings_from_args
from oanet.errors import OanetError

MODES = ("template", "full")
FALLBACK_TARGET = 0.02  # issue 13: share of clean lines the student leaves to PaddleOCR
_BENCH_BLOCK = 10  # frames per mode turn in `bench ocr`


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    ocr = subparsers.add_parser(
        "ocr",
        help="read the printed parameters of a dataset's frames and score them against its manifest",
        description="Runs the OCR stage over a dataset folder, writes one JSON line per frame "
        "(--out) and prints per-field exact-match accuracy (clean frames, nuisance frames, "
        "smudged fields), missing rate and latency.",
    )
    _common_flags(ocr, data_required=False)
    add_setting_flag(ocr, "--recognizer", "ocr.recognizer", type=Path, metavar="DIR",
                     help="read template lines with this distilled recogniser first (`oanet ocr distill`); "
                     "PaddleOCR reads the lines it is not sure of")
    ocr.add_argument("--mode", choices=MODES, default=None, help="template (default) or full")
    ocr.add_argument("--out", type=Path, metavar="FILE.jsonl", help="write one JSON record per frame here")
    ocr.add_argument("--no-cache", action="store_true", help="read every frame, neither using nor filling the cache")
    add_setting_flag(ocr, "--cache-dir", "ocr.cache_dir", type=Path, metavar="DIR",
                     help="OCR feature cache folder (default: .cache/ocr-features)")
    ocr.set_defaults(func=_ocr)
    actions = ocr.add_subparsers(dest="ocr_action", metavar="{distill}", required=False)
    _register_distill(actions)

    bench_ocr = bench.add_parser(
        "ocr",
        help="template vs full mode on the same frames: accuracy, ms/frame, ms per field line",
    )
    _common_flags(bench_ocr, default_limit=100)
    add_setting_flag(bench_ocr, "--recognizer", "ocr.recognizer", type=Path, metavar="DIR",
                     help="compare PaddleOCR template mode with this distilled recogniser (with its fallback) "
                     "instead of template with full mode")
    bench_ocr.set_defaults(func=_bench)


def _register_distill(actions: argparse._SubParsersAction) -> None:
    distill = actions.add_parser(
        "distill",
        help="train this line's own fast recogniser from its frames, with PaddleOCR as the teacher",
        description="Cuts every field line of the frames as template mode does, labels them with the "
        "manifest's values where it has them and otherwise with PaddleOCR's confident, parsed reads "
        "(through the OCR feature cache), trains a small CTC recogniser over the profile's charset "
        "(CPU, torch) with consistency between nuisance-augmented views, calibrates its confidence "
        "threshold on held-out frames and writes recognizer.onnx + recognizer.json to --out. "
        "Use it with `oanet ocr --recognizer DIR` or OANET_OCR__RECOGNIZER=DIR.",
    )
    _common_flags(distill)
    distill.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the recogniser")
    distill.add_argument("--minutes", type=float, default=8.0, metavar="M",
                         help="training time budget in minutes (default 8; labelling and export come on top)")
    distill.add_argument("--epochs", type=int, default=30, metavar="N", help="at most this many epochs (default 30)")
    distill.add_argument("--batch", type=int, default=64, metavar="N",
                         help="lines per training step (default 64; smaller makes more steps of a short budget)")
    distill.add_argument("--teacher-only", action="store_true",
                         help="ignore the manifest's values: label with PaddleOCR only, as for an unlabelled line")
    distill.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_setting_flag(distill, "--cache-dir", "ocr.cache_dir", type=Path, metavar="DIR",
                     help="OCR feature cache folder for the teacher's reads (default: .cache/ocr-features)")
    distill.set_defaults(func=_distill)


def _distill(args: argparse.Namespace) -> int:
    from stream.ocr.distill import DistillConfig, distill

    if args.minutes <= 0 or args.epochs < 1 or args.batch < 2:
        raise OanetError("--minutes must be positive, --epochs at least 1 and --batch at least 2")
    settings = _settings(args)
    dataset, entries = _entries(args)
    config = DistillConfig(minutes=args.minutes, max_epochs=args.epochs, batch=args.batch, seed=args.seed,
                           threads=settings.threads)
    started = time.perf_counter()
    # Teacher reads (frames the manifest does not fully label), then crops, then steps.
    bars = {"teacher": _progress(None, "teacher reads"), "crops": _progress(len(entries), "line crops"),
            "steps": _progress(None, "training")}
    bars["steps"].unit = "step"

    def on_step(epoch: int, step: int, loss: float) -> None:
        bars["steps"].update(1)
        bars["steps"].set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", refresh=False)

    try:
        report = distill(dataset, entries, args.out, settings, config, use_manifest=not args.teacher_only,
                         on_frame=lambda phase: bars[phase].update(1), on_step=on_step)
    finally:
        for bar in bars.values():
            bar.close()
    wall = time.perf_counter() - started
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    print(f"oanet ocr distill: {report.frames} frames of {args.data} ({report.teacher_frames} read by PaddleOCR), "
          f"{report.lines} field lines "
          f"({report.labelled['manifest']} labelled by the manifest, {report.labelled['teacher']} by PaddleOCR, "
          f"{report.unlabelled} unlabelled) in {wall:.0f} s ({seconds})")
    print(f"trained {report.epochs} epoch(s), {report.steps} steps; confidence threshold {report.threshold:.4f}")
    for kind in ("as printed", "nuisance"):
        c = report.calibration.get(kind) or {}
        if c.get("reads"):
            print(f"held-out lines {kind}: {c['reads']} reads, {c['accepted']} accepted, "
                  f"{c['accepted_wrong']} of them wrong, fallback to PaddleOCR {100 * c['fallback_rate']:.1f}%")
    print(f"recogniser: {report.out} (use --recognizer {report.out} or OANET_OCR__RECOGNIZER={report.out})")
    return 0


def _common_flags(
    parser: argparse.ArgumentParser, default_limit: int | None = None, data_required: bool = True
) -> None:
    # `oanet ocr` itself checks --data, so that `oanet ocr distill --data` is not asked for it twice.
    parser.add_argument("--data", type=Path, required=data_required, metavar="DIR",
                        help="dataset folder (profile.yaml, manifest.jsonl)")
    parser.add_argument("--limit", type=int, default=default_limit, metavar="N",
                        help="only the first N frames" + (f" (default {default_limit})" if default_limit else ""))
    parser.add_argument("--split", choices=("train", "val", "test"), help="only frames of this split")
    add_setting_flag(parser, "--model-dir", "ocr.model_dir", type=Path, metavar="DIR",
                     help="OCR model folder (default: the set-up one)")
    add_setting_flag(parser, "--batch-frames", "ocr.batch_frames", type=int, metavar="N",
                     help="frames per engine call")
    add_setting_flag(parser, "--threads", "ocr.threads", type=int, metavar="N",
                     help="onnxruntime threads per model (0: all cores)")
    add_setting_flag(parser, "--no-fallback", "ocr.fallback", action="store_const", const=False,
                     help="template mode: do not retry failed fields with detection")


def _settings(args: argparse.Namespace):
    return settings_from_args(args).ocr


def _entries(args: argparse.Namespace):
    from oanet.dataset import load_dataset

    if args.limit is not None and args.limit < 1:
        raise OanetError("--limit must be at least 1")
    dataset = load_dataset(args.data)
    entries = dataset.split(args.split) if args.split else list(dataset.entries)
    if args.limit is not None:
        entries = entries[: args.limit]
    if not entries:
        raise OanetError(f"no frames to read in {args.data}" + (f" (split {args.split})" if args.split else ""))
    return dataset, entries


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False, disable=None)


class _Run:
    """Everything one pass over the frames produced: score, latencies, counts."""

    def __init__(self, profile) -> None:
        from stream.ocr.scoring import Score

        self.score = Score(profile)
        self.ocr_ms: list[float] = []  # per frame: decode + OCR stage
        self.recognition_ms: list[float] = []  # per frame: the OCR stage without decoding
        self.student_ms: list[float] = []  # per frame: the student's network call alone
        self.cached = 0
        self.unreadable: list[tuple[str, str]] = []

    def add(self, result) -> None:
        entry = result.entry
        if result.record is None:
            self.unreadable.append((entry.id, str(result.error)))
            return
        if result.cached:
            self.cached += 1
        elif result.ocr_ms is not None:
            self.ocr_ms.append(result.ocr_ms)
            self.recognition_ms.append(result.record.timings_ms.get("ocr", result.ocr_ms))
            if "student" in result.record.timings_ms:
                self.student_ms.append(result.record.timings_ms["student"])
        self.score.add(result.record, entry.params, bool(entry.nuisance_kinds), entry.smudged_fields)


def _run(dataset, entries, settings, mode: str, use_cache: bool, out=None, desc: str = "ocr") -> _Run:
    from stream.ocr.reader import iter_records

    run = _Run(dataset.profile)
    with _progress(len(entries), desc) as bar:
        for result in iter_records(dataset, entries, settings, mode, use_cache=use_cache):
            run.add(result)
            if out is not None:
                out.write(json.dumps(_line(result, dataset.profile), separators=(",", ":")) + "\n")
            bar.update(1)
    return run


def _line(result, profile) -> dict[str, Any]:
    if result.record is not None:
        line = result.record.to_json()
        line["id"] = result.entry.id
        line["cached"] = result.cached
        return line
    return {
        "id": result.entry.id,
        "params": {name: None for name in profile.feature_names},
        "missing": profile.feature_names,
        "error": {"code": getattr(result.error, "code", "ocr_error"), "message": str(result.error)},
    }


def _ocr(args: argparse.Namespace) -> int:
    if args.data is None:
        raise OanetError("--data DIR is required (the dataset folder to read)")
    settings = _settings(args)
    mode = args.mode or settings.mode
    dataset, entries = _entries(args)
    out = None
    if args.out:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            out = args.out.open("w", encoding="utf-8")
        except OSError as exc:
            raise OanetError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    started = time.perf_counter()
    try:
        run = _run(dataset, entries, settings, mode, use_cache=not args.no_cache, out=out)
    finally:
        if out:
            out.close()
    wall = time.perf_counter() - started
    print(f"oanet ocr: {len(entries)} frames of {args.data} in {mode} mode, {wall:.1f} s; "
          f"{run.cached} from cache, {len(run.unreadable)} unreadable")
    for frame_id, message in run.unreadable[:5]:
        print(f"  unreadable {frame_id}: {message}")
    _print_fields(run)
    _print_engines(run, student=settings.recognizer is not None and mode == "template")
    _print_targets(run)
    _print_latency(run, len(dataset.profile.fields))
    if args.out:
        print(f"records: {args.out}")
    return 0


def _print_fields(run: _Run) -> None:
    from stream.ocr.scoring import fmt_pct

    score = run.score
    print(f"{'field':<14}{'clean':>9}{'nuisance':>10}{'smudged':>10}{'missing':>10}{'wrong':>9}")
    for spec in score.profile.fields:
        name = spec.name
        if name in score.unscored_missing and not score.field_total(name).total:
            flags = score.unscored_missing[name]
            print(f"{name:<14}{'(no ground truth)':>29}{fmt_pct(sum(flags) / len(flags)):>10}{'':>9}")
            continue
        cells = [score.tallies.get((g, name)) for g in ("clean", "nuisance", "smudged")]
        scored = score.field_total(name, ("clean", "nuisance"))
        print(
            f"{name:<14}"
            + "".join(f"{fmt_pct(c.accuracy if c else None):>{w}}" for c, w in zip(cells, (9, 10, 10), strict=True))
            + f"{fmt_pct(scored.missing_rate):>10}{fmt_pct(scored.wrong / scored.total if scored.total else None):>9}"
        )
    groups = [score.group(g) for g in ("clean", "nuisance", "smudged")]
    both = score.group("clean")
    both.merge(score.group("nuisance"))
    print(
        f"{'all fields':<14}"
        + "".join(f"{fmt_pct(t.accuracy):>{w}}" for t, w in zip(groups, (9, 10, 10), strict=True))
        + f"{fmt_pct(both.missing_rate):>10}{fmt_pct(both.wrong / both.total if both.total else None):>9}"
    )
    print(f"{'(field reads)':<14}" + "".join(f"{t.total:>{w}}" for t, w in zip(groups, (9, 10, 10), strict=True))
          + f"   frames: {score.frames['clean']} clean, {score.frames['nuisance']} with nuisance")
    for frame_id, name, truth, raw in score.examples[:5]:
        print(f"  wrong value: frame {frame_id} {name}: printed {truth!r}, read {raw!r}")


def _print_engines(run: _Run, student: bool) -> None:
    """Accuracy by the engine that read each field (clean and nuisance frames, smudged excluded)."""
    from stream.ocr.scoring import fmt_pct

    score = run.score
    engines = sorted({e for _, e in score.by_engine}, key=lambda e: (e == "", e))
    total = sum(score.engine_total(e).total for e in engines)
    if not total:
        return
    print(f"{'read by':<14}{'fields':>9}{'share':>10}{'exact':>10}{'missing':>10}{'wrong':>9}")
    for engine in engines:
        tally = score.engine_total(engine)
        print(f"{engine or '(blank slot)':<14}{tally.total:>9}{fmt_pct(tally.total / total):>10}"
              f"{fmt_pct(tally.accuracy):>10}{fmt_pct(tally.missing_rate):>10}"
              f"{fmt_pct(tally.wrong / tally.total if tally.total else None):>9}")
    if student:
        print("fallback to PaddleOCR (lines with ink): " + ", ".join(
            f"{g} {fmt_pct(score.fallback_rate(g)).strip()}" for g in ("clean", "nuisance")
        ) + f" (target <= {100 * FALLBACK_TARGET:.0f}% on clean)")


def _print_targets(run: _Run) -> None:
    from stream.ocr.scoring import TARGETS

    parts = []
    for group, target in TARGETS.items():
        accuracy = run.score.group(group).accuracy
        if accuracy is None:
            continue
        verdict = "ok" if accuracy >= target else "BELOW TARGET"
        parts.append(f"{group} {100 * accuracy:.2f}% (target >= {100 * target:.1f}%: {verdict})")
    if parts:
        print("exact match: " + "; ".join(parts))


def _print_latency(run: _Run, fields_per_frame: int) -> None:
    from stream.ocr.scoring import percentile

    if not run.ocr_ms:
        print("latency: every frame came from the cache (use --no-cache to time the OCR stage)")
        return
    median = statistics.median(run.ocr_ms)
    recognition = statistics.median(run.recognition_ms)
    print(
        f"latency per frame (decode + OCR, {len(run.ocr_ms)} frames read): median {median:.1f} ms, "
        f"p90 {percentile(run.ocr_ms, 90):.1f} ms; OCR alone {recognition:.1f} ms = "
        f"{recognition / fields_per_frame:.1f} ms per field line"
    )


def _bench(args: argparse.Namespace) -> int:
    from stream.ocr.engine import OcrEngine
    from stream.ocr.errors import OcrError
    from stream.ocr.reader import FrameResult
    from stream.ocr.scoring import fmt_pct, percentile
    from stream.ocr.student import teacher_settings

    dataset, entries = _entries(args)
    settings = _settings(args)
    fields = len(dataset.profile.fields)
    if settings.recognizer is not None:
        # Teacher and student on the same frames; the student's own fallback included.
        engines = {"paddleocr": OcrEngine(dataset.profile, teacher_settings(settings), mode="template"),
                   "student": OcrEngine(dataset.profile, settings, mode="template")}
    else:
        engines = {mode: OcrEngine(dataset.profile, settings, mode=mode) for mode in MODES}
    for engine in engines.values():
        engine.warm_up()  # model loading is not timed
    runs = {name: _Run(dataset.profile) for name in engines}
    floors: list[float] = []
    template = next(iter(engines.values()))
    # Engines alternate in blocks of frames, so a busy shared CPU slows both alike and the ratio
    # holds (blocks, not single frames: switching models every frame evicts CPU caches and
    # slows both); the recognizer's own floor is sampled per block for the same reason.
    with _progress(len(entries), "bench ocr") as bar:
        for start in range(0, len(entries), _BENCH_BLOCK):
            block = [(e, dataset.read_bytes(e)) for e in entries[start : start + _BENCH_BLOCK]]
            for name, engine in engines.items():
                for entry, data in block:
                    started = time.perf_counter()
                    try:
                        record, error = engine.read(data, entry.id), None
                    except OcrError as exc:
                        record, error = None, exc
                    elapsed = (time.perf_counter() - started) * 1000
                    runs[name].add(FrameResult(entry, record, error, ocr_ms=elapsed))
            floors.append(template.recognizer_floor_ms(repeats=2))
            bar.update(len(block))
    print(f"oanet bench ocr: {len(entries)} frames of {args.data}, {fields} fields per frame, no cache, "
          f"{' and '.join(engines)} alternating in blocks of {_BENCH_BLOCK} frames")
    print(f"{'engine':<10}{'clean':>9}{'nuisance':>10}{'smudged':>10}{'missing':>10}{'wrong':>9}"
          f"{'ms/frame':>10}{'p90':>8}{'ms/line':>9}")
    medians, per_line = {}, {}
    for name, run in runs.items():
        groups = [run.score.group(g) for g in ("clean", "nuisance", "smudged")]
        both = run.score.group("clean")
        both.merge(run.score.group("nuisance"))
        medians[name] = statistics.median(run.ocr_ms) if run.ocr_ms else float("nan")
        per_line[name] = statistics.median(run.recognition_ms) / fields if run.recognition_ms else float("nan")
        print(
            f"{name:<10}"
            + "".join(f"{fmt_pct(t.accuracy):>{w}}" for t, w in zip(groups, (9, 10, 10), strict=True))
            + f"{fmt_pct(both.missing_rate):>10}{fmt_pct(both.wrong / both.total if both.total else None):>9}"
            + f"{medians[name]:>10.1f}{percentile(run.ocr_ms, 90) or float('nan'):>8.1f}"
            + f"{per_line[name]:>9.2f}"
        )
        if run.unreadable:
            print(f"  {len(run.unreadable)} unreadable frame(s), e.g. {run.unreadable[0][0]}: {run.unreadable[0][1]}")
    if "student" in runs:
        student = runs["student"]
        _print_engines(student, student=True)
        alone = statistics.median(student.student_ms) / fields if student.student_ms else float("nan")
        print(f"student is {per_line['paddleocr'] / per_line['student']:.1f}x cheaper per field line than PaddleOCR "
              "template mode (OCR stage, fallbacks included; median ms/frame "
              f"{medians['paddleocr'] / medians['student']:.1f}x); "
              f"its network alone {alone:.3f} ms per line (one call per frame)")
    else:
        print(f"template is {medians['full'] / medians['template']:.2f}x faster than full (median ms/frame, "
              "decode included; ms/line: OCR stage alone / fields per frame)")
    print(f"recognizer alone: {statistics.median(floors):.1f} ms per blank 48x320 line (median of "
          f"{len(floors)} samples; the machine's floor while this ran). A field line costs about this "
          "times its width at 48 px high / 320.")
    return 0
