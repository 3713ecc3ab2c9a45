"""`oanet worker`: run one stream worker (a member of the consumer group) until signalled."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from oanet.flags import add_setting_flag, add_settings_flags, settings_from_args


def add_topic_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """--frames-topic / --verdicts-topic / --dead-letter-topic for the topics a command uses."""
    for name in names:
        add_setting_flag(parser, f"--{name.replace('_', '-')}-topic", f"topics.{name}", metavar="TOPIC",
                         help=f"the {name.replace('_', ' ')} topic (default: settings, `oanet config`)")


def register(subparsers: argparse._SubParsersAction) -> None:
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
