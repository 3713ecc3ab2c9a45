"""`oanet replay`: frame ids, looping, pacing plan, and what lands on the frames topic."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from kafka import KafkaConsumer

from oanet.contracts import HEADER_CAPTURED_AT, HEADER_FRAME_ID, HEADER_LINE_ID, HEADER_PROFILE
from stream.kafka_clients import consumer_config
from stream.replay import line_ids, manifest_id, plan, replay_frame_id
from stream.topics import create_topics


def test_frame_ids_map_back_to_manifest_ids():
    assert replay_frame_id("f1") == "f1" and replay_frame_id("f1", "run-", 3) == "run-f1@3"
    assert manifest_id("run-f1@3", "run-") == "f1" and manifest_id("run-f1", "run-") == "f1"
    assert manifest_id("f@x", "") == "f@x"  # not a loop suffix
    assert manifest_id("other-f1", "run-") is None


def test_plan_limits_and_loops(line_t_dataset):
    entries = line_t_dataset.entries[:3]
    assert [fid for fid, _ in plan(entries, None, False)] == [e.id for e in entries]
    assert [fid for fid, _ in plan(entries, 2, False)] == [entries[0].id, entries[1].id]
    looped = [fid for fid, _ in plan(entries, 7, True, "p-")]
    assert looped[:4] == [f"p-{entries[0].id}", f"p-{entries[1].id}", f"p-{entries[2].id}", f"p-{entries[0].id}@1"]
    assert looped[-1] == f"p-{entries[0].id}@2" and len(set(looped)) == 7
    assert list(plan([], 5, True)) == []


def test_line_ids_spread_over_partitions_as_the_producer_sends_them():
    from kafka.partitioner.default import murmur2

    def partition(name: str, n: int) -> int:
        return (murmur2(name.encode()) & 0x7FFFFFFF) % n

    six = line_ids("line-a", 6, 6)
    assert sorted(partition(n, 6) for n in six) == [0, 1, 2, 3, 4, 5] and line_ids("line-a", 6, 6) == six
    assert [partition(n, 6) for n in line_ids("line-a", 2, 6)] == [0, 3]  # one per half: two workers
    assert [partition(n, 2) for n in line_ids("x", 5, 2)] == [0, 1, 0, 1, 0]
    assert all(n.startswith("line-a-") for n in six)


def _consume_all(settings, count: int) -> list:
    consumer = KafkaConsumer(settings.topics.frames, **consumer_config(settings, f"{settings.topics.frames}-check"))
    records, deadline = [], time.monotonic() + 120
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
    finally:
        consumer.close(autocommit=False)
    return records


@pytest.mark.slow
def test_replay_command_produces_frames_like_a_camera(unique_topics, run_oanet, line_t_dataset):
    s = unique_topics
    env = {"OANET_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers, "OANET_TOPICS__FRAMES": s.topics.frames}
    missing = run_oanet("replay", "--data", str(line_t_dataset.root), "--limit", "2", env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    create_topics(s.kafka, s.topics)
    before = dt.datetime.now(dt.timezone.utc)
    result = run_oanet("replay", "--data", str(line_t_dataset.root), "--limit", "130", "--loop", "--id-prefix",
                       "cam-", "--rate", "200", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert "replayed 130 frames" in result.stdout
    records = _consume_all(s, 130)
    ids = sorted(dict(r.headers)[HEADER_FRAME_ID].decode() for r in records)
    assert len(ids) == 130 and len(set(ids)) == 130 and "cam-f000000@1" in ids
    by_id = {e.id: e for e in line_t_dataset.entries}
    for r in records:
        headers = dict(r.headers)
        frame_id = headers[HEADER_FRAME_ID].decode()
        entry = by_id[manifest_id(frame_id, "cam-")]
        assert r.value == line_t_dataset.read_bytes(entry)
        assert r.key == b"line-t" and headers[HEADER_LINE_ID] == b"line-t" and headers[HEADER_PROFILE] == b"line-t"
        assert dt.datetime.fromisoformat(headers[HEADER_CAPTURED_AT].decode()) >= before
    spread = run_oanet("replay", "--data", str(line_t_dataset.root), "--limit", "6", "--lines", "3", "--id-prefix",
                       "lines-", "--quiet", env=env)
    assert spread.returncode == 0, spread.stderr
    played = [r for r in _consume_all(s, 136) if dict(r.headers)[HEADER_FRAME_ID].startswith(b"lines-")]
    assert {r.key for r in played} == {dict(r.headers)[HEADER_LINE_ID] for r in played} == {
        n.encode() for n in line_ids("line-t", 3, 3)}
    assert len({r.partition for r in played}) == 3
    bad = run_oanet("replay", "--data", str(line_t_dataset.root), "--rate", "-1", env=env)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("--rate must be >= 0 frames/s, got -1.0")
