"""`oanet bench chaos`: delivery under faults, measured.

On the embedded stack (free ports, a state folder of its own) serving a poisoned copy of REPO
(its image encoder raises on a flat grey object: bench/chaos_frames.py), a camera sends
`--frames` frames of DATA's line at `--rate`, one in 20 a bad one of 16 kinds and one poison
frame, while `--workers` `oanet worker` processes consume them; `--kills` of them are SIGKILLed
along the way (the second in the middle of a rebalance) and replaced, and Triton is restarted
once (bench/chaos_driver.py). Then the audit (bench/chaos_audit.py) prints its figures: frames
lost, premature commits, duplicates against their bound, frames that ended otherwise than
designed, produce-to-output ages against the frame deadline.

Without --data/--repo, bench/chaos_model.py builds (once, under .cache/) a tiny model of a small
line cut from the built-in one and frames of that line.

Exit status: 0 when every check holds, 1 when any fails (a lost frame above all), 2 for bad
options. docs/benchmarks.md records runs; docs/operations.md says how to run it.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from oanet.errors import OanetError

DEFAULTS = {"frames": 2000, "rate": 8.0, "workers": 2, "kills": 4, "window": 16, "commit_interval": 1.0,
            "deadline": 300.0, "ocr_processes": 1}


class ChaosBenchError(OanetError):
    exit_code = 2


class ChaosRunError(OanetError):
    """The run could not be carried out (a worker died on its own, Triton did not stop...): no figures."""

    exit_code = 1


def register(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "chaos",
        help="delivery under faults: workers SIGKILLed, Triton restarted, bad and poison frames; exit 1 on a lost frame",
        description="On the embedded stack serving a poisoned copy of REPO, a camera sends FRAMES frames of DATA's line "
        "(5% bad ones of 16 kinds, one poison frame the served model raises on) while workers are SIGKILLed (one during a "
        "rebalance) and Triton is restarted once. Prints: frames lost, commits that passed a frame without output, "
        "duplicates against window + commit interval x rate per disruption, frames that ended otherwise than designed, "
        "produce-to-output ages against the frame deadline. Exit 0 when all hold, 1 otherwise.",
    )
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="dataset folder of the model's line (default: with no --repo either, small synthetic frames of "
                   "the built-in line and a tiny model trained on them, built once into .cache/bench-chaos/)")
    p.add_argument("--repo", type=Path, metavar="REPO",
                   help="model repository (`oanet export`, unsigned, default --cnn-backend); a poisoned copy is served "
                   "(default: see --data)")
    p.add_argument("--frames", type=int, default=DEFAULTS["frames"], metavar="N",
                   help=f"frames the camera sends (default {DEFAULTS['frames']})")
    p.add_argument("--rate", type=float, default=DEFAULTS["rate"], metavar="FPS",
                   help=f"frames per second the camera sends; keep it under what the workers sustain, or frames age "
                   f"past the deadline (default {DEFAULTS['rate']:g})")
    p.add_argument("--workers", type=int, default=DEFAULTS["workers"], metavar="N",
                   help=f"workers alive at any time (default {DEFAULTS['workers']})")
    p.add_argument("--kills", type=int, default=DEFAULTS["kills"], metavar="K",
                   help=f"SIGKILLs spread over the run, the second during a rebalance (default {DEFAULTS['kills']})")
    p.add_argument("--window", type=int, default=DEFAULTS["window"], metavar="N",
                   help=f"worker.window (default {DEFAULTS['window']})")
    p.add_argument("--commit-interval", type=float, default=DEFAULTS["commit_interval"], metavar="S",
                   help=f"worker.commit_interval_s (default {DEFAULTS['commit_interval']:g})")
    p.add_argument("--deadline", type=float, default=DEFAULTS["deadline"], metavar="S",
                   help=f"worker.frame_deadline_s, and the largest produce-to-output age allowed (default "
                   f"{DEFAULTS['deadline']:g})")
    p.add_argument("--ocr-processes", type=int, default=DEFAULTS["ocr_processes"], metavar="N",
                   help=f"OCR processes per worker (default {DEFAULTS['ocr_processes']})")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    from bench.chaos_driver import Plan

    plan = Plan(frames=args.frames, rate=args.rate, kills=args.kills, workers=args.workers)
    problems = plan.problems() + [m for ok, m in (
        (args.window >= 1, "--window must be at least 1"), (args.commit_interval > 0, "--commit-interval must be positive"),
        (args.deadline > 0, "--deadline must be positive"), (args.ocr_processes >= 1, "--ocr-processes must be at least 1"),
        ((args.data is None) == (args.repo is None), "give --data and --repo together, or neither"),
        (args.data is None or args.data.is_dir(), f"--data {args.data} is not a folder"),
        (args.repo is None or args.repo.is_dir(), f"--repo {args.repo} is not a folder")) if not ok]
    if problems:
        raise ChaosBenchError("; ".join(problems))
    if args.data is None:
        from bench.chaos_model import default_model

        args.data, args.repo = default_model(progress)
    lines, passed = run(args.data, args.repo, plan, window=args.window, commit_interval_s=args.commit_interval,
                        deadline_s=args.deadline, ocr_processes=args.ocr_processes,
                        progress=progress)
    for line in lines:
        print(line, flush=True)
    return 0 if passed else 1


def progress(line: str) -> None:
    print(f"[chaos] {line}", file=sys.stderr, flush=True)


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{platform.machine()} {platform.system()}, {cores} CPU cores; load average {load}"


def run(data: Path, repo: Path, plan, *, window: int, commit_interval_s: float, deadline_s: float, ocr_processes: int,
        progress: Callable[[str], None]) -> tuple[list[str], bool]:
    """The run and its report lines; True when every check held."""
    from bench.chaos_audit import audit
    from bench.chaos_driver import ChaosRun, chaos_settings, kinds_for
    from bench.chaos_frames import bad_kinds, poison_kind, poison_repository
    from deploy.embedded.stack import EmbeddedStack, free_port_settings
    from oanet.dataset import load_dataset
    from oanet.settings import load_settings
    from stream.topics import create_topics
    from stream.worker.errors import WorkerError
    from stream.worker.processes import WorkerProcess
    from stream.worker.repository import read_exported

    logging.getLogger("kafka").setLevel(logging.ERROR)  # a killed worker's connections: expected noise
    try:
        exported = read_exported(repo)
    except WorkerError as exc:
        raise ChaosBenchError(str(exc)) from None
    dataset = load_dataset(data)
    if dataset.profile.name != exported.profile.name:
        raise ChaosBenchError(f"{data} is of line {dataset.profile.name!r}, the model of {exported.profile.name!r}")
    started_on = machine()
    progress(f"machine: {started_on}")
    with tempfile.TemporaryDirectory(prefix="oanet-bench-chaos-") as tmp:
        try:
            poisoned = poison_repository(repo, Path(tmp) / "repo")
        except ValueError as exc:
            raise ChaosBenchError(str(exc)) from None
        stack = EmbeddedStack(free_port_settings(Path(tmp) / "stack", poisoned, startup_timeout_s=300))
        progress("starting the embedded stack (broker, Triton serving the poisoned copy)")
        stack.up()
        try:
            run_id = uuid.uuid4().hex[:6]
            base = load_settings(stack=stack.settings.model_dump())
            settings = chaos_settings(base.model_copy(update={"topics": base.topics.model_copy(update={
                "frames": f"chaos.{run_id}.frames", "verdicts": f"chaos.{run_id}.verdicts",
                "dead_letter": f"chaos.{run_id}.dlq"})}), window=window, commit_interval_s=commit_interval_s,
                deadline_s=deadline_s, ocr_processes=ocr_processes)
            settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"metrics_port": 0})})
            create_topics(settings.kafka, settings.topics)
            group = f"chaos-{run_id}"
            logs = Path(tmp) / "logs"
            count = iter(range(10_000))
            good = [dataset.read_bytes(e) for e in dataset.entries[:50]]
            key = b"line"
            chaos = ChaosRun(
                settings, stack, group, plan,
                lambda: WorkerProcess(settings, logs / f"worker-{next(count)}.log", extra=["--group", group]),
                kinds_for(good), bad_kinds(dataset.profile, good[0], key, settings.topics.max_message_bytes),
                poison_kind(dataset.profile, good[0], key), progress)
            try:
                result = chaos.run()
            except (RuntimeError, TimeoutError) as exc:
                raise ChaosRunError(f"the chaos run stopped: {exc}") from None
        finally:
            stack.down()
    report = audit(result.produced, result.outputs, result.commits, window=window,
                   commit_interval_s=commit_interval_s, disruptions=result.disruptions, deadline_s=deadline_s,
                   final_commits=result.final_commits)
    failures = report.failures()
    if not result.kill_in_rebalance:
        failures.append("no kill landed during a rebalance")
    failures += result.worker_errors
    return [f"machine: {started_on} (start); load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} (end)",
            *summary(report, result, plan, window, commit_interval_s),
            *(f"FAILED: {line}" for line in failures),
            "chaos: PASSED" if not failures else f"chaos: FAILED ({len(failures)} check(s))"], not failures


def summary(report, result, plan, window: int, commit_interval_s: float) -> list[str]:
    """The figures of an audited run, one per line."""
    from bench.chaos_audit import percentile

    bad = {k: n for k, n in report.kinds.items() if k not in ("good", "poison")}
    rate = report.rate
    ages = [a / 1000 for a in report.ages_ms]
    return [
        f"run: {plan.frames} frames at {plan.rate:g}/s, {plan.workers} workers, window {window}, commit interval "
        f"{commit_interval_s:g} s; {result.seconds:.0f} s from the first frame sent to the last worker stopped; "
        f"{rate:.1f} frames/s output (first frame sent to last frame's first output)",
        f"faults: {result.kills} SIGKILLs (during a rebalance: {'yes' if result.kill_in_rebalance else 'no'}), "
        f"Triton restarted once ({result.triton_down_s:.1f} s without it), "
        f"{sum(bad.values())} bad frames of {len(bad)} kinds, {report.kinds.get('poison', 0)} poison frame(s)",
        f"lost: {len(report.lost)} of {report.produced} produced (every offset has a verdict or a dead letter: "
        f"{'yes' if not report.lost else 'no'})",
        f"commits: {len(result.commits)} samples of the group's offsets, {len(report.premature)} past a frame "
        f"without output; final {report.final_commits} of ends {report.end_offsets}",
        f"duplicates: {report.duplicates} extra output(s), bound {report.duplicate_bound:.0f} = {result.disruptions} "
        f"disruptions x (window {window} + {commit_interval_s:g} s x {rate:.1f}/s); {len(report.differing)} differing",
        f"outcomes: {', '.join(f'{k} {n}' for k, n in sorted(report.outcomes.items()))}; "
        f"{len(report.unexpected)} otherwise than designed",
        f"age produce-to-first-output: p50 {percentile(ages, 50):.1f} s, p99 {percentile(ages, 99):.1f} s, "
        f"max {max(ages, default=0):.1f} s; deadline {report.deadline_s:g} s, {report.late} later; in-flight "
        f"(consumed to verdict) max {max(report.in_flight_ms, default=0) / 1000:.1f} s",
    ]
