"""What `oanet ocr` and `oanet ocr distill` do and print (their flags: stream/commands.py); `oanet bench
ocr` (bench/ocr.py) shares the run and the tables."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from oanet.flags import settings_from_args
from oanet.errors import OanetError

FALLBACK_TARGET = 0.02  # issue 13: share of clean lines the student leaves to PaddleOCR


def distill_command(args: argparse.Namespace) -> int:
    from stream.ocr.distill import DistillConfig, TrainProgress, distill

    settings = ocr_settings(args)
    config = DistillConfig(steps=args.steps, eval_every=args.eval_every, max_minutes=args.max_minutes,
                           batch=args.batch, seed=args.seed, threads=settings.threads or 1,
                           splice_copies=args.splice, restarts=args.restarts,
                           ema_decay=args.ema_decay, max_wrong_rate=args.max_wrong_rate)
    if config.problems():
        raise OanetError("; ".join(config.problems()))
    dataset, entries = select_frames(args)
    started = time.perf_counter()
    # Teacher reads (frames the manifest does not fully label), then crops, then steps.
    bars = {"teacher": progress_bar(None, "teacher reads"), "crops": progress_bar(len(entries), "line crops"),
            "steps": progress_bar(config.steps, "training")}
    bars["steps"].unit = "step"

    def on_step(p: TrainProgress) -> None:
        bars["steps"].update(p.step - bars["steps"].n)
        bars["steps"].set_postfix(epoch=p.epoch + 1, loss=f"{p.loss:.3f}", refresh=False)
        if p.checkpoint is not None and p.best is not None:
            # A line per check, on a terminal or in a log: how far, how well, which one is kept.
            c, best = p.checkpoint, p.best
            bars["steps"].write(
                f"step {p.step}/{p.steps} ({p.elapsed_s:.0f} s): loss {p.loss:.3f}; held-out fallback "
                f"{100 * c.printed:.1f}% as printed, {100 * c.nuisance:.1f}% with nuisances (threshold "
                f"{c.threshold:.3f} above {c.wrong} wrong reads; {c.malformed} malformed, "
                f"{c.ink_refused_wrong} wrong refused by the ink check); "
                f"best so far: step {best.step} ({100 * best.printed:.1f}%)", file=sys.stderr)

    try:
        report = distill(dataset, entries, args.out, settings, config, use_manifest=not args.teacher_only,
                         on_frame=lambda phase: bars[phase].update(1), on_step=on_step)
    finally:
        for bar in bars.values():
            bar.close()
    wall = time.perf_counter() - started
    training = report.training
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    print(f"oanet ocr distill: {report.frames} frames of {args.data} ({report.teacher_frames} read by PaddleOCR), "
          f"{report.lines} field lines "
          f"({report.labelled['manifest']} labelled by the manifest, {report.labelled['teacher']} by PaddleOCR, "
          f"{report.unlabelled} unlabelled; {report.spliced} spliced text-field lines added to training) "
          f"in {wall:.0f} s ({seconds})")
    kept = (f"kept step {training.best.step} (held-out selection fallback {100 * training.best.printed:.1f}% "
            f"as printed, {100 * training.best.nuisance:.1f}% with nuisances)" if training.best
            else "kept the last step (no selection frames)")
    print(f"trained {training.steps} of {training.steps_planned} steps ({training.epochs} epoch(s)); {kept}")
    if len(report.restarts) > 1:
        print(f"restarts: kept seed {training.seed} of " + ", ".join(
            f"seed {r.seed} ({100 * r.best.printed:.1f}% at step {r.best.step})" if r.best else f"seed {r.seed} (none)"
            for r in report.restarts) + " (held-out selection fallback as printed)")
    for seed, why in report.vetoed:
        print(f"restart seed {seed} passed over: {why}")
    _print_calibration(report.threshold, report.calibration, report.out)
    if training.capped:
        warning = (f"WARNING: the --max-minutes {config.max_minutes:g} cap stopped training after {training.steps} of "
                   f"{training.steps_planned} steps: this student is under-trained and not the one --steps "
                   f"{training.steps_planned} makes elsewhere (the machine was too slow or too busy). Run again on a "
                   "quieter machine, or with a higher --max-minutes.")
        print(warning)
        print(warning, file=sys.stderr)
        return 1
    return 0


def _print_calibration(threshold: float, calibration: dict[str, Any], out) -> None:
    """The thresholds `distill` or `calibrate` set, and what they leave to PaddleOCR."""
    from stream.ocr.student import MIN_TEXT_VALUES, NEVER

    by_field = calibration.get("thresholds_by_field") or {}
    own = ", ".join(f"{name} {value:.3f}" for name, value in by_field.items() if value < NEVER)
    floor = calibration.get("substitution_floor")
    floors = calibration.get("substitution_floor_by_field") or {}
    if floors and own:
        least = min(floors.values())
        raised = ", ".join(f"{name} {value:.3f}" for name, value in floors.items() if value > least)
        floor_note = (f"; no field below {least:.4f} (the substitutions its characters allow"
                      + (f"; higher for {raised}" if raised else "") + ")")
    elif floor is not None and own:
        floor_note = f"; no field below {floor:.4f} (every field's substitutions)"
    else:
        floor_note = ""
    print(f"confidence threshold {threshold:.4f} pooled" + floor_note + (f"; by field: {own}" if own else ""))
    few = {name: n for name, n in (calibration.get("text_values") or {}).items() if n < MIN_TEXT_VALUES}
    if few:
        print(", ".join(f"{name} (its calibration lines print {n} distinct values)" for name, n in few.items())
              + ": the student's reads are used once PaddleOCR read the line's value on an earlier line "
              + "read the same way "
              + f"(a text field's reads are used on the threshold from {MIN_TEXT_VALUES} distinct values on)")
    if calibration.get("number_views"):
        print(f"number fields: {calibration['number_wrong']} of {calibration['number_views']} calibration reads wrong "
              f"yet well formed ({100 * calibration['number_wrong'] / calibration['number_views']:.2f}%)")
    refused = calibration.get("ink_refused") or {}
    if refused:
        print(f"ink check (reads that leave a glyph out): refused {refused['wrong']} wrong and "
              f"{refused['right']} right reads of the calibration lines")
    for kind in ("as printed", "nuisance"):
        c = calibration.get(kind) or {}
        if c.get("reads"):
            print(f"calibration lines {kind}: {c['reads']} reads, {c['accepted']} accepted, "
                  f"{c['accepted_wrong']} of them wrong, fallback to PaddleOCR {100 * c['fallback_rate']:.1f}%"
                  + (f" (every {', '.join(few)} line counted as PaddleOCR's)" if few else ""))
    print(f"recogniser: {out} (use --recognizer {out}, OANET_OCR__RECOGNIZER={out}, "
          f"or `oanet export --recognizer {out}`)")


def calibrate_command(args: argparse.Namespace) -> int:
    from stream.ocr.calibration import wrong_rate_problem
    from stream.ocr.distill import recalibrate

    settings = ocr_settings(args)
    if settings.recognizer is None:
        raise OanetError("--recognizer DIR is required (the distilled student to calibrate again)")
    if (problem := wrong_rate_problem(args.max_wrong_rate)) is not None:
        raise OanetError(problem)
    dataset, entries = select_frames(args)
    out = args.out or settings.recognizer
    with progress_bar(len(entries), "line crops") as bar:
        report = recalibrate(dataset, entries, settings.recognizer, out, settings,
                             use_manifest=not args.teacher_only,
                             on_frame=lambda phase: bar.update(1) if phase == "crops" else None,
                             max_wrong_rate=args.max_wrong_rate)
    print(f"oanet ocr calibrate: {report.frames} frames of {args.data}, {report.calibration.get('lines', 0)} "
          f"calibration lines, {report.seconds:.0f} s")
    _print_calibration(report.threshold, report.calibration, report.out)
    return 0


def ocr_settings(args: argparse.Namespace):
    return settings_from_args(args).ocr


def select_frames(args: argparse.Namespace):
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


def progress_bar(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=False, disable=None)


class Run:
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


def read_all(dataset, entries, settings, mode: str, use_cache: bool, out=None, desc: str = "ocr") -> Run:
    from stream.ocr.reader import iter_records

    run = Run(dataset.profile)
    with progress_bar(len(entries), desc) as bar:
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
        "params": {name: None for name in profile.field_names},
        "missing": profile.field_names,
        "error": {"code": getattr(result.error, "code", "ocr_error"), "message": str(result.error)},
    }


def ocr_command(args: argparse.Namespace) -> int:
    if args.data is None:
        raise OanetError("--data DIR is required (the dataset folder to read)")
    settings = ocr_settings(args)
    mode = args.mode or settings.mode
    dataset, entries = select_frames(args)
    out = None
    if args.out:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            out = args.out.open("w", encoding="utf-8")
        except OSError as exc:
            raise OanetError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    started = time.perf_counter()
    try:
        run = read_all(dataset, entries, settings, mode, use_cache=not args.no_cache, out=out)
    finally:
        if out:
            out.close()
    wall = time.perf_counter() - started
    print(f"oanet ocr: {len(entries)} frames of {args.data} in {mode} mode, {wall:.1f} s; "
          f"{run.cached} from cache, {len(run.unreadable)} unreadable")
    for frame_id, message in run.unreadable[:5]:
        print(f"  unreadable {frame_id}: {message}")
    _print_fields(run)
    print_engines(run, student=settings.recognizer is not None and mode == "template")
    _print_targets(run)
    _print_latency(run, len(dataset.profile.fields))
    if args.out:
        print(f"records: {args.out}")
    return 0


def _print_fields(run: Run) -> None:
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


def print_engines(run: Run, student: bool) -> None:
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
        by_field = sorted(score.fallback_by_field("clean").items(), key=lambda item: -item[1])
        if by_field and by_field[0][1] > 0:
            print("  by field, clean: " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in by_field[:5]
                                                      if share > 0))


def _print_targets(run: Run) -> None:
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


def _print_latency(run: Run, fields_per_frame: int) -> None:
    from stream.stats import percentile

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
