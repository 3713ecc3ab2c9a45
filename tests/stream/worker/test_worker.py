"""The worker against the real broker: verdicts out, dead letters, pause while the model server
is away, consumer-group sharing, kill -9, graceful SIGTERM.

Inference is the exported test model run in-process (`--inference local`); the Triton-backed
fault tests (server stopped mid-run, INVALID_ARG from Triton) come with the Triton client.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import signal
import subprocess
import threading
import urllib.request
import uuid

import numpy as np
import psutil
import pytest

from oanet.contracts import (
    HEADER_CAPTURED_AT,
    HEADER_ERROR_CODE,
    HEADER_ERROR_STAGE,
    HEADER_FRAME_ID,
    HEADER_PROFILE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    MIB,
    DeadLetterCode,
)
from oanet.profile import DEFAULT_PROFILE_PATH
from stream.schemas import verdict_validator
from stream.worker.inference import InferenceRejected, TritonUnavailable
from stream.worker.local_model import InProcessInference
from stream.worker.logs import JsonFormatter
from stream.worker.messages import stable_part
from tests.conftest import free_port
from tests.stream.worker.harness import committed_offsets, produce, read_outputs, replay, running_worker, wait_until
from tests.stream.worker.images import cmyk_jpeg, noise, png, png_bomb, png_with_corrupt_data

pytestmark = pytest.mark.slow


def _now() -> bytes:
    return dt.datetime.now(dt.timezone.utc).isoformat().encode()


# ------------------------------------------------------------------------------------ verdicts


def test_300_frames_in_300_schema_valid_verdicts_out(worker_settings, line_t_dataset):
    port = free_port()
    settings = worker_settings(ocr_processes=0, window=16, metrics_port=port, metrics_host="127.0.0.1")
    with running_worker(settings) as worker:
        ids = replay(settings, line_t_dataset, 300, prefix="run300-", lines=3)
        out = read_outputs(settings, until=lambda o: len(o.verdicts) + len(o.dead_letters) >= 300)
        scrape = {path: urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) for path in
                  ("/metrics", "/live", "/ready")}
        metrics = scrape["/metrics"].read().decode()
        assert scrape["/live"].status == 200 and scrape["/ready"].status == 200
    assert out.dead_letters == []
    assert sorted(v["frame_id"] for v in out.verdicts) == sorted(ids)
    validator = verdict_validator()
    model = worker.model
    for v in out.verdicts:
        validator.validate(v)
        assert v["model"] == {"name": "oanet", "version": "1"} and v["profile"] == "line-t"
        assert v["verdict"] == ("defect" if v["defect_probability"] >= v["threshold"] else "pass")
        assert v["threshold"] == pytest.approx(model.threshold, abs=1e-6)
        assert set(v["params"]) == {"temp", "force", "speed"}
        assert v["source"]["topic"] == settings.topics.frames and v["captured_at"] is not None
    # the same image (played by the three lines) always gets the same verdict
    by_entry: dict[str, set[str]] = {}
    for v in out.verdicts:
        content = dict(stable_part(v))
        for per_message in ("frame_id", "line_id", "source", "captured_at"):
            content.pop(per_message)
        entry_id = v["frame_id"].split("@")[0].rsplit("-", 1)[1]
        by_entry.setdefault(entry_id, set()).add(json.dumps(content, sort_keys=True))
    assert len(by_entry) == 100 and all(len(contents) == 1 for contents in by_entry.values())
    for name in ("oanet_worker_frames_total 300.0", "oanet_worker_dead_letters_total", 'stage="ocr"',
                 "oanet_worker_end_to_end_seconds_count 300.0", "oanet_worker_consumer_lag",
                 "oanet_worker_ocr_missing_field_ratio", 'oanet_worker_gate_weight{branch="fused"}',
                 "oanet_worker_in_flight_frames"):
        assert name in metrics, name


# ------------------------------------------------------------------------------------ dead letters


class RejectBlackObjects(InProcessInference):
    """Stands in for Triton answering INVALID_ARG to one request (the phase-2 tests use Triton),
    and for a bug that one frame meets (a white object)."""

    async def infer(self, rois, values, missing):
        if int(rois.max()) == 0:
            raise InferenceRejected("INVALID_ARG: the object ROI is all black")
        if int(rois.min()) == 255:
            raise ZeroDivisionError("a bug this frame meets")
        return await super().infer(rois, values, missing)


def test_every_dead_letter_code_with_original_bytes_and_headers(worker_settings, line_t_dataset, model_repo, caplog):
    settings = worker_settings(ocr_processes=0, required_headers=("frame_id", "captured_at"),
                               topics={"max_frame_bytes": 1 * MIB})
    good = line_t_dataset.read_bytes(line_t_dataset.entries[0])
    black = line_t_dataset.read_image(line_t_dataset.entries[0])
    x, y, w, h = line_t_dataset.profile.object_roi
    black[y:y + h, x:x + w] = 0
    white = black.copy()
    white[y:y + h, x:x + w] = 255
    full = png(noise(320, 240))
    cases = {
        "good-1": (good, None),
        "empty": (b"", DeadLetterCode.EMPTY_FRAME),
        "too-large": (np.random.default_rng(0).bytes(MIB + 1), DeadLetterCode.FRAME_TOO_LARGE),
        "not-an-image": (b"GIF89a" + bytes(2000), DeadLetterCode.UNDECODABLE),
        "corrupt-data": (png_with_corrupt_data(), DeadLetterCode.UNDECODABLE),
        "truncated": (full[: len(full) // 2], DeadLetterCode.TRUNCATED),
        "bomb": (png_bomb(7000, 6000), DeadLetterCode.TOO_MANY_PIXELS),
        "cmyk": (cmyk_jpeg(), DeadLetterCode.UNUSABLE_COLOR),
        "portrait": (png(noise(240, 320)), DeadLetterCode.PROFILE_MISMATCH),
        "unknown-profile": (good, DeadLetterCode.UNKNOWN_PROFILE),
        "malformed-time": (good, DeadLetterCode.MALFORMED_HEADER),
        "black-object": (png(black), DeadLetterCode.INFERENCE_REJECTED),
        "white-object": (png(white), DeadLetterCode.INTERNAL_ERROR),
        "good-2": (good, None),
    }
    frames = []
    for frame_id, (value, _) in cases.items():
        headers = [(HEADER_FRAME_ID, frame_id.encode()), (HEADER_CAPTURED_AT, _now()), ("camera", b"cam-7\x00\x01")]
        if frame_id == "unknown-profile":
            headers.append((HEADER_PROFILE, b"line-z"))
        if frame_id == "malformed-time":
            headers[1] = (HEADER_CAPTURED_AT, b"half past ten")
        frames.append((value, headers))
    frames.append((good, [(HEADER_CAPTURED_AT, _now())]))  # no frame_id: missing_header
    expected_codes = {fid: code for fid, (_, code) in cases.items() if code}

    with running_worker(settings, lambda: RejectBlackObjects(model_repo)) as worker:
        produce(settings, frames)
        out = read_outputs(settings, until=lambda o: len(o.verdicts) + len(o.dead_letters) >= len(frames))
        counted = {code: worker.metrics.registry.get_sample_value("oanet_worker_dead_letters_total", {"code": code})
                   for code in DeadLetterCode.ALL}
    assert sorted(v["frame_id"] for v in out.verdicts) == ["good-1", "good-2"]  # the worker kept going
    assert len(out.dead_letters) == len(frames) - 2
    sent = {dict(h).get(HEADER_FRAME_ID, b"").decode(): (v, h) for v, h in frames}
    seen = {}
    for record in out.dead_letters:
        headers = list(record.headers)
        extra = dict(headers)
        frame_id = extra.get(HEADER_FRAME_ID, b"").decode()
        code = extra[HEADER_ERROR_CODE].decode()
        seen[frame_id] = code
        value, original = sent[frame_id]
        assert record.value == value, frame_id  # the original bytes, untouched
        assert [tuple(h) for h in headers[: len(original)]] == [tuple(h) for h in original], frame_id
        assert record.key == b"line-t"
        assert extra[HEADER_SOURCE_TOPIC] == settings.topics.frames.encode()
        assert int(extra[HEADER_SOURCE_PARTITION]) in range(3) and int(extra[HEADER_SOURCE_OFFSET]) >= 0
        assert extra[HEADER_ERROR_STAGE] in (b"headers", b"decode", b"ocr", b"inference")
    assert seen == {**expected_codes, "": DeadLetterCode.MISSING_HEADER}
    assert set(seen.values()) == set(DeadLetterCode.ALL)
    assert sum(v or 0 for v in counted.values()) == len(frames) - 2
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "dead letter"]
    assert {(e["frame_id"], e["code"]) for e in logged} >= {("truncated", "truncated_image"), ("bomb", "too_many_pixels")}


# ------------------------------------------------------------------------------------ server away


class SwitchableServer(InProcessInference):
    """The exported model behind a switch: while `down` is set it answers like a Triton that is
    unreachable (phase 2 stops the real tritonserver instead)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = threading.Event()
        self.refused = 0
        self.probes = 0

    async def infer(self, rois, values, missing):
        if self.down.is_set():
            self.refused += 1
            raise TritonUnavailable("connection refused (test switch)")
        return await super().infer(rois, values, missing)

    async def is_ready(self):
        self.probes += 1
        return not self.down.is_set()


def test_unavailable_model_server_pauses_commits_nothing_and_resumes(worker_settings, line_t_dataset, model_repo):
    settings = worker_settings(ocr_processes=0, window=32, retry_initial_s=0.05, retry_max_s=0.2)
    server: list[SwitchableServer] = []

    def factory():
        server.append(SwitchableServer(model_repo))
        server[0].down.set()
        return server[0]

    group = f"pause-{uuid.uuid4().hex[:6]}"
    with running_worker(settings, factory, group=group) as worker:
        ids = replay(settings, line_t_dataset, 20, prefix="away-")
        wait_until(lambda: worker.in_flight == 20 and server[0].probes >= 3, 120,
                   "every frame to wait for the server while readiness is probed")
        assert not worker.ready() and server[0].refused >= 1
        assert worker.metrics.registry.get_sample_value("oanet_worker_paused_partitions") == len(worker.assignment) > 0
        assert read_outputs(settings).verdicts == [] and committed_offsets(settings, group) == {}
        server[0].down.clear()
        out = read_outputs(settings, until=lambda o: len(o.verdicts) >= 20)
        wait_until(lambda: sum(committed_offsets(settings, group).values()) == 20, 30, "the commit of all 20")
        assert worker.ready()
    assert out.dead_letters == [] and sorted(v["frame_id"] for v in out.verdicts) == sorted(ids)


# ------------------------------------------------------------------------------------ processes


def _partitions_by_worker(processes) -> list[set[int]] | None:
    found = [p.assignment() for p in processes]
    if any(not a for a in found):
        return None
    union = set().union(*found)
    return found if union == {0, 1, 2} and sum(len(a) for a in found) == 3 else None


def test_two_workers_in_one_group_share_partitions_and_verdict_each_frame_once(worker_settings, line_t_dataset,
                                                                               worker_process):
    settings = worker_settings()
    group = f"pair-{uuid.uuid4().hex[:6]}"
    a = worker_process(settings, group=group)
    b = worker_process(settings, group=group)
    split = wait_until(lambda: _partitions_by_worker([a, b]), 180, "two workers to split three partitions")
    ids = replay(settings, line_t_dataset, 60, prefix="pair-", lines=3)
    out = read_outputs(settings, until=lambda o: len({v["frame_id"] for v in o.verdicts}) >= 60)
    assert sorted(v["frame_id"] for v in out.verdicts) == sorted(ids)  # each once: no duplicates
    assert out.dead_letters == []
    for process, partitions in zip((a, b), split, strict=True):
        mine = [v for v in out.verdicts if v["worker"].endswith(f":{process.pid}")]
        assert mine, "both workers verdicted frames"
        assert {v["source"]["partition"] for v in mine} <= partitions


def test_a_worker_joining_mid_run_gets_partitions_committed_on_revocation(worker_settings, line_t_dataset,
                                                                          worker_process):
    settings = worker_settings()
    group = f"join-{uuid.uuid4().hex[:6]}"
    first = worker_process(settings, group=group, extra=["--window", "6"])
    wait_until(first.assignment, 180, "the first worker's assignment")
    # A camera faster than one worker keeps a backlog while the second one starts and joins.
    camera = concurrent.futures.ThreadPoolExecutor(1).submit(replay, settings, line_t_dataset, 150, "join-", 3, 4.0)
    read_outputs(settings, until=lambda o: len(o.verdicts) >= 8)
    second = worker_process(settings, group=group, extra=["--window", "6"])
    wait_until(lambda: _partitions_by_worker([first, second]), 180, "the two workers to split the partitions")
    ids = camera.result(timeout=120)
    out = read_outputs(settings, until=lambda o: {v["frame_id"] for v in o.verdicts} >= set(ids))
    assert out.dead_letters == [] and {v["frame_id"] for v in out.verdicts} == set(ids)
    for verdicts in out.by_frame().values():  # frames in flight at the rebalance may come twice, alike
        assert all(stable_part(v) == stable_part(verdicts[0]) for v in verdicts)
    events = first.events()
    revoked = next(i for i, e in enumerate(events) if e.get("msg") == "partitions revoked" and e["to_commit"])
    assert any(e.get("msg") == "committed" and e.get("reason") == "revocation" for e in events[revoked:])
    assert not any(e.get("msg") == "commit failed" for e in events)
    assert {v["worker"].rsplit(":", 1)[1] for v in out.verdicts} == {str(first.pid), str(second.pid)}


def test_kill_9_mid_run_then_another_worker_loses_nothing(worker_settings, line_t_dataset, worker_process):
    settings = worker_settings()
    group = f"kill-{uuid.uuid4().hex[:6]}"
    ids = replay(settings, line_t_dataset, 40, prefix="kill-", lines=3)
    first = worker_process(settings, group=group, extra=["--window", "6"])
    read_outputs(settings, until=lambda o: len(o.verdicts) >= 8)
    children = psutil.Process(first.pid).children(recursive=True)
    assert children, "the worker runs its OCR in a child process"
    first.process.kill()
    assert first.wait() == -signal.SIGKILL
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, "OCR processes outlived their SIGKILLed worker"
    worker_process(settings, group=group)
    out = read_outputs(settings, until=lambda o: {v["frame_id"] for v in o.verdicts} >= set(ids))
    assert out.dead_letters == []
    assert {v["frame_id"] for v in out.verdicts} == set(ids)
    for frame_id, verdicts in out.by_frame().items():
        assert all(stable_part(v) == stable_part(verdicts[0]) for v in verdicts), f"{frame_id} differs on replay"


def test_sigterm_drains_and_commits_exactly_what_was_verdicted(worker_settings, line_t_dataset, worker_process):
    settings = worker_settings()
    group = f"term-{uuid.uuid4().hex[:6]}"
    ids = replay(settings, line_t_dataset, 60, prefix="term-", lines=3)
    first = worker_process(settings, group=group, extra=["--window", "6"])
    read_outputs(settings, until=lambda o: len(o.verdicts) >= 8)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0, first.log_tail()
    assert any(e.get("msg") == "drained" and e["abandoned_in_flight"] == 0 for e in first.events())
    out = read_outputs(settings)
    assert 8 <= len(out.verdicts) < len(ids), "stopped mid-run"
    verdicted: dict[int, set[int]] = {}
    for v in out.verdicts:
        verdicted.setdefault(v["source"]["partition"], set()).add(v["source"]["offset"])
    committed = committed_offsets(settings, group)
    for partition in range(3):
        assert verdicted.get(partition, set()) == set(range(committed.get(partition, 0))), partition
    worker_process(settings, group=group)
    out = read_outputs(settings, until=lambda o: len({v["frame_id"] for v in o.verdicts}) >= len(ids))
    assert sorted(v["frame_id"] for v in out.verdicts) == sorted(ids)  # exact commits: nothing twice


def test_worker_command_errors_are_one_line(run_oanet, settings, tmp_path, model_repo):
    cases = [
        (["worker", "--inference", "local", "--repo", str(model_repo), "--bootstrap-servers",
          f"127.0.0.1:{free_port()}"], "no Kafka broker answers"),
        (["worker", "--inference", "local", "--repo", str(tmp_path / "none"), "--bootstrap-servers",
          settings.kafka.bootstrap_servers], "holds no exported model"),
        (["worker", "--inference", "local", "--repo", str(model_repo), "--bootstrap-servers",
          settings.kafka.bootstrap_servers, "--frames-topic", f"absent-{uuid.uuid4().hex[:6]}"], "do not exist"),
        (["worker", "--window", "0"], "worker.window"),
        (["worker", "--inference", "local", "--repo", str(model_repo), "--bootstrap-servers",
          settings.kafka.bootstrap_servers, "--profile", str(DEFAULT_PROFILE_PATH)], "has number fields"),
    ]
    for argv, expected in cases:
        result = run_oanet(*argv, timeout=300)
        err = [line for line in result.stderr.splitlines() if not line.startswith("{")]
        assert result.returncode != 0 and len(err) == 1 and expected in err[0], result.stderr
        assert "Traceback" not in result.stderr


def test_a_frame_produced_by_kcat_gets_a_verdict_kcat_reads_as_json(worker_settings, line_t_dataset, kcat):
    """The acceptance check with Debian's kcat, through the embedded stack's kcat proxy."""
    from deploy.embedded.kcat_proxy import KcatProxy

    settings = worker_settings(ocr_processes=0)
    host, _, port = settings.kafka.bootstrap_servers.rpartition(":")
    proxy = KcatProxy(host, int(port))
    try:
        with running_worker(settings):
            image = line_t_dataset.root / line_t_dataset.entries[3].image
            subprocess.run([kcat, "-P", "-b", proxy.address, "-t", settings.topics.frames, "-H", "frame_id=x1",
                            "-k", "line-a", str(image)], check=True, timeout=60, capture_output=True)
            read_outputs(settings, until=lambda o: len(o.verdicts) + len(o.dead_letters) >= 1)
        out = subprocess.run([kcat, "-C", "-b", proxy.address, "-t", settings.topics.verdicts, "-o", "beginning",
                              "-e", "-q", "-f", "%k\\t%s\\n"], check=True, timeout=60, capture_output=True,
                             text=True).stdout
    finally:
        proxy.close()
    key, value = out.strip().split("\t")
    verdict = json.loads(value)
    verdict_validator().validate(verdict)
    assert key == "x1" and verdict["frame_id"] == "x1" and verdict["line_id"] == "line-a"


def test_a_second_sigint_exits_at_once_without_draining(worker_settings, line_t_dataset, worker_process):
    settings = worker_settings()
    group = f"int-{uuid.uuid4().hex[:6]}"
    replay(settings, line_t_dataset, 60, prefix="int-", lines=3)
    worker = worker_process(settings, group=group, extra=["--window", "32"])
    wait_until(lambda: any(e.get("msg") == "status" and e["in_flight"] >= 20 for e in worker.events()), 180,
               "a full window of frames in flight")
    children = psutil.Process(worker.pid).children(recursive=True)
    worker.signal(signal.SIGINT)
    wait_until(lambda: any(e.get("msg") == "draining" for e in worker.events()), 30, "the drain to start")
    worker.signal(signal.SIGINT)
    assert worker.wait() == 130
    messages = [e.get("msg") for e in worker.events()]
    assert "second interrupt: exiting at once without draining or committing" in messages
    assert "drained" not in messages
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, "OCR processes outlived their worker"
