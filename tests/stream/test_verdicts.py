"""`oanet verdicts`: summary and scoring against a manifest, from the real topics."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from oanet.contracts import HEADER_ERROR_CODE, HEADER_FRAME_ID
from stream.kafka_clients import producer_config
from stream.topics import create_topics
from stream.verdicts import Tally, score, summary


def message(frame_id: str, verdict: str, p: float = 0.5, total_ms: float = 10.0, **extra) -> dict:
    return {"schema": "oanet.verdict.v1", "frame_id": frame_id, "verdict": verdict, "defect_probability": p,
            "timings_ms": {"total": total_ms}, "captured_at": "2026-11-22T10:00:00.000Z",
            "processed_at": "2026-11-22T10:00:00.250Z", "worker": "h:1", **extra}


def tally_of(messages, dead=()) -> Tally:
    t = Tally()
    for m in messages:
        t.add_verdict(json.dumps(m).encode())
    for frame_id, code in dead:
        t.add_dead_letter([(HEADER_FRAME_ID, frame_id.encode()), (HEADER_ERROR_CODE, code.encode())], "x")
    return t


def test_score_counts_confusion_kinds_missing_and_duplicates(line_t_dataset):
    entries = line_t_dataset.entries[:12]
    defects = [e for e in entries if e.label == 1]
    clean = [e for e in entries if e.label == 0]
    assert defects and len(clean) >= 4
    msgs = [message(f"r-{e.id}", "defect") for e in defects[:-1]]  # one defect missed below
    msgs.append(message(f"r-{defects[-1].id}", "pass"))
    msgs += [message(f"r-{e.id}", "pass") for e in clean[1:-2]]
    msgs.append(message(f"r-{clean[1].id}", "pass", worker="h:2"))  # identical duplicate (volatile field differs)
    msgs.append(message(f"r-{clean[-2].id}", "defect"))  # false positive
    msgs.append(message(f"r-{clean[-2].id}@1", "defect"))  # the same frame replayed in a second loop
    msgs.append(message("r-f999999", "pass"))  # not in the manifest
    tally = tally_of(msgs, dead=[(f"r-{clean[0].id}", "truncated_image")])
    tally.add_verdict(b"not json")
    result = score(tally, entries, "r-")
    tn, fp, fn, tp = len(clean) - 3, 2, 1, len(defects) - 1  # clean[0] dead, clean[-1] missing
    assert result["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert result["precision"] == round(tp / (tp + fp), 4) and result["recall"] == round(tp / (tp + fn), 4)
    assert result["accuracy"] == round((tp + tn) / (tp + tn + fp + fn), 4)
    assert result["missing_verdicts"] == 1 and result["missing_ids"] == [clean[-1].id]
    assert result["dead_lettered"] == 1 and result["unknown_frame_ids"] == 1
    assert result["per_defect_kind"]["none"]["flagged"] == 2
    s = summary(tally)
    assert s["duplicates"] == 1 and s["conflicting_duplicates"] == 0 and s["undecodable_messages"] == 1
    assert s["dead_letters_by_code"] == {"truncated_image": 1}
    assert s["latency_ms"]["end_to_end_p50"] == 250.0
    conflicting = tally_of([message("a", "pass"), message("a", "defect")])
    assert summary(conflicting)["conflicting_duplicates"] == 1


@pytest.mark.slow
def test_verdicts_command_reads_and_scores(unique_topics, run_oanet, line_t_dataset):
    s = unique_topics
    create_topics(s.kafka, s.topics)
    entries = line_t_dataset.entries[:10]
    producer = KafkaProducer(**producer_config(s))
    try:
        for e in entries[:9]:
            producer.send(s.topics.verdicts, json.dumps(message(e.id, "defect" if e.label else "pass")).encode(),
                          key=e.id.encode())
        producer.send(s.topics.dead_letter, b"\x89PNG", headers=[(HEADER_FRAME_ID, entries[9].id.encode()),
                                                                (HEADER_ERROR_CODE, b"truncated_image")])
        producer.flush()
    finally:
        producer.close()
    env = {"OANET_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers, "OANET_TOPICS__VERDICTS": s.topics.verdicts,
           "OANET_TOPICS__DEAD_LETTER": s.topics.dead_letter}
    result = run_oanet("verdicts", "--data", str(line_t_dataset.root), "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["frames_with_verdict"] == 9 and report["summary"]["dead_letters"] == 1
    scored = report["score"]
    assert scored["accuracy"] == 1.0 and scored["scored"] == 9 and scored["dead_lettered"] == 1
    assert scored["missing_verdicts"] == len(line_t_dataset.entries) - 10
    text = run_oanet("verdicts", "--expect", "10", "--timeout", "60", env=env)
    assert text.returncode == 0 and "frames with a verdict: 9" in text.stdout and "truncated_image 1" in text.stdout
