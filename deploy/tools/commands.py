"""Operations subcommands: `oanet dlq replay` (dead letters back to the frames topic) and
`oanet monitoring prometheusrule` (the PrometheusRule generated from alerts.yaml)."""

from __future__ import annotations

import argparse
import sys

from oanet.flags import add_settings_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    dlq = subparsers.add_parser("dlq", help="dead-letter topic tools: replay chosen dead letters")
    dlq_actions = dlq.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    replay = dlq_actions.add_parser(
        "replay",
        help="copy dead letters of the given codes back to the frames topic, for frames whose cause has been fixed",
        description="Reads the whole dead-letter topic from the beginning up to its current end (no consumer "
        "group: nothing is committed, and running it twice copies twice), keeps the records whose oanet.error.code "
        "header is one of --code, and produces each with its original key, value and headers, minus the oanet.* "
        "headers the worker added. docs/operations.md says which codes are worth replaying.",
    )
    replay.add_argument("--code", action="append", required=True, help="error code to replay (repeatable)")
    replay.add_argument("--dry-run", action="store_true", help="count only, copy nothing")
    add_settings_flags(replay, kafka=True)
    replay.set_defaults(func=_dlq_replay)

    monitoring = subparsers.add_parser("monitoring", help="monitoring files generated from their one source")
    monitoring_actions = monitoring.add_subparsers(dest="monitoring_action", metavar="ACTION", required=True)
    rule = monitoring_actions.add_parser(
        "prometheusrule",
        help="write deploy/monitoring/prometheusrule.yaml from deploy/monitoring/alerts.yaml",
        description="The alert rules have one source, alerts.yaml (Prometheus rule-file format, which compose's "
        "Prometheus loads as is). Clusters that run the Prometheus Operator need the same groups wrapped in a "
        "PrometheusRule object; kustomize cannot wrap a file into an object's spec, so this writes it (in this "
        "checkout), and a test fails when the two differ.",
    )
    rule.add_argument("--check", action="store_true", help="exit 1 when the generated file is out of date")
    rule.set_defaults(func=_prometheusrule)


def _dlq_replay(args: argparse.Namespace) -> int:
    from deploy.tools.dlq_replay import replay

    settings = settings_from_args(args)
    counts = replay(settings, set(args.code), dry_run=args.dry_run)
    copied = counts.pop("copied", 0)
    seen = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
    verb = "would copy" if args.dry_run else "copied"
    print(f"{settings.topics.dead_letter}: {seen}; {verb} {copied} to {settings.topics.frames}")
    return 0


def _prometheusrule(args: argparse.Namespace) -> int:
    from deploy.tools.prometheusrule import TARGET, render

    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date: run oanet monitoring prometheusrule", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0
