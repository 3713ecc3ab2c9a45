"""`oanet demo`: the main job on the embedded stack, from nothing.

Today's main job (until the stream worker lands): bring the embedded stack up, show it healthy,
create the topics, round-trip synthetic AOI frames through the broker with a consumer group
and check every byte and header, read each consumed frame's printed parameters with the OCR
stage and score them against the generator's ground truth, then stop what the demo started.
A stack that was already running is used and left running.
"""

from __future__ import annotations

import time
import uuid

from oanet.contracts import HEADER_FRAME_ID, HEADER_LINE_ID
from oanet.dataset import ManifestEntry
from oanet.errors import OanetError
from oanet.profile import LineProfile
from oanet.settings import Settings


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _demo_frames(count: int) -> tuple[LineProfile, list[tuple[ManifestEntry, bytes]]]:
    """Synthetic AOI frames of the built-in line profile, PNG-encoded, with their truth."""
    from oanet.profile import DEFAULT_PROFILE_PATH, load_profile
    from training.synth.generate import FrameSpec, encode, render_frame

    profile = load_profile(DEFAULT_PROFILE_PATH)
    spec = FrameSpec(profile, seed=20261122, defect_rate=0.4, width=profile.frame.width,
                     height=profile.frame.height)
    frames = []
    for index in range(count):
        frame = render_frame(spec, index, count)
        frames.append((frame.entry, encode(frame.image, "png")))
    return profile, frames


def _ocr_report(profile: LineProfile, frames: list[tuple[ManifestEntry, bytes]]) -> None:
    """Read every frame's panel and count exact field matches against the printed truth."""
    from stream.ocr.engine import OcrEngine
    from stream.ocr.parse import values_equal

    engine = OcrEngine(profile)
    engine.warm_up()
    exact = total = 0
    timings = []
    for entry, payload in frames:
        started = time.perf_counter()
        record = engine.read(payload, entry.id)
        timings.append((time.perf_counter() - started) * 1000)
        for spec in profile.fields:
            total += 1
            exact += values_equal(spec, record.params[spec.name], entry.params.get(spec.name))
        shown = ", ".join(f"{k}={v}" for k, v in list(record.params.items())[:4])
        smudged = f", {len(entry.smudged_fields)} smudged on purpose" if entry.smudged_fields else ""
        print(f"    {entry.id}: {shown}, ... ({len(record.missing)} missing{smudged})")
    timings.sort()
    print(f"    OCR exact field matches: {exact}/{total}; median {timings[len(timings) // 2]:.0f} ms/frame")


def run_demo(settings: Settings, frame_count: int = 8) -> int:
    from kafka import KafkaConsumer, KafkaProducer

    from deploy.embedded.stack import EmbeddedStack, StackAlreadyRunning
    from stream.kafka_clients import consumer_config, producer_config
    from stream.topics import create_topics

    started = time.monotonic()
    stack = EmbeddedStack(settings.stack)
    _step("starting the embedded stack (Tansu broker + tritonserver)")
    try:
        stack.up()
        owned = True
    except StackAlreadyRunning:
        print("    already running: using it and leaving it running")
        owned = False
    for notice in stack.notices:
        print(f"    note: {notice}")
    try:
        for status in stack.status():
            print(f"    {status.name:<7} {'healthy' if status.healthy else 'UNHEALTHY'}  {status.detail}")
            if not status.healthy:
                raise OanetError(f"{status.name} is not healthy: {status.detail}")

        _step("creating topics")
        for line in create_topics(settings.kafka, settings.topics):
            print(f"    {line}")

        _step(f"producing {frame_count} synthetic AOI frames to {settings.topics.frames}")
        profile, frames = _demo_frames(frame_count)
        run_id = uuid.uuid4().hex[:8]
        producer = KafkaProducer(**producer_config(settings))
        try:
            for entry, payload in frames:
                producer.send(settings.topics.frames, payload, key=b"line-a", headers=[
                    (HEADER_FRAME_ID, f"{run_id}-{entry.id}".encode()), (HEADER_LINE_ID, b"line-a"),
                ]).get(timeout=30)
        finally:
            producer.close()

        _step("consuming them back with a consumer group (waits for partition assignment)")
        expected = {f"{run_id}-{entry.id}": payload for entry, payload in frames}
        consumer = KafkaConsumer(settings.topics.frames, **consumer_config(settings, f"oanet-demo-{run_id}"))
        received: dict[str, bytes] = {}
        try:
            deadline = time.monotonic() + 120
            while len(received) < len(expected) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        frame_id = dict(record.headers).get(HEADER_FRAME_ID, b"").decode()
                        if frame_id in expected:
                            received[frame_id] = record.value
            consumer.commit()
        finally:
            consumer.close()
        intact = sum(received.get(fid) == payload for fid, payload in expected.items())
        total_bytes = sum(len(p) for _, p in frames)
        print(f"    {intact}/{len(expected)} frames back intact ({total_bytes / 1e6:.1f} MB)")
        if intact != len(expected):
            raise OanetError(f"only {intact} of {len(expected)} frames came back intact")

        _step("reading the printed machine parameters of the consumed frames (PaddleOCR, template mode)")
        consumed = [(entry, received[f"{run_id}-{entry.id}"]) for entry, _ in frames]
        _ocr_report(profile, consumed)
    finally:
        if owned:
            _step("stopping the embedded stack")
            for line in stack.down():
                print(f"    {line}")
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0
