"""Every subcommand of the stream package, in one place: topics, worker, ocr (and ocr distill),
replay, verdicts.

Building the parser imports only the standard library, pydantic and oanet's settings (`oanet
--help` stays fast): each handler imports what it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from oanet.contracts import SPLITS
from oanet.flags import add_setting_flag, add_settings_flags, settings_from_args
from oanet.ocr_settings import OCR_MODES
from stream.ocr.budget import DEFAULT_MAX_MINUTES, DEFAULT_RESTARTS, DEFAULT_STEPS, EMA_DECAY, MAX_NUMBER_WRONG_RATE


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    _register_topics(subparsers)
    _register_ocr(subparsers)
    _register_worker(subparsers)
    _register_replay(subparsers)
    _register_verdicts(subparsers)


def add_topic_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """--frames-topic / --verdicts-topic / --dead-letter-topic for the topics a command uses."""
    for name in names:
        add_setting_flag(parser, f"--{name.replace('_', '-')}-topic", f"topics.{name}", metavar="TOPIC",
                         help=f"the {name.replace('_', ' ')} topic (default: settings, `oanet config`)")


def add_ocr_data_flags(
    parser: argparse.ArgumentParser, default_limit: int | None = None, data_required: bool = True
) -> None:
    """The frames an OCR command reads and the engine's settings (`oanet ocr`, `ocr distill`, `bench ocr`)."""
    # `oanet ocr` itself checks --data, so that `oanet ocr distill --data` is not asked for it twice.
    parser.add_argument("--data", type=Path, required=data_required, metavar="DIR",
                        help="dataset folder (profile.yaml, manifest.jsonl)")
    parser.add_argument("--limit", type=int, default=default_limit, metavar="N",
                        help="only the first N frames" + (f" (default {default_limit})" if default_limit else ""))
    parser.add_argument("--split", choices=SPLITS, help="only frames of this split")
    add_setting_flag(parser, "--model-dir", "ocr.model_dir", type=Path, metavar="DIR",
                     help="OCR model folder (default: the set-up one)")
    add_setting_flag(parser, "--batch-frames", "ocr.batch_frames", type=int, metavar="N",
                     help="frames per engine call")
    add_setting_flag(parser, "--threads", "ocr.threads", type=int, metavar="N",
                     help="onnxruntime threads per model (0: all cores)")
    add_setting_flag(parser, "--no-fallback", "ocr.fallback", action="store_const", const=False,
                     help="template mode: do not retry failed fields with detection")


# --------------------------------------------------------------------------- topics


def _register_topics(subparsers: argparse._SubParsersAction) -> None:
    topics = subparsers.add_parser("topics", help="manage the frames, verdicts and dead-letter topics")
    topics_sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = topics_sub.add_parser(
        "create",
        help="create the three topics with the configured partitions and size limits (idempotent)",
    )
    add_settings_flags(create, kafka=True)
    create.set_defaults(func=_topics_create)
    listing = topics_sub.add_parser("list", help="list the broker's topics and their partition counts")
    add_settings_flags(listing, kafka=True)
    listing.set_defaults(func=_topics_list)


def _topics_create(args: argparse.Namespace) -> int:
    from stream.topics import create_topics

    settings = settings_from_args(args)
    for outcome in create_topics(settings.kafka, settings.topics):
        print(outcome)
    return 0


def _topics_list(args: argparse.Namespace) -> int:
    from stream.topics import describe_topics

    settings = settings_from_args(args)
    for name, partitions in sorted(describe_topics(settings.kafka).items()):
        print(f"{name}\t{partitions} partition(s)")
    return 0


# --------------------------------------------------------------------------- worker


def _register_worker(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="consume frames, read their parameters (OCR), verdict them with the model; verdicts and dead letters out",
        description="A consumer-group worker on the frames topic. Per frame: header and size checks, decode, "
        "OCR of the printed parameters, the fused model (Triton, or the exported model in-process with "
        "--inference local), a verdict on the verdicts topic or a dead letter. Offsets are committed only "
        "after the outputs they cover are acknowledged. SIGTERM/SIGINT drain and commit; a second SIGINT "
        "exits at once. Logs are JSON lines on stderr; metrics on http://HOST:PORT/metrics, /live, /ready.",
    )
    add_settings_flags(p, kafka=True, triton=True)
    add_topic_flags(p, "frames", "verdicts", "dead_letter")
    add_setting_flag(p, "--group", "worker.group_id", metavar="G", help="consumer group id (default oanet-worker)")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="line profile YAML the frames follow (default: the one the served version was trained on, "
                   "which the served model publishes); an override for checks")
    add_setting_flag(p, "--inference", "worker.inference", choices=("triton", "local"),
                     help="'triton' (default): the served ensemble; 'local': the exported model in this process")
    add_setting_flag(p, "--repo", "stack.model_repository", type=Path, metavar="DIR",
                     help="the exported model repository of --inference local (default: stack.model_repository)")
    add_setting_flag(p, "--model-version", "worker.model_version", type=int, metavar="V",
                     help="model version of --inference local (default: the latest)")
    add_setting_flag(p, "--ocr-processes", "worker.ocr_processes", type=int, metavar="N",
                     help="OCR processes (default 1; 0 = one thread in the worker process)")
    add_setting_flag(p, "--window", "worker.window", type=int, metavar="N",
                     help="most frames in flight; consumption pauses when full (default 32)")
    add_setting_flag(p, "--metrics-port", "worker.metrics_port", type=int, metavar="PORT",
                     help="port of /metrics, /live and /ready (default 9464; 0 = none)")
    add_setting_flag(p, "--drain-timeout", "worker.drain_timeout_s", type=float, metavar="S",
                     help="on SIGTERM/SIGINT, seconds in-flight frames get before the final commit (default 30)")
    add_setting_flag(p, "--log-format", "worker.log_format", choices=("auto", "json", "text"),
                     help="log lines (default auto: text on a terminal, JSON otherwise)")
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from oanet.profile import load_profile
    from stream.worker import logs
    from stream.worker.backends import inference_factory
    from stream.worker.loop import StreamWorker

    settings = settings_from_args(args)
    logs.configure(settings.worker.log_format, logging.DEBUG if args.verbose else logging.INFO)
    profile = load_profile(args.profile) if args.profile is not None else None
    worker = StreamWorker(settings, inference_factory(settings), profile=profile)
    worker.install_signal_handlers()
    worker.run()
    return 0


# --------------------------------------------------------------------------- ocr, ocr distill


def _register_ocr(subparsers: argparse._SubParsersAction) -> None:
    ocr = subparsers.add_parser(
        "ocr",
        help="read the printed parameters of a dataset's frames and score them against its manifest",
        description="Runs the OCR stage over a dataset folder, writes one JSON line per frame "
        "(--out) and prints per-field exact-match accuracy (clean frames, nuisance frames, "
        "smudged fields), missing rate and latency.",
    )
    add_ocr_data_flags(ocr, data_required=False)
    add_setting_flag(ocr, "--recognizer", "ocr.recognizer", type=Path, metavar="DIR",
                     help="read template lines with this distilled recogniser first (`oanet ocr distill`); "
                     "PaddleOCR reads the lines it is not sure of")
    ocr.add_argument("--mode", choices=OCR_MODES, default=None, help="template (default) or full")
    ocr.add_argument("--out", type=Path, metavar="FILE.jsonl", help="write one JSON record per frame here")
    ocr.add_argument("--no-cache", action="store_true", help="read every frame, neither using nor filling the cache")
    add_setting_flag(ocr, "--cache-dir", "ocr.cache_dir", type=Path, metavar="DIR",
                     help="OCR feature cache folder (default: .cache/ocr-features)")
    ocr.set_defaults(func=_ocr)
    actions = ocr.add_subparsers(dest="ocr_action", metavar="{distill,calibrate}", required=False)

    distill = actions.add_parser(
        "distill",
        help="train this line's own fast recogniser from its frames, with PaddleOCR as the teacher",
        description="Cuts every field line of the frames as template mode does, labels them with the "
        "manifest's values where it has them and otherwise with PaddleOCR's confident, parsed reads "
        "(through the OCR feature cache), trains a small CTC recogniser over the profile's charset "
        "(CPU, torch) with consistency between nuisance-augmented views for a fixed number of steps "
        "(the same frames, --seed and --steps give the same student), keeps the checkpoint with the lowest "
        "fallback on held-out selection frames, calibrates its confidence threshold on other held-out frames "
        "(held out by whole lots, so both see lot ids the student never trained on) "
        "and writes recognizer.onnx + recognizer.json to --out. Training runs on one torch thread unless "
        "--threads N says otherwise. Use it with `oanet ocr --recognizer DIR`, OANET_OCR__RECOGNIZER=DIR, "
        "or export it with the model (`oanet export --recognizer DIR`).",
    )
    add_ocr_data_flags(distill)
    distill.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the recogniser")
    distill.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                         help=f"optimisation steps of --batch lines: the training budget (default {DEFAULT_STEPS}: "
                         "about 5.5 minutes on 2 CPU cores, 6.5 minutes in all for 600 frames)")
    distill.add_argument("--eval-every", type=int, default=0, metavar="K",
                         help="read the held-out selection frames every K steps, print the fallback rate there and "
                         "keep the best checkpoint (default: a tenth of --steps)")
    distill.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES, metavar="M",
                         help=f"safety net: stop training after M minutes whatever --steps (default "
                         f"{DEFAULT_MAX_MINUTES:g}); the student is still written, but the run warns that it is "
                         "under-trained and exits with status 1")
    distill.add_argument("--batch", type=int, default=32, metavar="N", help="lines per training step (default 32)")
    distill.add_argument("--splice", type=int, default=0, metavar="N",
                         help="also train on N copies of each text-field line (lot ids) with its value redrawn from "
                         "other glyphs of its frame (an italic face cut upright), so the student sees letters its "
                         "lots never print (default 0: none; with 2 and --restarts 4, line-a, line-b and italic "
                         "line-c fell back on 1.2%%, 0.5%% and 4.3%% of unseen lots' clean lines: see "
                         "docs/benchmarks.md)")
    distill.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS, metavar="N",
                         help="train N networks on the same frames from different seeds, side by side in their own "
                         "processes, and keep the one the held-out selection frames like best, passing over any whose "
                         "calibration says it did not learn the line (--max-wrong-rate) (default "
                         f"{DEFAULT_RESTARTS}: on 2 cores, about the wall time of one; 1: a single network)")
    distill.add_argument("--ema-decay", type=float, default=EMA_DECAY, metavar="D",
                         help="decay of the weights' moving average (a mean teacher) that guides the consistency "
                         f"term and is the network checked and kept (default {EMA_DECAY}; 0: the raw network)")
    distill.add_argument("--teacher-only", action="store_true",
                         help="ignore the manifest's values: label with PaddleOCR only, as for an unlabelled line")
    add_max_wrong_rate_flag(distill)
    distill.add_argument("--seed", type=int, default=0,
                         help="random seed of the held-out frames, the augmentations and the network (default 0)")
    add_setting_flag(distill, "--cache-dir", "ocr.cache_dir", type=Path, metavar="DIR",
                     help="OCR feature cache folder for the teacher's reads (default: .cache/ocr-features)")
    distill.set_defaults(func=_distill)

    calibrate = actions.add_parser(
        "calibrate",
        help="set a distilled recogniser's confidence thresholds again on its own calibration frames, without training",
        description="Reads the frames a recogniser was distilled on, cuts the same held-out calibration frames "
        "(the same --data, --split, --limit and --teacher-only as `oanet ocr distill`; its seed comes from "
        "recognizer.json), reads them as printed and under nuisances with the saved network, and writes the "
        "thresholds (one per field, the pooled one for the rest) to recognizer.json in --out (default: in place). "
        "For a recogniser distilled before the per-field thresholds; the network is unchanged.",
    )
    add_ocr_data_flags(calibrate)
    add_setting_flag(calibrate, "--recognizer", "ocr.recognizer", type=Path, metavar="DIR",
                     help="the distilled recogniser (`oanet ocr distill --out DIR`)")
    calibrate.add_argument("--out", type=Path, metavar="DIR",
                           help="write the recalibrated recogniser here (default: over --recognizer's recognizer.json)")
    calibrate.add_argument("--teacher-only", action="store_true",
                           help="ignore the manifest's values, as `oanet ocr distill --teacher-only` did")
    add_max_wrong_rate_flag(calibrate)
    add_setting_flag(calibrate, "--cache-dir", "ocr.cache_dir", type=Path, metavar="DIR",
                     help="OCR feature cache folder for the teacher's reads (default: .cache/ocr-features)")
    calibrate.set_defaults(func=_calibrate)


def add_max_wrong_rate_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-wrong-rate", type=float, default=MAX_NUMBER_WRONG_RATE, metavar="R",
                        help="write no recogniser when more than this share of its calibration reads of number "
                        f"fields are wrong yet well formed: a network that did not learn the line (default "
                        f"{MAX_NUMBER_WRONG_RATE}; 1: write it whatever it reads)")


def _ocr(args: argparse.Namespace) -> int:
    from stream.ocr.report import ocr_command

    return ocr_command(args)


def _distill(args: argparse.Namespace) -> int:
    from oanet.allocator import keep_freed_memory
    from stream.ocr.report import distill_command

    keep_freed_memory()  # its restarts' processes do the same (stream.ocr.distill)
    return distill_command(args)


def _calibrate(args: argparse.Namespace) -> int:
    from stream.ocr.report import calibrate_command

    return calibrate_command(args)


# --------------------------------------------------------------------------- replay


def _register_replay(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="play a dataset's frames into the frames topic, like a camera (headers included)",
        description="Produce the image files of a dataset folder to the frames topic with the headers a camera "
        "sends (frame_id, line_id, captured_at, profile), optionally paced and looped.",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder (profile.yaml, manifest.jsonl)")
    p.add_argument("--rate", type=float, default=0.0, metavar="FPS", help="frames per second (default 0 = as fast as possible)")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--loop", action="store_true", help="replay the frames again and again (frame ids get @1, @2, ...)")
    p.add_argument("--split", choices=(*SPLITS, "all"), default="all", help="which frames (default all)")
    p.add_argument("--id-prefix", default="", metavar="TEXT", help="prefix of every frame id (e.g. a run id)")
    p.add_argument("--line-id", metavar="ID", help="line id: key and line_id header (default: the profile name)")
    p.add_argument("--lines", type=int, default=1, metavar="N",
                   help="play the frames as N lines (ids <line-id>-0, -1, ... on different partitions, taking turns), "
                   "so N workers share them (default 1: one line, one partition)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_settings_flags(p, kafka=True)
    add_topic_flags(p, "frames")
    p.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from oanet.dataset import load_dataset
    from stream.errors import StreamError
    from stream.replay import replay, select_entries

    settings = settings_from_args(args)
    dataset = load_dataset(args.data)
    entries = select_entries(dataset, args.split)
    if not entries:
        raise StreamError(f"the {args.split} split of {args.data} has no frames")
    try:
        result = replay(settings, dataset, entries, rate=args.rate, limit=args.limit, loop=args.loop,
                        prefix=args.id_prefix, line_id=args.line_id, lines=args.lines, progress=not args.quiet)
    except KeyboardInterrupt:
        print("replay: interrupted; frames sent so far were flushed")
        return 130
    rate = result.frames / result.seconds if result.seconds > 0 else float("inf")
    print(f"replayed {result.frames} frames ({result.bytes / 1e6:.1f} MB) of {args.data} to {settings.topics.frames} "
          f"in {result.seconds:.1f} s ({rate:.1f} frames/s)")
    return 0


# --------------------------------------------------------------------------- verdicts


def _register_verdicts(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verdicts",
        help="read the verdicts topic: summary, latency, duplicates; with --data, accuracy against the manifest",
        description="Read every verdict (and dead letter) from the beginning of the topics and print a summary; "
        "with --data, score the verdicts against the dataset's labels (accuracy, precision, recall, per defect "
        "kind, missing verdicts, duplicates). --follow keeps reading with a live summary line.",
    )
    p.add_argument("--follow", action="store_true", help="keep reading, one summary line every --every seconds")
    p.add_argument("--data", type=Path, metavar="DIR", help="dataset folder to score against")
    p.add_argument("--split", choices=(*SPLITS, "all"), default="all", help="frames expected (with --data; default all)")
    p.add_argument("--id-prefix", default="", metavar="TEXT", help="frame id prefix given to `oanet replay`")
    p.add_argument("--expect", type=int, metavar="N", help="stop once N frame ids have a verdict or dead letter")
    p.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--every", type=float, default=5.0, metavar="S", help="seconds between live lines (default 5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_settings_flags(p, kafka=True)
    add_topic_flags(p, "verdicts", "dead_letter")
    p.set_defaults(func=_verdicts)


def _verdicts(args: argparse.Namespace) -> int:
    from oanet.dataset import load_dataset
    from stream.replay import select_entries
    from stream.verdicts import collect, live_line, print_report, score, summary

    settings = settings_from_args(args)
    entries = None
    if args.data is not None:
        entries = select_entries(load_dataset(args.data), args.split)
    started = time.monotonic()
    live = (lambda t: print(live_line(t, started), file=sys.stderr, flush=True)) if args.follow else None
    try:
        tally = collect(settings, follow=args.follow, expect=args.expect, timeout_s=args.timeout,
                        on_progress=live, progress_every_s=args.every)
    except KeyboardInterrupt:
        print("verdicts: interrupted", file=sys.stderr)
        return 130
    report: dict[str, Any] = {"summary": summary(tally), "topic": settings.topics.verdicts}
    if entries is not None:
        report["data"] = str(args.data)
        report["score"] = score(tally, entries, args.id_prefix)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
