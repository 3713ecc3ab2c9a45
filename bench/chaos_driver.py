"""The chaos run: a camera that keeps sending good and bad frames, workers killed with SIGKILL
(one of them in the middle of a rebalance), Triton restarted once, a poison frame in the stream;
and the recorders of what was produced, output and committed, for the audit (bench/chaos_audit.py).

Used by `oanet bench chaos` (bench/chaos.py, long runs that print figures) and by the suite's
short chaos test (tests/stream/worker/test_chaos.py), on a stack and workers they provide.

Threads of a run: the producer (paced at `rate`, every `bad_every`-th frame a bad one of the
next kind, one poison frame), a reader of the verdicts and dead-letter topics, a sampler of the
group's committed offsets; the caller's thread runs the schedule of disruptions, each when
that fraction of the frames has an output, so a slow machine changes the duration, not what
is tested.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from bench.chaos_audit import CommitSample, Output, Produced
from bench.chaos_frames import GOOD, REQUIRED_HEADERS, VERDICT, Kind, frame_headers, send_record
from deploy.embedded.stack import SERVICES, TRITON, EmbeddedStack
from oanet.contracts import HEADER_ERROR_CODE, HEADER_ERROR_STAGE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, MIB
from oanet.settings import Settings
from stream.kafka_clients import consumer_config, producer_config
from stream.worker.messages import stable_part
from stream.worker.processes import WorkerProcess

KILL, KILL_IN_REBALANCE, RESTART_TRITON = "kill", "kill during a rebalance", "restart Triton"


def chaos_settings(settings: Settings, *, window: int, commit_interval_s: float, deadline_s: float,
                   max_frame_bytes: int = 1 * MIB, ocr_processes: int = 1) -> Settings:
    """`settings` as the chaos workers run: both frame headers required (so a missing or
    malformed one is a bad kind), a 1 MiB frame limit with 64 KiB for headers (the near-limit
    frame stays cheap), the window, commit interval and frame deadline under test."""
    return settings.model_copy(update={
        "topics": settings.topics.model_copy(update={"max_frame_bytes": max_frame_bytes,
                                                     "message_overhead_bytes": 64 * 1024}),
        "worker": settings.worker.model_copy(update={
            "window": window, "commit_interval_s": commit_interval_s, "frame_deadline_s": deadline_s,
            "required_headers": REQUIRED_HEADERS, "ocr_processes": ocr_processes}),
    })


@dataclass(frozen=True)
class Plan:
    frames: int
    rate: float  # frames/s the camera sends
    kills: int = 3  # SIGKILLs; the second one lands in a rebalance
    workers: int = 2  # alive at any time (a killed one is replaced at once)
    bad_every: int = 20  # one frame in this many is bad: 5%
    poison_at: float = 0.3  # where the poison frame sits, as a fraction of the frames
    restart_triton_at: float = 0.55  # fraction of frames with an output when Triton is restarted
    settle_s: float = 180.0  # no new output this long after the camera stopped: the rest is lost

    def problems(self) -> list[str]:
        checks = [(self.frames >= 2 * self.bad_every, f"--frames must be at least {2 * self.bad_every}"),
                  (self.rate > 0, "--rate must be positive"), (self.kills >= 2, "--kills must be at least 2"),
                  (self.workers >= 2, "--workers must be at least 2 (a rebalance needs two)")]
        return [message for ok, message in checks if not ok]

    def schedule(self) -> list[tuple[float, str]]:
        """(fraction of frames with an output, action), in order."""
        kills = [(0.1 + 0.7 * i / max(1, self.kills - 1), KILL_IN_REBALANCE if i == 1 else KILL)
                 for i in range(self.kills)]
        return sorted([*kills, (self.restart_triton_at, RESTART_TRITON)])


@dataclass
class Result:
    produced: list[Produced]
    outputs: list[Output]
    commits: list[CommitSample]
    final_commits: dict[int, int]
    disruptions: int  # workers killed plus workers that joined the group mid-run
    timeline: list[str]  # what was done when
    kills: int = 0
    kill_in_rebalance: bool = False  # the victim was revoking and the newcomer had no assignment yet
    triton_down_s: float = 0.0
    seconds: float = 0.0
    worker_errors: list[str] = field(default_factory=list)


class _Recorder(threading.Thread):
    """A daemon loop until `stop`; the first exception is kept for the caller."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the driver's thread
            self.error = exc

    def loop(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60)
        if self.error is not None:
            raise RuntimeError(f"the chaos {self.name} failed: {self.error}") from self.error


class _Camera(_Recorder):
    def __init__(self, settings: Settings, plan: Plan, good: Sequence[Kind], bad: Sequence[Kind], poison: Kind):
        super().__init__("camera")
        self.settings, self.plan, self.good, self.bad, self.poison = settings, plan, good, bad, poison
        self.sent = 0
        self.produced: list[Produced] = []

    def kind_of(self, index: int) -> Kind:
        if index == int(self.plan.frames * self.plan.poison_at):
            return self.poison
        if index % self.plan.bad_every == self.plan.bad_every // 2:
            return self.bad[(index // self.plan.bad_every) % len(self.bad)]
        return self.good[index % len(self.good)]

    def loop(self) -> None:
        topic = self.settings.topics.frames
        producer = KafkaProducer(**producer_config(self.settings))
        try:
            partitions = sorted(producer.partitions_for(topic))
            pending = []
            started = time.monotonic()
            for index in range(self.plan.frames):
                delay = started + index / self.plan.rate - time.monotonic()
                if delay > 0 and self.halt.wait(delay):
                    break
                kind = self.kind_of(index)
                key, value, headers = kind.build(frame_headers(f"chaos-{index}"))
                at_ms = time.time() * 1000
                future = send_record(producer, topic, partitions[index % len(partitions)], key, value, headers)
                pending.append((future, kind, at_ms))
                self.sent = index + 1
            producer.flush(timeout=120)
            for future, kind, at_ms in pending:
                metadata = future.get(timeout=120)
                self.produced.append(Produced(metadata.partition, metadata.offset, kind.name, kind.expected, at_ms))
        finally:
            producer.close(timeout=10)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


class _OutputReader(_Recorder):
    """Every verdict and dead letter, from the beginning of both topics."""

    def __init__(self, settings: Settings):
        super().__init__("output reader")
        self.settings = settings
        self.outputs: list[Output] = []
        self.frames: set[tuple[int, int]] = set()

    def loop(self) -> None:
        s = self.settings
        consumer = KafkaConsumer(**consumer_config(s, None))
        try:
            tps = [TopicPartition(topic, p) for topic in (s.topics.verdicts, s.topics.dead_letter)
                   for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self.halt.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        out = self._output(record)
                        self.outputs.append(out)
                        self.frames.add((out.partition, out.offset))
        finally:
            consumer.close(autocommit=False)

    def _output(self, record) -> Output:
        if record.topic == self.settings.topics.verdicts:
            verdict = json.loads(record.value)
            source = verdict["source"]
            content = json.dumps(stable_part(verdict), sort_keys=True).encode()
            return Output(source["partition"], source["offset"], VERDICT, _digest(content), record.timestamp,
                          verdict["timings_ms"]["total"])
        headers = dict(record.headers)
        code = headers[HEADER_ERROR_CODE].decode()
        return Output(int(headers[HEADER_SOURCE_PARTITION]), int(headers[HEADER_SOURCE_OFFSET]), code,
                      _digest(code.encode(), headers[HEADER_ERROR_STAGE], record.key or b"", record.value or b""),
                      record.timestamp)


def committed(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


class _CommitSampler(_Recorder):
    """The group's committed offsets of the frames topic, about every `interval_s`."""

    def __init__(self, settings: Settings, group: str, interval_s: float = 0.5):
        super().__init__("commit sampler")
        self.settings, self.group, self.interval_s = settings, group, interval_s
        self.samples: list[CommitSample] = []

    def loop(self) -> None:
        admin = KafkaAdminClient(**self.settings.kafka.client_kwargs())
        try:
            while not self.halt.wait(self.interval_s):
                offsets = committed(admin, self.group, self.settings.topics.frames)
                self.samples.append(CommitSample(time.time() * 1000, offsets))
        finally:
            admin.close()


class ChaosRun:
    """One run (module docstring). `start_worker()` starts an `oanet worker` of the group on
    `settings` (chaos_settings); `stack` is the one whose Triton is restarted."""

    def __init__(self, settings: Settings, stack: EmbeddedStack, group: str, plan: Plan,
                 start_worker: Callable[[], WorkerProcess], good: Sequence[Kind], bad: Sequence[Kind],
                 poison: Kind, progress: Callable[[str], None] = lambda line: None):
        self.settings, self.stack, self.group, self.plan = settings, stack, group, plan
        self._start_worker, self._progress = start_worker, progress
        self.workers: list[WorkerProcess] = []  # alive, oldest first
        self.started_workers: list[WorkerProcess] = []
        self.camera = _Camera(settings, plan, good, bad, poison)
        self.reader = _OutputReader(settings)
        self.sampler = _CommitSampler(settings, group)
        self._began = self._began_frames = time.monotonic()
        self._next_stack_check = 0.0
        self.result = Result([], [], [], {}, 0, [])

    # ---------------------------------------------------------------- helpers

    def _say(self, line: str) -> None:
        stamped = f"{time.monotonic() - self._began:6.1f} s  {line}"
        self.result.timeline.append(stamped)
        self._progress(stamped)

    def _spawn(self) -> WorkerProcess:
        worker = self._start_worker()
        self.workers.append(worker)
        self.started_workers.append(worker)
        if len(self.started_workers) > self.plan.workers:
            self.result.disruptions += 1  # it joins a running group: a rebalance
        return worker

    def _check(self) -> None:
        """Raise when a recorder failed or a worker exited that nobody killed."""
        for recorder in (self.camera, self.reader, self.sampler):
            if recorder.error is not None:
                raise RuntimeError(f"the chaos {recorder.name} failed: {recorder.error}")
        if time.monotonic() >= self._next_stack_check:  # once a second: a PID file read and a /proc look-up
            self._next_stack_check = time.monotonic() + 1.0
            for name in SERVICES:
                if not self.stack.is_running(name):
                    raise RuntimeError(f"{name} exited on its own (log: {self.stack.log_file(name)}): "
                                       f"{self.stack.failure_summary(name)}")
        dead = [w for w in self.workers if not w.alive()]
        if dead:
            raise RuntimeError(f"worker {dead[0].pid} exited with code {dead[0].process.returncode} on its own: "
                               f"{dead[0].last_error() or dead[0].log_tail(5)}")

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
        deadline = time.monotonic() + timeout_s
        next_report = time.monotonic() + 15
        while not condition():
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            if time.monotonic() > next_report:
                self._say(f"waiting for {what}: {self.camera.sent} frames sent, {self._done()} with an output")
                next_report = time.monotonic() + 15
            time.sleep(interval_s)

    def _done(self) -> int:
        return len(self.reader.frames)

    # ---------------------------------------------------------------- actions

    def _kill(self, worker: WorkerProcess, why: str) -> None:
        worker.kill()
        self.workers.remove(worker)
        self.result.kills += 1
        self.result.disruptions += 1
        self._say(f"SIGKILL worker {worker.pid} ({why}) with {self._done()} frames output")

    def _kill_and_replace(self) -> None:
        self._kill(self.workers[0], "its OCR processes too")
        self._spawn()

    def _kill_in_rebalance(self) -> None:
        """Start a worker; when an old one revokes its partitions for the join, SIGKILL it."""
        before = {w.pid: _count(w, "partitions revoked") for w in self.workers}
        newcomer = self._spawn()
        self._say(f"worker {newcomer.pid} starts: the group will rebalance when it joins")
        revoking: list[WorkerProcess] = []

        def someone_revokes() -> bool:
            revoking[:] = [w for w in self.workers if w is not newcomer and _count(w, "partitions revoked") > before[w.pid]]
            return bool(revoking)

        self._wait(someone_revokes, 300, "a worker to revoke its partitions for the newcomer", interval_s=0.02)
        in_rebalance = newcomer.assignment() is None
        self._kill(revoking[0], "while it revokes its partitions, the newcomer not yet assigned"
                   if in_rebalance else "while it revokes its partitions (the newcomer was already assigned)")
        self.result.kill_in_rebalance = self.result.kill_in_rebalance or in_rebalance
        self._spawn()

    def _restart_triton(self) -> None:
        began = time.monotonic()
        pid = next(status.pid for status in self.stack.status() if status.name == TRITON)
        if not self.stack.stop_service(TRITON) or psutil.pid_exists(pid):
            raise RuntimeError(f"Triton (pid {pid}) was not stopped: {'; '.join(self.stack.notices) or 'no notice'}")
        self._say(f"Triton stopped with {self._done()} frames output")
        self.stack.start_service(TRITON)
        self.result.triton_down_s = time.monotonic() - began
        self._say(f"Triton serving again after {self.result.triton_down_s:.1f} s")

    # ---------------------------------------------------------------- the run

    def run(self) -> Result:
        try:
            self._run()
        finally:
            for worker in self.workers:
                if worker.alive():
                    worker.kill()
            for recorder in (self.camera, self.reader, self.sampler):
                recorder.halt.set()
        return self.result

    def _run(self) -> None:
        plan = self.plan
        self.reader.start()
        self.sampler.start()
        for _ in range(plan.workers):
            self._spawn()
        self._wait(lambda: all(w.assignment() for w in self.workers)
                   and set().union(*(w.assignment() for w in self.workers)) == set(range(self.settings.topics.frames_partitions)),
                   300, "the workers to share the partitions")
        self._say(f"{plan.workers} workers consuming; camera sends {plan.frames} frames at {plan.rate:g}/s")
        self._began_frames = time.monotonic()
        self.camera.start()
        actions = {KILL: self._kill_and_replace, KILL_IN_REBALANCE: self._kill_in_rebalance,
                   RESTART_TRITON: self._restart_triton}
        for fraction, action in plan.schedule():
            target = int(plan.frames * fraction)
            self._wait(lambda: self._done() >= target, 3600, f"{target} frames with an output", interval_s=0.2)
            actions[action]()
        self._settle()
        for worker in list(self.workers):
            code = worker.stop()
            if code != 0:
                self.result.worker_errors.append(f"worker {worker.pid} exited with code {code}: {worker.last_error()}")
            self.workers.remove(worker)
        self._say("workers stopped (SIGTERM: drained and committed)")
        self.sampler.stop()
        admin = KafkaAdminClient(**self.settings.kafka.client_kwargs())
        try:
            self.result.final_commits = committed(admin, self.group, self.settings.topics.frames)
        finally:
            admin.close()
        self.reader.stop()
        self.result.produced = self.camera.produced
        self.result.outputs = self.reader.outputs
        self.result.commits = self.sampler.samples
        self.result.seconds = time.monotonic() - self._began_frames

    def _settle(self) -> None:
        """Wait for the camera, then for an output of every frame, or for `settle_s` without a new one."""
        self._wait(lambda: not self.camera.is_alive(), 3600, "the camera to send every frame", interval_s=0.2)
        if self.camera.error is not None:
            raise RuntimeError(f"the chaos camera failed: {self.camera.error}")
        self._say(f"camera done: {len(self.camera.produced)} frames produced")
        produced = {(p.partition, p.offset) for p in self.camera.produced}
        last, seen = time.monotonic(), -1
        next_report = time.monotonic() + 15
        while not produced <= self.reader.frames:
            self._check()
            done = self._done()
            if done != seen:
                last, seen = time.monotonic(), done
            if time.monotonic() - last > self.plan.settle_s:
                self._say(f"no new output for {self.plan.settle_s:.0f} s: {len(produced - self.reader.frames)} "
                          "frame(s) without one")
                return
            if time.monotonic() > next_report:
                self._say(f"{done}/{len(produced)} frames with an output")
                next_report = time.monotonic() + 15
            time.sleep(0.5)
        self._say(f"every one of the {len(produced)} frames has an output")


def _count(worker: WorkerProcess, message: str) -> int:
    return sum(1 for event in worker.events() if event.get("msg") == message)


def kinds_for(good_frames: Sequence[bytes]) -> list[Kind]:
    """The good kind, one per encoded frame of the line."""
    return [Kind(GOOD, VERDICT, lambda headers, value=value: (b"line", value, headers)) for value in good_frames]

