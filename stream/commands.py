"""Subcommands of the stream package: topics, ocr, worker, replay, verdicts."""

from __future__ import annotations

import argparse

from oanet.commands import add_settings_flags, settings_from_args


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
