"""`oanet stack up|down|status|kcat-proxy` and `oanet demo` (the main job on that stack)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.embedded.demo import DemoOptions  # light: the demo imports its heavy steps inside them
from oanet.flags import add_setting_flag, add_settings_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    _register_demo(subparsers)
    stack = subparsers.add_parser(
        "stack", help="the embedded one-machine stack: Kafka-compatible broker (Tansu) + Triton"
    )
    actions = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start the broker and tritonserver in the background and wait until ready")
    add_setting_flag(up, "--repo", "stack.model_repository", type=Path, metavar="DIR",
                     help="Triton model repository (default: artifacts/model_repository, created empty)")
    up.add_argument("--no-triton", action="store_true", help="start only the broker")
    add_setting_flag(up, "--timeout", "stack.startup_timeout_s", type=float, metavar="SECONDS",
                     help="how long to wait for readiness")
    _add_port_flags(up)
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop the stack's own processes (gracefully, then forcefully)")
    add_settings_flags(down, stack=True)
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="print endpoints and health; exit 1 if not healthy")
    add_settings_flags(status, stack=True)
    status.set_defaults(func=_status)

    proxy = actions.add_parser(
        "kcat-proxy",
        help="let Debian's kcat (librdkafka 2.0.2) produce and consume on the embedded broker, headers included",
        description="Run a small proxy in front of the embedded broker that hides two Tansu 0.6.0 replies "
        "librdkafka 2.0.2 cannot read (see deploy/embedded/kcat_proxy.py); point kcat at it with -b. Runs until "
        "interrupted.",
    )
    proxy.add_argument("--port", type=int, default=0, metavar="PORT", help="port to listen on (default: a free one)")
    add_settings_flags(proxy, kafka=True)
    proxy.set_defaults(func=_kcat_proxy)


def _register_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="the main job on the embedded stack, from nothing (see README)",
        description="Synthetic dataset, a short CPU training, export, the embedded stack (broker + Triton) on free "
        "ports, N stream workers, the held-out frames played like cameras, live progress, then a summary (verdicts, "
        "dead letters, accuracy/recall/precision against the ground truth, frames/s, latency) and everything it "
        "started stopped, also on Ctrl-C or an error. Each run starts from nothing in a temporary folder.",
    )
    demo.add_argument("--data", type=Path, metavar="DIR", help="use this dataset folder instead of a synthetic one")
    demo.add_argument("--run", type=Path, metavar="RUN", help="use this training run instead of training")
    demo.add_argument("--repo", type=Path, metavar="REPO",
                      help="serve this model repository (its latest version) instead of training and exporting")
    demo.add_argument("--recognizer", type=Path, metavar="DIR",
                      help="export this OCR student (an `oanet ocr distill` folder) with the model, so the workers "
                      "read the printed parameters with it (`make demo` passes the one it distils once)")
    demo.add_argument("--frames", type=int, default=DemoOptions.frames, metavar="N",
                      help=f"frames of the synthetic dataset (default {DemoOptions.frames})")
    demo.add_argument("--workers", type=int, default=2, metavar="N", help="stream worker processes (default 2)")
    demo.add_argument("--ocr-processes", type=int, default=1, metavar="N", help="OCR processes per worker (default 1)")
    demo.add_argument("--lines", type=int, default=0, metavar="N",
                      help="play the frames as N lines (default: one per partition of the frames topic)")
    demo.add_argument("--replay", type=int, metavar="N", help="frames to play (default: the test split once)")
    demo.add_argument("--rate", type=float, default=0.0, metavar="FPS", help="replay rate (default 0: at once)")
    demo.add_argument("--work-dir", type=Path, metavar="DIR",
                      help="keep the dataset, run, repository and logs here (default: a temporary folder, removed)")
    demo.add_argument("--external", action="store_true",
                      help="use the broker and Triton of the settings (OANET_KAFKA__BOOTSTRAP_SERVERS, "
                      "OANET_TRITON__URL, or the flags below) instead of the embedded stack; topics of this run are "
                      "created there and deleted at the end; without --repo the workers read the dataset's profile")
    add_settings_flags(demo, kafka=True, triton=True)
    demo.add_argument("--timeout", type=float, default=600.0, metavar="S",
                      help="longest wait for every verdict (default 600)")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from deploy.embedded.demo import run_demo

    options = DemoOptions(work_dir=args.work_dir, data=args.data, run=args.run, repo=args.repo,
                          recognizer=args.recognizer, frames=args.frames, workers=args.workers,
                          ocr_processes=args.ocr_processes, lines=args.lines, replay=args.replay, rate=args.rate,
                          external=args.external, timeout_s=args.timeout)
    return run_demo(settings_from_args(args), options)


def _add_port_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, stack=True)
    for flag, key in (("--broker-port", "broker_port"), ("--http-port", "triton_http_port"),
                      ("--grpc-port", "triton_grpc_port"), ("--metrics-port", "triton_metrics_port")):
        add_setting_flag(parser, flag, f"stack.{key}", type=int, metavar="PORT")


def _stack(args: argparse.Namespace):
    from deploy.embedded.stack import EmbeddedStack

    return EmbeddedStack(settings_from_args(args).stack)


def _print_notices(stack) -> None:
    for notice in stack.notices:
        print(f"note: {notice}")


def _print_status(statuses) -> bool:
    healthy = True
    for s in statuses:
        state = "healthy" if s.healthy else ("unhealthy" if s.running else "stopped")
        pid = f"pid {s.pid}" if s.pid else "-"
        endpoints = " ".join(f"{k}={v}" for k, v in s.endpoints.items())
        print(f"{s.name:<7} {state:<9} {pid:<11} {endpoints}")
        print(f"        {s.detail}")
        healthy = healthy and s.healthy
    return healthy


def _up(args: argparse.Namespace) -> int:
    from deploy.embedded.stack import StackAlreadyRunning

    from oanet.flags import setting_flag_value

    stack = _stack(args)
    # A repository named on the command line must exist (a typo would serve nothing);
    # only the default one is created empty.
    explicit_repo = setting_flag_value(args, "stack.model_repository")
    try:
        statuses = stack.up(explicit_repo, with_triton=not args.no_triton)
    except StackAlreadyRunning as exc:
        _print_notices(stack)
        print(str(exc))
        return 0
    _print_notices(stack)
    _print_status([s for s in statuses if s.running])
    print(f"state: {stack.state_dir}  (stop with `oanet stack down`)")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    done = stack.down()
    _print_notices(stack)
    print("\n".join(done) if done else "the embedded stack is not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    statuses = stack.status()
    _print_notices(stack)
    return 0 if _print_status(statuses) else 1


def _kcat_proxy(args: argparse.Namespace) -> int:
    import threading

    from deploy.embedded.errors import StackError
    from deploy.embedded.kcat_proxy import KcatProxy
    from stream.kafka_clients import any_reachable

    servers = settings_from_args(args).kafka.client_kwargs()["bootstrap_servers"]
    if len(servers) != 1 or not any_reachable(servers):
        raise StackError(f"the kcat proxy needs one reachable broker, got {','.join(servers)} (is the stack up?)")
    host, _, port = servers[0].rpartition(":")
    try:
        proxy = KcatProxy(host, int(port), port=args.port)
    except OSError as exc:
        raise StackError(f"cannot listen on port {args.port}: {exc.strerror or exc}") from None
    print(f"kcat proxy on {proxy.address} -> broker {servers[0]}; e.g. kcat -b {proxy.address} -L "
          "(Ctrl-C stops it)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()
    return 0
