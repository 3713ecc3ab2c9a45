"""`oanet demo`: the main job on the embedded stack, from nothing.

1. a synthetic dataset of the built-in line (`oanet synth`), or `--data`;
2. a short CPU training (`oanet train` with the flags in DEMO_TRAIN_ARGS), or `--run`;
3. the export into a model repository (`oanet export`, with the OCR student `--recognizer` when
   given: `make demo` distils one once and passes it), or `--repo`;
4. the embedded stack (Tansu broker + tritonserver serving that repository) on free ports, with
   a state folder of its own, so a stack the user runs is never touched;
5. the topics, and `--workers` `oanet worker` processes in one consumer group;
6. the held-out (test split) frames played like cameras of several lines (`oanet replay
   --lines`), a live progress line while the verdicts come in;
7. a summary: frames, verdicts, dead letters, accuracy/recall/precision against the dataset's
   ground truth, frames/s, latency p50/p99; then the workers and the stack are stopped.

Every run starts from nothing in a fresh temporary folder, removed at the end (`--work-dir DIR`
keeps what it made; `--data/--run/--repo` reuse earlier results). Whatever happens (an error,
Ctrl-C, SIGTERM), what the demo started is stopped before it exits. `--external` runs the
workers against the broker and Triton named by the settings instead of the embedded stack.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oanet.errors import OanetError
from oanet.settings import Settings

# The short CPU training of the demo: the manifest's printed values as parameter features
# (the stream reads them with OCR; training on OCR reads would first spend minutes reading the
# training frames), 10 CNN epochs and a smaller LightGBM bag and fusion stage than the defaults.
# 1,000 frames, not 400: on 275 training frames the from-scratch CNN did not learn the visible
# defects (test object AUROC 0.65 after 8 epochs, 0.72 after 30); on about 700 it does.
# Measured on the 2-core machine: see docs/benchmarks.md ("The demo's accuracy"). Its CNN peaks at
# epoch 3 of 10 on the demo's frames; 4 epochs without a better one end it (the kept weights are
# the same), about 40 s of the 4 minutes.
DEMO_TRAIN_ARGS = ("--features", "truth", "--epochs", "10", "--cnn-patience", "4", "--tree-rounds", "50",
                   "--fusion-epochs", "10", "--mask-copies", "1")
DEMO_SEED = 3
PROGRESS_EVERY_S = 3.0


class DemoError(OanetError):
    """A step of the demo failed (the message names the step and why)."""


@dataclass(frozen=True)
class DemoOptions:
    work_dir: Path | None = None  # None: a temporary folder, removed at the end
    data: Path | None = None  # an existing dataset folder instead of a synthetic one
    run: Path | None = None  # an existing training run instead of training
    repo: Path | None = None  # an existing model repository instead of exporting
    recognizer: Path | None = None  # an `oanet ocr distill` folder exported with the model
    frames: int = 1000  # frames of the synthetic dataset
    workers: int = 2
    ocr_processes: int = 1  # per worker
    lines: int = 0  # line ids the frames are played as (0: one per partition)
    replay: int | None = None  # frames to play (default: the test split once; more loops it)
    rate: float = 0.0  # frames/s of the replay (0: as fast as the broker takes them)
    external: bool = False  # broker and Triton from the settings instead of the embedded stack
    timeout_s: float = 600.0  # longest wait for all verdicts

    def problems(self) -> list[str]:
        from stream.ocr.student import STUDENT_META_FILE

        checks = [
            (self.frames >= 20, f"--frames must be at least 20 (a model needs train, val and test frames), got {self.frames}"),
            (self.workers >= 1, f"--workers must be at least 1, got {self.workers}"),
            (self.ocr_processes >= 1, f"--ocr-processes must be at least 1, got {self.ocr_processes}"),
            (self.lines >= 0, f"--lines must be >= 0, got {self.lines}"),
            (self.replay is None or self.replay >= 1, f"--replay must be at least 1, got {self.replay}"),
            (self.rate >= 0, f"--rate must be >= 0, got {self.rate}"),
            (not (self.run and self.repo), "give --run or --repo, not both (--repo is what --run exports to)"),
            (not (self.recognizer and (self.repo or self.external)),
             "--recognizer is exported with the model: it cannot be added to --repo or --external"),
            (self.recognizer is None or (self.recognizer / STUDENT_META_FILE).is_file(),
             f"--recognizer {self.recognizer} is not an `oanet ocr distill` folder (no {STUDENT_META_FILE})"),
        ]
        return [message for ok, message in checks if not ok]


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _say(message: str) -> None:
    print(f"    {message}", flush=True)


def _oanet(*argv: str) -> None:
    """Run an `oanet` subcommand in this process; its errors propagate as they are."""
    from oanet.cli import build_parser

    args = build_parser().parse_args(list(argv))
    code = int(args.func(args) or 0)
    if code:
        raise DemoError(f"`oanet {' '.join(argv)}` exited with code {code}")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: clean up, then exit."""


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Terminated()


@contextmanager
def _timed(steps: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        steps[name] = time.monotonic() - started


def run_demo(settings: Settings, options: DemoOptions | None = None) -> int:
    options = options or DemoOptions()
    problems = options.problems()
    if problems:
        raise DemoError("; ".join(problems))
    started = time.monotonic()
    steps: dict[str, float] = {}
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with ExitStack() as cleanup:  # unwinds: workers stopped, stack down, temporary folder removed
            try:
                work = _work_dir(options, cleanup)
                report = _main_job(settings, options, work, cleanup, steps)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
                _step("stopping what the demo started")
    except KeyboardInterrupt:
        print("oanet demo: interrupted; what it started is stopped", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _print_summary(report, steps, time.monotonic() - started)
    return 0


def _work_dir(options: DemoOptions, cleanup: ExitStack) -> Path:
    if options.work_dir is None:
        work = Path(tempfile.mkdtemp(prefix="oanet-demo-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        return work
    work = options.work_dir.absolute()
    made = [name for name in ("data", "run", "repo", "stack") if (work / name).exists()]
    if made:
        raise DemoError(f"{work} already holds {', '.join(made)} of an earlier demo: reuse them with "
                        f"--data {work / 'data'} --repo {work / 'repo'}, or choose another --work-dir")
    work.mkdir(parents=True, exist_ok=True)
    return work


def _main_job(settings: Settings, options: DemoOptions, work: Path, cleanup: ExitStack,
              steps: dict[str, float]) -> dict[str, Any]:
    from oanet.dataset import load_dataset
    from oanet.profile import DEFAULT_PROFILE_PATH
    from training.export import export_run

    _say(f"working folder: {work}" + ("" if options.work_dir else " (temporary, removed at the end)"))
    data = options.data
    if data is None:
        data = work / "data"
        _step(f"dataset: {options.frames} synthetic frames of the built-in line ({DEFAULT_PROFILE_PATH.name}) "
              f"-> {data}")
        with _timed(steps, "dataset"):
            _oanet("synth", "--out", str(data), "--n", str(options.frames), "--seed", str(DEMO_SEED))
    dataset = load_dataset(data)
    held_out = dataset.split("test")
    if not held_out:
        raise DemoError(f"{data} has no test frames to play (see the `split` key of its manifest)")

    repo = options.repo
    if repo is None and not options.external:
        run = options.run
        if run is None:
            run = work / "run"
            _step(f"training on CPU: oanet train {' '.join(DEMO_TRAIN_ARGS)} -> {run}")
            with _timed(steps, "training"):
                _oanet("train", "--data", str(data), "--out", str(run), *DEMO_TRAIN_ARGS)
        repo = work / "repo"
        _step(f"export -> {repo}" + (f" (with the OCR student {options.recognizer})" if options.recognizer else ""))
        with _timed(steps, "export"):
            version, _ = export_run(Path(run), repo, recognizer=options.recognizer)
        _say(f"version {version} of oanet_image_encoder, oanet_fusion and the oanet ensemble")

    with _timed(steps, "stack"):
        settings = _services(settings, options, repo, work, cleanup)
    run_id = uuid.uuid4().hex[:8]
    settings = _demo_settings(settings, options, run_id)

    from stream.topics import create_topics

    _step("topics")
    for line in create_topics(settings.kafka, settings.topics):
        _say(line)
    if options.external:
        cleanup.callback(_delete_topics, settings)

    with _timed(steps, "workers"):
        workers = _start_workers(settings, options, work, run_id, repo, data, cleanup)
    with _timed(steps, "stream"):
        report = _stream(settings, options, dataset, held_out, run_id, workers)
    report["data"] = str(data)
    return report


def _services(settings: Settings, options: DemoOptions, repo: Path | None, work: Path, cleanup: ExitStack) -> Settings:
    """The broker and Triton the workers use: the embedded stack (started here), or the settings'."""
    if options.external:
        _step(f"external services: broker {settings.kafka.bootstrap_servers}, Triton {settings.triton.url}")
        return settings
    from deploy.embedded.stack import EmbeddedStack, free_port_settings

    stack_settings = free_port_settings(work / "stack", repo, startup_timeout_s=settings.stack.startup_timeout_s,
                                        stop_timeout_s=settings.stack.stop_timeout_s)
    stack = EmbeddedStack(stack_settings)
    _step(f"embedded stack: Tansu broker on {stack.broker_address}, tritonserver (gRPC "
          f"{stack_settings.host}:{stack_settings.triton_grpc_port}) serving {repo}")

    def down() -> None:
        for line in stack.down():
            _say(line)

    cleanup.callback(down)
    stack.up()
    for status in stack.status():
        _say(f"{status.name:<7} {'healthy' if status.healthy else 'UNHEALTHY'}  {status.detail}")
        if not status.healthy:
            raise DemoError(f"{status.name} is not healthy: {status.detail}")
    return settings.model_copy(update={
        "stack": stack_settings,
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": stack.broker_address}),
        "triton": settings.triton.model_copy(update={"url": f"{stack_settings.host}:{stack_settings.triton_grpc_port}"}),
    })


def _demo_settings(settings: Settings, options: DemoOptions, run_id: str) -> Settings:
    update: dict[str, Any] = {
        "worker": settings.worker.model_copy(update={
            "group_id": f"oanet-demo-{run_id}", "ocr_processes": options.ocr_processes,
            "metrics_port": 0,  # several workers on one machine: no shared default port
            "status_interval_s": 5.0}),
    }
    if options.external:  # never mix with the topics' own traffic: topics of this run, deleted at the end
        t = settings.topics
        update["topics"] = t.model_copy(update={name: f"{getattr(t, name)}.demo-{run_id}"
                                                for name in ("frames", "verdicts", "dead_letter")})
    return settings.model_copy(update=update)


def _delete_topics(settings: Settings) -> None:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(**settings.kafka.client_kwargs())
        try:
            admin.delete_topics([settings.topics.frames, settings.topics.verdicts, settings.topics.dead_letter])
        finally:
            admin.close()
        _say("deleted the demo's topics")
    except Exception as exc:  # noqa: BLE001 - best effort while cleaning up
        _say(f"could not delete the demo's topics: {exc}")


def _start_workers(settings: Settings, options: DemoOptions, work: Path, run_id: str, repo: Path | None,
                   data: Path, cleanup: ExitStack) -> list:
    from stream.worker.processes import WorkerProcess

    # The worker takes the line profile from the served model; an external Triton may serve an
    # export older than that, so there the dataset's profile names the layout.
    extra = [] if repo is not None else ["--profile", str(data / "profile.yaml")]
    _step(f"{options.workers} stream worker(s) (`oanet worker`, {options.ocr_processes} OCR process(es) each, "
          f"group {settings.worker.group_id}); logs in {work / 'logs'}")
    workers = []

    def stop_all() -> None:
        for index, worker in enumerate(workers):
            code = worker.stop(timeout_s=settings.worker.drain_timeout_s + 30)
            _say(f"stopped worker {index} (pid {worker.pid}, exit code {code})")

    cleanup.callback(stop_all)
    for index in range(options.workers):
        workers.append(WorkerProcess(settings, work / "logs" / f"worker-{index}.log", extra=extra))
    wait_s = settings.worker.startup_timeout_s + 120  # start-up, then the first group join
    deadline = time.monotonic() + wait_s
    partitions = settings.topics.frames_partitions
    while True:
        _check_alive(workers)
        assigned = [w.assignment() for w in workers]
        if all(assigned) and sum(len(a) for a in assigned) == partitions:
            break
        if time.monotonic() > deadline:
            raise DemoError(f"the workers did not share the {partitions} partitions within {wait_s:.0f} s; "
                            f"see {work / 'logs'}")
        time.sleep(0.5)
    for index, (worker, parts) in enumerate(zip(workers, assigned, strict=True)):
        _say(f"worker {index} (pid {worker.pid}): partitions {sorted(parts)}")
    return workers


def _check_alive(workers: list) -> None:
    for index, worker in enumerate(workers):
        if not worker.alive():
            reason = worker.last_error() or worker.log_tail(3)
            raise DemoError(f"worker {index} exited with code {worker.process.returncode}: {reason}")


def _stream(settings: Settings, options: DemoOptions, dataset, held_out, run_id: str, workers: list) -> dict[str, Any]:
    from stream.replay import replay
    from stream.verdicts import collect, live_line, score, summary

    count = options.replay or len(held_out)
    lines = options.lines or settings.topics.frames_partitions
    prefix = f"demo-{run_id}-"
    _step(f"replaying {count} held-out (test split) frames as {lines} line(s) "
          f"({'as fast as possible' if not options.rate else f'{options.rate:g} frames/s'}); verdicts as they come:")
    errors: list[BaseException] = []

    def camera() -> None:
        try:
            replay(settings, dataset, held_out, rate=options.rate, limit=count, loop=count > len(held_out),
                   prefix=prefix, line_id=dataset.profile.name, lines=lines, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=camera, name="oanet-demo-replay", daemon=True)
    thread.start()

    def progress(tally) -> None:
        _check_alive(workers)
        if errors:
            raise errors[0]
        print(f"    {live_line(tally, started)}", flush=True)

    tally = collect(settings, expect=count, timeout_s=options.timeout_s, on_progress=progress,
                    progress_every_s=PROGRESS_EVERY_S)
    elapsed = time.monotonic() - started
    thread.join(timeout=60)
    if errors:
        raise errors[0]
    print(f"    {live_line(tally, started)}", flush=True)
    if len(tally.verdicts) + len(tally.dead_letters) < count:
        raise DemoError(f"only {len(tally.verdicts) + len(tally.dead_letters)} of {count} frames were answered "
                        f"within {options.timeout_s:.0f} s")
    return {"summary": summary(tally), "score": score(tally, held_out, prefix), "frames": count,
            "seconds": elapsed, "workers": len(workers), "lines": lines}


def _print_summary(report: dict[str, Any], steps: dict[str, float], total_s: float) -> None:
    s, sc = report["summary"], report["score"]
    lat = s["latency_ms"]
    codes = ", ".join(f"{k} {v}" for k, v in s["dead_letters_by_code"].items()) or "none"
    rate = s["frames_with_verdict"] / report["seconds"] if report["seconds"] > 0 else float("nan")
    print()
    print("=" * 78)
    print(f"OANet demo summary ({report['workers']} worker(s), {report['lines']} line(s), data {report['data']})")
    print(f"  frames played       {report['frames']}")
    print(f"  verdicts            {s['frames_with_verdict']} (pass {s['pass']}, defect {s['defect']}; "
          f"{s['verdict_messages']} messages, {s['duplicates']} duplicate(s), {s['conflicting_duplicates']} differing)")
    print(f"  dead letters        {s['dead_letters']} ({codes})")
    print(f"  against the truth   accuracy {_pct(sc['accuracy'])}, recall {_pct(sc['recall'])}, "
          f"precision {_pct(sc['precision'])}, f1 {_pct(sc['f1'])}; confusion [[tn fp] [fn tp]] "
          f"{sc['confusion_matrix']}")
    if "training" in steps:
        # A first-time user reads the scores above as the product's: say what model made them.
        epochs = DEMO_TRAIN_ARGS[DEMO_TRAIN_ARGS.index("--epochs") + 1]
        print(f"  model               the demo's short training (at most {epochs} CNN epochs, "
              f"{steps['training']:.0f} s); the faintest object defects escape it (docs/benchmarks.md, issue 11 "
              "training)")
    print(f"  throughput          {rate:.1f} frames/s (first frame played to last verdict, {report['seconds']:.1f} s)")
    print(f"  latency             capture-to-verdict p50 {lat['end_to_end_p50']} ms, p99 {lat['end_to_end_p99']} ms; "
          f"in the worker p50 {lat['worker_p50']} ms, p99 {lat['worker_p99']} ms")
    print("  median per stage    " + ", ".join(f"{k} {v} ms" for k, v in s["stage_medians_ms"].items()))
    print("  wall time           " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in steps.items())
          + f"; total {total_s:.0f} s")
    print("=" * 78)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
