"""Subcommands of the stream package: topics, ocr, worker, replay, verdicts."""

from __future__ import annotations

import argparse

from oanet.flags import add_settings_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
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

    from stream import replay, verdicts
    from stream.ocr import cli as ocr_cli
    from stream.worker import cli as worker_cli

    ocr_cli.register(subparsers, bench)
    worker_cli.register(subparsers)
    replay.register(subparsers)
    verdicts.register(subparsers)
    _register_bench_e2e(bench)
    from bench import chaos as bench_chaos

    bench_chaos.register(bench)


def _register_bench_e2e(bench: argparse._SubParsersAction) -> None:
    from pathlib import Path

    p = bench.add_parser(
        "e2e",
        help="the stream worker's stages alone and end to end (frames/s, ratio), latency, memory over a run",
        description="On the embedded stack (free ports) serving REPO, with DATA's frames: each stage's throughput "
        "alone (consume, decode, OCR pool, Triton inference via the client, produce), then one `oanet worker` with a "
        "standing backlog for --duration seconds (frames/s, ratio to the slowest stage, RSS of the worker and its OCR "
        "processes every second), then produce-to-verdict latency of one frame alone and at half the end-to-end rate. "
        "Prints the figures and the targets (ratio >= 0.8, p99 <= 3x, memory flat +-5%).",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder of the model's line")
    p.add_argument("--repo", type=Path, required=True, metavar="REPO", help="model repository (`oanet export`)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S", help="measuring time of each stage (default 10)")
    p.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help="end-to-end measuring time with a standing backlog; memory is sampled over it (default 60; "
                   "the issue's memory target is for 600)")
    p.add_argument("--warmup", type=float, default=20.0, metavar="S", help="end-to-end warm-up (default 20)")
    p.add_argument("--ocr-processes", type=int, default=2, metavar="N", help="the worker's OCR processes (default 2)")
    p.add_argument("--window", type=int, default=32, metavar="N", help="the worker's in-flight window (default 32)")
    p.add_argument("--alone", type=int, default=20, metavar="N", help="frames sent one at a time (default 20)")
    p.add_argument("--paced", type=float, default=30.0, metavar="S",
                   help="seconds of frames paced at half the end-to-end rate (default 30)")
    p.add_argument("--samples", type=Path, metavar="FILE.csv", help="write the memory samples (seconds, RSS, backlog)")
    p.set_defaults(func=_bench_e2e)


def _bench_e2e(args: argparse.Namespace) -> int:
    import sys

    from stream.bench import BenchOptions, run

    options = BenchOptions(data=args.data, repo=args.repo, seconds=args.seconds, duration_s=args.duration,
                           warmup_s=args.warmup, ocr_processes=args.ocr_processes, window=args.window,
                           alone=args.alone, paced_s=args.paced, samples=args.samples)
    for line in run(options, progress=lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True)):
        print(line, flush=True)
    return 0


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
