"""The `oanet bench e2e` run: the stack, the stages alone, the end-to-end run, the latencies and
the report lines with their targets (the method: bench/e2e/__init__.py)."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import BenchError, machine_line
from bench.e2e.endtoend import EndToEnd, end_to_end, latency_alone, latency_at
from bench.e2e.stages import OCR_POOL_PADDLE, STAGES, Stage, StageBench
from bench.e2e.traffic import Answers, Frames
from deploy.embedded.stack import EmbeddedStack, free_port_settings
from oanet.dataset import load_dataset
from oanet.settings import Settings, load_settings
from stream.stats import percentile
from stream.topics import create_topics
from stream.worker.imageinfo import inspect_image
from stream.worker.processes import WorkerProcess
from stream.worker.repository import read_exported

TARGET_RATIO = 0.8
TARGET_LATENCY_RATIO = 3.0
TARGET_MEMORY_PCT = 5.0


@dataclass(frozen=True)
class BenchOptions:
    data: Path
    repo: Path
    seconds: float = 10.0
    duration_s: float = 60.0
    warmup_s: float = 20.0
    ocr_processes: int = 2
    window: int = 32
    backlog: int = 0  # 0: 2 x window
    alone: int = 20
    paced_s: float = 30.0
    frames_in_memory: int = 200
    samples: Path | None = None  # CSV of the memory samples

    def problems(self) -> list[str]:
        checks = [(self.seconds > 0, "--seconds must be positive"), (self.duration_s > 0, "--duration must be positive"),
                  (self.ocr_processes >= 1, "--ocr-processes must be at least 1"), (self.window >= 1, "--window must be at least 1"),
                  (self.alone >= 1, "--alone must be at least 1"), (self.paced_s > 0, "--paced must be positive")]
        return [m for ok, m in checks if not ok]


@contextmanager
def _stack(repo: Path, state: Path) -> Iterator[tuple[Settings, dict[str, int]]]:
    """The embedded stack serving `repo` on free ports: (settings, each service's pid by name)."""
    stack_settings = free_port_settings(state / "stack", repo, startup_timeout_s=300)
    stack = EmbeddedStack(stack_settings)
    stack.up()
    try:
        services = {status.name: status.pid for status in stack.status() if status.pid is not None}
        yield load_settings(stack=stack_settings.model_dump()), services
    finally:
        stack.down()


def _bench_settings(settings: Settings, options: BenchOptions) -> Settings:
    """Topics and a consumer group of this run alone, the options' worker, no metrics port."""
    run_id = uuid.uuid4().hex[:6]
    topics = settings.topics.model_copy(update={"frames": f"bench.{run_id}.frames",
                                                "verdicts": f"bench.{run_id}.verdicts",
                                                "dead_letter": f"bench.{run_id}.dlq"})
    worker = settings.worker.model_copy(update={"ocr_processes": options.ocr_processes, "window": options.window,
                                                "metrics_port": 0, "group_id": f"bench-{run_id}"})
    return settings.model_copy(update={"topics": topics, "worker": worker})


def _stage_lines(stages: list[Stage], seconds: float) -> list[str]:
    lines = [f"stages alone ({seconds:g} s each after a warm-up, one at a time):"]
    lines += [f"  {st.name:<9} {st.rate:8.1f} frames/s  ({st.how}; {st.frames} in {st.seconds:.1f} s"
              + (f"; {st.cpu_ms_per_frame:.0f} ms CPU per frame)" if st.cpu_ms_per_frame is not None else ")")
              for st in stages]
    return lines


def _wait_assigned(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 400
    while not worker.assignment():
        if not worker.alive() or time.monotonic() > deadline:
            raise BenchError(f"the worker did not start: {worker.last_error() or worker.log_tail(3)}")
        time.sleep(0.5)


def _memory_line(e2e: EndToEnd) -> str:
    base, low, high, last, dev = e2e.memory()
    return (f"memory (worker + OCR processes RSS, {len(e2e.rss)} samples, 1/s): baseline {base:.0f} MiB (median "
            f"of the first tenth), min {low:.0f}, max {high:.0f}, last {last:.0f}; largest deviation "
            f"{dev:.1f}% (target +-{TARGET_MEMORY_PCT:g}%: {'met' if dev <= TARGET_MEMORY_PCT else 'missed'}); "
            f"second half {e2e.second_half_growth():+.1f}%")


def _latency_line(alone: list[float], paced: list[float], half: float) -> str:
    nan = float("nan")
    median_alone = statistics.median(alone)
    p99 = percentile(paced, 99, nan)
    return (f"latency produce-to-verdict: one frame alone ({len(alone)} frames) median {median_alone:.0f} ms "
            f"(p90 {percentile(alone, 90, nan):.0f}); at half the end-to-end rate ({half:.1f} frames/s, "
            f"{len(paced)} frames) p50 {percentile(paced, 50, nan):.0f} ms, p99 {p99:.0f} ms = "
            f"{p99 / median_alone:.2f} x the median alone (target <= {TARGET_LATENCY_RATIO:g}: "
            f"{'met' if p99 <= TARGET_LATENCY_RATIO * median_alone else 'missed'})")


def _ratio_lines(slowest: Stage, again: Stage, e2e: EndToEnd, end_to_end_line: str) -> list[str]:
    """The end-to-end rate against the slowest stage alone, measured before and after it: the
    shared machine's load drifts over a run, so the ratio uses the mean of both."""
    reference = (slowest.rate + again.rate) / 2
    ratio = e2e.rate / reference if reference > 0 else float("nan")
    lines = [f"  slowest: {slowest.name} {slowest.rate:.1f} frames/s before the end-to-end run, "
             f"{again.rate:.1f} after; mean {reference:.1f}",
             f"{end_to_end_line} = {ratio:.2f} x the slowest stage alone (target >= {TARGET_RATIO}: "
             f"{'met' if ratio >= TARGET_RATIO else 'missed'})"]
    if slowest.cpu_ms_per_frame is not None:
        # On a shared machine the scheduler gives a pipeline of many processes a larger share
        # than one stage's few processes; CPU time per frame does not depend on that share.
        lines.append(f"  CPU per frame: end to end {e2e.cpu_ms_per_frame:.0f} ms (worker, OCR processes, Triton, "
                     f"broker), {slowest.name} alone {slowest.cpu_ms_per_frame:.0f} ms: where CPU is the limit "
                     f"and the machine is the pipeline's alone, end to end / slowest = "
                     f"{slowest.cpu_ms_per_frame / e2e.cpu_ms_per_frame:.2f}")
    lines.append(f"  {_by_process(e2e)}")
    return lines


def _by_process(e2e: EndToEnd) -> str:
    parts = ", ".join(f"{name} {ms:.0f} ms" for name, ms in e2e.cpu_ms_per_frame_by_process().items())
    return f"CPU per frame by process: {parts}"


def _student_line(student: EndToEnd, without: EndToEnd) -> str:
    ratio = student.rate / without.rate if without.rate > 0 else float("nan")
    return (f"frames/s per worker with the OCR student {student.rate:.1f} ({student.cpu_ms_per_frame:.0f} ms CPU per "
            f"frame), without it {without.rate:.1f} ({without.cpu_ms_per_frame:.0f} ms CPU per frame; the same worker "
            f"settings, right after, {without.seconds:.0f} s): {ratio:.2f}x")


def run(options: BenchOptions, progress: Callable[[str], None] = lambda line: None) -> list[str]:
    problems = options.problems()
    if problems:
        raise BenchError("; ".join(problems))
    # kafka-python warns when its own I/O loop is busy for 0.1 s: under a benchmark's load it is.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    exported = read_exported(options.repo)
    dataset = load_dataset(options.data)
    if dataset.profile.name != exported.profile.name:
        raise BenchError(f"{options.data} is of line {dataset.profile.name!r}, the model of {exported.profile.name!r}")
    entries = dataset.entries[: options.frames_in_memory]
    frames = Frames(dataset, [dataset.read_bytes(e) for e in entries])
    infos = [inspect_image(p) for p in frames.payloads]
    lines = [f"{machine_line('cpu')} (start)",
             f"data: {options.data} ({len(frames)} frames in memory, {np.mean([len(p) for p in frames.payloads]) / 1024:.0f} "
             f"KiB on average, {infos[0].format}, {infos[0].width}x{infos[0].height}); model: {options.repo} version "
             f"{exported.model.version} ({exported.model.image_size} px ROI)"]
    progress(lines[0])
    began = time.monotonic()
    say = progress
    progress = lambda line: say(f"{time.monotonic() - began:5.0f} s  {line}")  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="oanet-bench-e2e-") as tmp, ExitStack() as cleanup:
        settings, services = cleanup.enter_context(_stack(options.repo, Path(tmp)))
        settings = _bench_settings(settings, options)
        create_topics(settings.kafka, settings.topics)

        bench = StageBench(settings, frames, infos, exported, options.seconds, options.ocr_processes, options.window)
        server = bench.config.student_server
        where = f"; its network on Triton, {server.model} version {server.version}" if server is not None else ""
        lines.append(f"OCR student: {bench.config.ocr.recognizer or 'served only'} (exported with the version; the "
                     f"worker reads with it, PaddleOCR reads the lines it is not sure of{where})" if bench.student else
                     "OCR student: none in this version (PaddleOCR reads every line)")
        stages: list[Stage] = []
        for name in STAGES:
            progress(f"stage alone: {name}")
            stages.append(bench.measure(name))
        slowest = min(stages, key=lambda st: st.rate)
        if bench.student:
            progress(f"stage alone: {OCR_POOL_PADDLE}")
            stages.append(bench.measure(OCR_POOL_PADDLE))
        lines += _stage_lines(stages, options.seconds)

        answers = cleanup.enter_context(Answers(settings))
        worker = WorkerProcess(settings, Path(tmp) / "worker.log", extra=["--repo", str(options.repo)])
        cleanup.callback(worker.stop)
        _wait_assigned(worker)
        backlog = options.backlog or 2 * options.window
        progress(f"end to end: standing backlog of {backlog} frames, {options.warmup_s:g} s warm-up, "
                 f"{options.duration_s:g} s measured")
        e2e, camera = end_to_end(settings, frames, worker, answers, backlog, options.warmup_s, options.duration_s,
                                 progress, services)
        cleanup.callback(camera.close)
        end_to_end_line = (f"end to end (1 worker, {options.ocr_processes} OCR process(es), window {options.window}, "
                           f"frames waiting {min(e2e.backlog)}-{max(e2e.backlog)}, {e2e.seconds:.0f} s after "
                           f"{options.warmup_s:g} s warm-up): {e2e.rate:.1f} frames/s")
        report = [_memory_line(e2e)]
        if options.samples is not None:
            e2e.write_samples(options.samples)
            report.append(f"memory samples: {options.samples}")

        progress(f"latency: {options.alone} frames alone")
        alone = latency_alone(camera, answers, options.alone)
        half = e2e.rate / 2
        progress(f"latency: paced at {half:.1f} frames/s for {options.paced_s:g} s")
        paced = latency_at(camera, answers, half, options.paced_s)
        report.append(_latency_line(alone, paced, half))
        code = worker.stop()
        if code != 0:
            report.append(f"note: the worker exited with code {code}: {worker.last_error()}")
        if bench.student:
            # The same worker without its student, right after, on the same frames, stack and topics.
            paddle = WorkerProcess(settings, Path(tmp) / "worker-paddleocr.log", extra=["--repo", str(options.repo)],
                                   env={"OANET_WORKER__STUDENT": "off"})
            cleanup.callback(paddle.stop)
            _wait_assigned(paddle)
            progress(f"end to end without the OCR student: {options.warmup_s:g} s warm-up, "
                     f"{options.duration_s:g} s measured")
            without, _ = end_to_end(settings, frames, paddle, answers, backlog, options.warmup_s, options.duration_s,
                                    progress, services, prefix="e2e-paddleocr", camera=camera)
            paddle.stop()
            report.append(_student_line(e2e, without))
            report.append(f"  without the student, {_by_process(without)}")
        progress(f"stage alone again: {slowest.name}")
        again = bench.measure(slowest.name)
        lines += _ratio_lines(slowest, again, e2e, end_to_end_line)
        lines += report
    lines.append(f"{machine_line('cpu')} (end)")
    return lines
