"""The worker against the embedded stack (the real broker and the real tritonserver serving the
exported test model): verdicts out, every dead letter (Triton's own INVALID_ARG included),
Triton stopped and started mid-run, Triton back with another version, consumer-group sharing,
kill -9, graceful SIGTERM, kcat.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
import uuid

import numpy as np
import psutil
import pytest

from bench.chaos_frames import record_size
from oanet.contracts import (
    HEADER_CAPTURED_AT,
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_STAGE,
    HEADER_FRAME_ID,
    HEADER_ORIGINAL_NULL,
    HEADER_ORIGINAL_SHA256,
    HEADER_ORIGINAL_SIZE,
    HEADER_PROFILE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    MIB,
    DeadLetterCode,
)
from deploy.embedded.stack import TRITON, free_port
from oanet.profile import DEFAULT_PROFILE_PATH
from stream.schemas import verdict_validator
from stream.triton_client import TritonClient
from stream.worker.errors import WorkerError
from stream.worker.logs import JsonFormatter
from stream.worker.messages import stable_part
from tests.stream.worker import faulty_ocr
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
    # the same image (played by the three lines) gets the same verdict, whatever batch Triton ran it in
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
    # Every field line of every verdict, by the engine that read it (PaddleOCR here: no student).
    read = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines() if line.startswith("oanet_worker_ocr_fields_total{")}
    assert sum(read.values()) == 300 * 3
    assert sum(n for labels, n in read.items() if 'field="temp"' in labels) == 300
    assert all('engine="student"' not in labels for labels in read)


# ------------------------------------------------------------------------------------ dead letters


# The fusion model of `poisoned_repo` raises for a request whose first parameter value is this.
POISON = -4242.0
POISON_PATCH = f"""

# --- test only: a model that raises for one marked input (tests/stream/worker/test_worker.py)
_unpoisoned = TritonPythonModel._predict


def _poisoned(self, arrays):
    if (arrays[core.PARAM_VALUES][:, 0] == {POISON!r}).any():
        raise RuntimeError("poisoned input")
    return _unpoisoned(self, arrays)


TritonPythonModel._predict = _poisoned
"""


@pytest.fixture(scope="module")
def poisoned_repo(model_repo, tmp_path_factory):
    """A copy of the test repository whose fusion model raises (INTERNAL) on a POISON value,
    with its manifest updated (what a bad model release looks like to Triton)."""
    from triton_models.oanet_fusion import core, integrity

    repo = tmp_path_factory.mktemp("poisoned") / "repo"
    shutil.copytree(model_repo, repo)
    folder = repo / core.FUSION_MODEL / "1"
    model = folder / "model.py"
    model.write_text(model.read_text() + POISON_PATCH)
    manifest = json.loads((folder / core.MANIFEST_FILE).read_text())
    manifest["files"][f"{core.FUSION_MODEL}/1/model.py"] = integrity.sha256_file(model)
    (folder / core.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return repo


class MalformBlackObjects(TritonClient):
    """The product's Triton client, with one deliberate fault per marked frame.

    A frame whose object is all black is sent to Triton for real, with an infinite parameter
    value: the served fusion model answers INVALID_ARG for that request alone, and the client
    maps it to InferenceRejected. (A frame's OCR cannot yield an infinity, so the request is
    malformed here, after OCR.) A mid-gray object is sent with the POISON value, which makes the
    served (poisoned) fusion model raise for real. A white object meets a bug in this wrapper
    (internal_error).
    """

    async def infer(self, rois, values, missing):
        marked = {0: np.inf, 128: POISON}.get(int(rois.max())) if int(rois.min()) == int(rois.max()) else None
        if marked is not None:
            values, missing = values.copy(), missing.copy()
            values[:, 0], missing[:, 0] = marked, False
        if int(rois.min()) == 255:
            raise ZeroDivisionError("a bug this frame meets")
        return await super().infer(rois, values, missing)


def test_every_dead_letter_code_with_original_bytes_and_headers(worker_settings, line_t_dataset, caplog,
                                                                restartable_stack, poisoned_repo):
    settings = worker_settings(stack=restartable_stack, ocr_processes=0, required_headers=("frame_id", "captured_at"),
                               topics={"max_frame_bytes": 1 * MIB}, inference_fault_attempts=2)
    good = line_t_dataset.read_bytes(line_t_dataset.entries[0])
    black = line_t_dataset.read_image(line_t_dataset.entries[0])
    x, y, w, h = line_t_dataset.profile.object_roi
    black[y:y + h, x:x + w] = 0
    white, gray = black.copy(), black.copy()
    white[y:y + h, x:x + w] = 255
    gray[y:y + h, x:x + w] = 128
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
        "gray-object": (png(gray), DeadLetterCode.INFERENCE_FAILED),  # the served model raises on it
        "null": (None, DeadLetterCode.EMPTY_FRAME),  # no value and no key: a dead letter needs one of them
        "near-limit": (b"", DeadLetterCode.FRAME_TOO_LARGE),  # sized below: within 500 bytes of the topic limit
        "good-2": (good, None),
    }
    frames = []
    for frame_id, (value, _) in cases.items():
        headers = [(HEADER_FRAME_ID, frame_id.encode()), (HEADER_CAPTURED_AT, _now()), ("camera", b"cam-7\x00\x01")]
        if frame_id == "unknown-profile":
            headers.append((HEADER_PROFILE, b"line-z"))
        if frame_id == "malformed-time":
            headers[1] = (HEADER_CAPTURED_AT, b"half past ten")
        if frame_id == "near-limit":
            room = settings.topics.max_message_bytes - 400 - record_size(b"line-t", b"", headers)
            value = cases[frame_id] = (np.random.default_rng(1).bytes(room), DeadLetterCode.FRAME_TOO_LARGE)
            value = value[0]
            assert 0 < settings.topics.max_message_bytes - record_size(b"line-t", value, headers) <= 500
        frames.append((value, headers, None) if value is None else (value, headers))
    frames.append((good, [(HEADER_CAPTURED_AT, _now())]))  # no frame_id: missing_header
    expected_codes = {fid: code for fid, (_, code) in cases.items() if code}

    group = f"codes-{uuid.uuid4().hex[:6]}"
    try:
        restartable_stack.stop_service(TRITON)
        restartable_stack.start_service(TRITON, poisoned_repo)
        with running_worker(settings, lambda: MalformBlackObjects(settings.triton), group=group) as worker:
            produce(settings, frames)
            out = read_outputs(settings, until=lambda o: len(o.verdicts) + len(o.dead_letters) >= len(frames))
            counted = {code: worker.metrics.registry.get_sample_value("oanet_worker_dead_letters_total",
                                                                      {"code": code})
                       for code in DeadLetterCode.ALL}
            # every frame ended: the partition commits past all of them (the null record included)
            wait_until(lambda: sum(committed_offsets(settings, group).values()) == len(frames), 60, "every commit")
            faults = worker.metrics.registry.get_sample_value("oanet_worker_inference_faults_total")
            assert worker.ready()
    finally:
        restartable_stack.stop_service(TRITON)
        _triton_serving(restartable_stack)
    assert sorted(v["frame_id"] for v in out.verdicts) == ["good-1", "good-2"]  # the worker kept going
    assert len(out.dead_letters) == len(frames) - 2
    sent = {dict(f[1]).get(HEADER_FRAME_ID, b"").decode(): f[:2] for f in frames}
    seen = {}
    for record in out.dead_letters:
        headers = list(record.headers)
        extra = dict(headers)
        frame_id = extra.get(HEADER_FRAME_ID, b"").decode()
        code = extra[HEADER_ERROR_CODE].decode()
        seen[frame_id] = code
        value, original = sent[frame_id]
        assert [tuple(h) for h in headers[: len(original)]] == [tuple(h) for h in original], frame_id
        if frame_id == "null":  # the one record without key and value: an empty value that says so
            assert record.key is None and record.value == b"" and extra[HEADER_ORIGINAL_NULL] == b"value"
            continue
        assert record.key == b"line-t"
        if frame_id == "near-limit":  # the dead letter fits the topic: truncated, and it says so
            assert record_size(record.key, record.value, headers) <= settings.topics.max_message_bytes
            assert value.startswith(record.value) and len(record.value) < len(value)
            assert extra[HEADER_ORIGINAL_SIZE] == str(len(value)).encode()
            assert extra[HEADER_ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest().encode()
            continue
        assert record.value == value, frame_id  # the original bytes, untouched
        assert HEADER_ORIGINAL_SIZE not in extra
        assert extra[HEADER_SOURCE_TOPIC] == settings.topics.frames.encode()
        assert int(extra[HEADER_SOURCE_PARTITION]) in range(3) and int(extra[HEADER_SOURCE_OFFSET]) >= 0
        assert extra[HEADER_ERROR_STAGE] in (b"headers", b"decode", b"ocr", b"inference")
    assert seen == {**expected_codes, "": DeadLetterCode.MISSING_HEADER}
    assert set(seen.values()) == set(DeadLetterCode.ALL)
    assert sum(v or 0 for v in counted.values()) == len(frames) - 2
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "dead letter"]
    assert {(e["frame_id"], e["code"]) for e in logged} >= {("truncated", "truncated_image"), ("bomb", "too_many_pixels")}
    rejected = next(r for r in out.dead_letters if dict(r.headers).get(HEADER_FRAME_ID) == b"black-object")
    assert b"is infinite" in dict(rejected.headers)[HEADER_ERROR_MESSAGE]  # Triton's own reason
    failed = dict(next(r for r in out.dead_letters if dict(r.headers).get(HEADER_FRAME_ID) == b"gray-object").headers)
    assert b"alone 2 time(s)" in failed[HEADER_ERROR_MESSAGE] and b"poisoned input" in failed[HEADER_ERROR_MESSAGE]
    assert 3 <= faults <= 3 + len(frames)  # in its batch (maybe with innocent ones), then alone twice, never forever


def _ocr_fault_run(worker_settings, line_t_dataset, fault: bytes, processes: int, **worker):
    """Good frames around one that crashes or hangs the OCR (`fault`): the dead letter's message."""
    port = free_port()
    settings = worker_settings(ocr_processes=processes, window=8, metrics_port=port, metrics_host="127.0.0.1",
                               **worker)
    good = [line_t_dataset.read_bytes(e) for e in line_t_dataset.entries[:3]]
    frames = [(good[i % 3], [(HEADER_FRAME_ID, f"good-{i}".encode())]) for i in range(6)]
    frames.insert(2, (faulty_ocr.mark(good[0], fault), [(HEADER_FRAME_ID, b"bad")]))
    group = f"ocr-fault-{uuid.uuid4().hex[:6]}"
    with running_worker(settings, group=group, ocr_stage_fn=faulty_ocr.read_frame) as worker:
        produce(settings, frames)
        oldest = lambda: worker.metrics.registry.get_sample_value("oanet_worker_oldest_in_flight_seconds")  # noqa: E731
        # a frame in flight past worker.frame_deadline_s: /ready is 503 until it ends
        wait_until(lambda: oldest() > settings.worker.frame_deadline_s and _http_status(port, "/ready") == 503,
                   300, "/ready to turn 503")
        out = read_outputs(settings, until=lambda o: len(o.verdicts) + len(o.dead_letters) >= len(frames),
                           timeout_s=500)
        wait_until(lambda: sum(committed_offsets(settings, group).values()) == len(frames), 60, "every commit")
        assert oldest() == 0 and _http_status(port, "/ready") == 200
        restarts = worker.metrics.registry.get_sample_value("oanet_worker_ocr_restarts_total")
    assert sorted(v["frame_id"] for v in out.verdicts) == sorted(f"good-{i}" for i in range(6))  # none charged
    [letter] = out.dead_letters
    headers = dict(letter.headers)
    assert headers[HEADER_FRAME_ID] == b"bad" and headers[HEADER_ERROR_CODE] == b"internal_error"
    assert headers[HEADER_ERROR_STAGE] == b"ocr" and b"on this frame alone, 2 times" in headers[HEADER_ERROR_MESSAGE]
    assert restarts >= 3  # among others first, then alone twice (a slow innocent frame may add one)
    return headers[HEADER_ERROR_MESSAGE]


def test_a_frame_that_hangs_ocr_alone_twice_is_dead_lettered_and_its_pool_neighbours_pass(worker_settings,
                                                                                           line_t_dataset):
    # Two processes: the frame beside the hung one dies with the restarted pool, is retried alone, passes.
    message = _ocr_fault_run(worker_settings, line_t_dataset, faulty_ocr.HANG, 2, ocr_timeout_s=10,
                             frame_deadline_s=5)
    assert b"did not finish within 10 s" in message


def test_a_frame_that_crashes_ocr_alone_twice_is_dead_lettered(worker_settings, line_t_dataset):
    message = _ocr_fault_run(worker_settings, line_t_dataset, faulty_ocr.CRASH, 1, frame_deadline_s=2)
    assert b"an OCR process died" in message


# ------------------------------------------------------------------------------------ server away


@pytest.fixture(scope="module")
def restartable_stack(worker_stack_factory):
    """A stack of its own whose Triton the tests stop and start (the shared one stays up)."""
    with worker_stack_factory() as stack:
        yield stack


def _triton_serving(stack) -> None:
    """Triton of `stack` up again (with its configured repository), whatever a test left."""
    if not next(status.running for status in stack.status() if status.name == TRITON):
        stack.start_service(TRITON)


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _verdicted_offsets(verdicts) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for v in verdicts:
        found.setdefault(v["source"]["partition"], set()).add(v["source"]["offset"])
    return found


def test_triton_stopped_mid_run_pauses_commits_nothing_unverdicted_and_resumes(worker_settings, line_t_dataset,
                                                                               restartable_stack):
    port = free_port()
    settings = worker_settings(stack=restartable_stack, ocr_processes=0, window=16, metrics_port=port,
                               metrics_host="127.0.0.1")
    group = f"restart-{uuid.uuid4().hex[:6]}"
    try:
        with running_worker(settings, group=group) as worker:
            ids = replay(settings, line_t_dataset, 60, prefix="restart-", lines=3)
            read_outputs(settings, until=lambda o: len(o.verdicts) >= 10)
            assert restartable_stack.stop_service(TRITON)
            wait_until(lambda: not worker.ready() and worker.in_flight > 0, 120,
                       "the worker to notice that Triton is gone, with frames waiting for it")
            paused = worker.metrics.registry.get_sample_value("oanet_worker_paused_partitions")
            assert paused == len(worker.assignment) > 0
            assert worker.metrics.registry.get_sample_value("oanet_worker_inference_available") == 0
            assert _http_status(port, "/ready") == 503 and _http_status(port, "/live") == 200
            during = read_outputs(settings)
            verdicted = _verdicted_offsets(during.verdicts)
            for partition, offset in committed_offsets(settings, group).items():
                assert set(range(offset)) <= verdicted.get(partition, set()), "committed a frame without a verdict"
            restartable_stack.start_service(TRITON)
            out = read_outputs(settings, until=lambda o: {v["frame_id"] for v in o.verdicts} >= set(ids))
            wait_until(lambda: sum(committed_offsets(settings, group).values()) == 60, 60, "the commit of all 60")
            assert worker.ready() and _http_status(port, "/ready") == 200
    finally:
        _triton_serving(restartable_stack)
    assert out.dead_letters == [] and len(during.dead_letters) == 0
    assert sorted(v["frame_id"] for v in out.verdicts) == sorted(ids)  # each once: nothing lost, nothing twice
    assert worker.metrics.registry.get_sample_value("oanet_worker_inference_retries_total") >= 1


def test_triton_back_with_another_version_stops_the_worker_without_verdicting_for_it(
        worker_settings, line_t_dataset, restartable_stack, model_repo, tmp_path):
    from training.export import export_run

    newer = tmp_path / "repo"
    shutil.copytree(model_repo, newer)
    assert export_run(model_repo.parent / "run", newer)[0] == 2
    settings = worker_settings(stack=restartable_stack, ocr_processes=0, window=8)
    group = f"version-{uuid.uuid4().hex[:6]}"
    try:
        with pytest.raises(WorkerError, match="came back with oanet version 2 .* started for version 1"):
            with running_worker(settings, group=group) as worker:
                ids = replay(settings, line_t_dataset, 40, prefix="version-")
                read_outputs(settings, until=lambda o: len(o.verdicts) >= 5)
                restartable_stack.stop_service(TRITON)
                restartable_stack.start_service(TRITON, newer)
                wait_until(lambda: worker.stopping, 120, "the worker to refuse the new version")
    finally:
        restartable_stack.stop_service(TRITON)
        _triton_serving(restartable_stack)  # version 1 again, for the next test
    out = read_outputs(settings)
    assert {v["model"]["version"] for v in out.verdicts} == {"1"} and out.dead_letters == []
    assert len(out.verdicts) < len(ids)
    verdicted = _verdicted_offsets(out.verdicts)
    for partition, offset in committed_offsets(settings, group).items():
        assert set(range(offset)) <= verdicted.get(partition, set())


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
    # No interval commit in this test's time: what the first worker verdicted before the
    # rebalance reaches the group's offsets through the revocation commit or not at all.
    patient = settings.model_copy(update={"worker": settings.worker.model_copy(update={"commit_interval_s": 3600})})
    group = f"join-{uuid.uuid4().hex[:6]}"
    first = worker_process(patient, group=group, extra=["--window", "6"])
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
    revoked = next(i for i, e in enumerate(events) if e.get("msg") == "partitions revoked")
    handed_back = events[revoked]["to_commit"]
    assert handed_back, "the first worker had acknowledged verdicts when the second one joined"
    assert any(e.get("msg") == "committed" and e.get("reason") == "revocation" for e in events[revoked:])
    assert not any(e.get("msg") == "commit failed" for e in events)
    # Below the committed positions, no frame is verdicted again by whoever owns the partition next.
    for verdicts in out.by_frame().values():
        source = verdicts[0]["source"]
        position = handed_back.get(f"{source['topic']}[{source['partition']}]")
        if position is not None and source["offset"] < position:
            assert len(verdicts) == 1, f"{verdicts[0]['frame_id']} verdicted again after its offset was committed"
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
    at_kill = {v["frame_id"] for v in read_outputs(settings).verdicts}
    assert 8 <= len(at_kill) < len(ids), "the kill landed mid-run"
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, "OCR processes outlived their SIGKILLed worker"
    second = worker_process(settings, group=group)
    out = read_outputs(settings, until=lambda o: {v["frame_id"] for v in o.verdicts} >= set(ids))
    assert out.dead_letters == []
    assert {v["frame_id"] for v in out.verdicts} == set(ids)
    by_second = {v["frame_id"] for v in out.verdicts if v["worker"].endswith(f":{second.pid}")}
    assert set(ids) - at_kill <= by_second, "the second worker verdicted what the first left"
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


def test_worker_command_errors_are_one_line(run_oanet, worker_settings, tmp_path, model_repo):
    s = worker_settings()
    broker, triton = ["--bootstrap-servers", s.kafka.bootstrap_servers], ["--triton-url", s.triton.url]
    topics = ["--frames-topic", s.topics.frames, "--verdicts-topic", s.topics.verdicts,
              "--dead-letter-topic", s.topics.dead_letter]
    quick = {"OANET_WORKER__STARTUP_TIMEOUT_S": "3", "OANET_TRITON__RETRY_ATTEMPTS": "0"}  # Triton away: say so soon
    cases = [
        (["--bootstrap-servers", f"127.0.0.1:{free_port()}"], "no Kafka broker answers", None),
        ([*broker, "--triton-url", f"127.0.0.1:{free_port()}", "--repo", str(model_repo)],
         "the model server at 127.0.0.1:", quick),
        ([*broker, *triton, "--repo", str(model_repo), "--frames-topic", f"absent-{uuid.uuid4().hex[:6]}"],
         "do not exist", None),
        (["--window", "0"], "worker.window", None),
        ([*broker, *triton, *topics, "--profile", str(DEFAULT_PROFILE_PATH)], "has number fields", None),
        ([*broker, *topics, "--inference", "local", "--repo", str(tmp_path / "none")], "holds no exported model",
         None),
    ]
    for argv, expected, env in cases:
        result = run_oanet("worker", *argv, env=env, timeout=300)
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
    before = committed_offsets(settings, group)  # no commit between the drain's start and its end
    worker.signal(signal.SIGINT)
    assert worker.wait() == 130
    assert committed_offsets(settings, group) == before, "committed offsets moved after the second interrupt"
    messages = [e.get("msg") for e in worker.events()]
    assert "second interrupt: exiting at once without draining or committing" in messages
    assert "drained" not in messages
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, "OCR processes outlived their worker"
