"""`oanet stack up|down|status`."""

from __future__ import annotations

import argparse
from pathlib import Path

from oanet.flags import add_setting_flag, add_settings_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
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
