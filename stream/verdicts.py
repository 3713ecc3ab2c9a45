"""`oanet verdicts`: read the verdicts topic, summarise it, score it against a dataset.

Reading uses manual assignment of every partition from the beginning (no consumer group, no
commits): it never disturbs the workers' groups and always sees the whole topic. Without
`--follow` it stops at the end offsets found at start; with it, it prints a live summary line
every few seconds until interrupted (or until `--expect N` frame ids have a verdict).

Scoring (`--data DIR`) maps each verdict's frame id back to its manifest line
(`oanet replay` ids: optional prefix, `@N` per loop) and reports accuracy, precision, recall,
per-defect-kind recall, frames without a verdict (dead-lettered or missing) and duplicates
(identical or conflicting).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oanet.contracts import HEADER_ERROR_CODE, HEADER_FRAME_ID
from oanet.dataset import ManifestEntry
from oanet.settings import Settings
from stream.errors import StreamError
from stream.replay import manifest_id
from stream.stats import percentile


@dataclass
class Tally:
    """Verdict and dead-letter messages seen so far, by frame id."""

    verdicts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    undecodable: int = 0  # verdict messages that are not JSON objects

    def add_verdict(self, value: bytes | None) -> None:
        try:
            message = json.loads(value or b"")
        except ValueError:
            self.undecodable += 1
            return
        if not isinstance(message, dict) or not isinstance(message.get("frame_id"), str):
            self.undecodable += 1
            return
        self.verdicts[message["frame_id"]].append(message)

    def add_dead_letter(self, headers: Iterable[tuple[str, bytes]], fallback_id: str) -> None:
        found = dict(headers or ())
        frame_id = found.get(HEADER_FRAME_ID, b"").decode("utf-8", "replace") or fallback_id
        code = found.get(HEADER_ERROR_CODE, b"").decode("utf-8", "replace") or "unknown"
        self.dead_letters[frame_id].append(code)

    @property
    def messages(self) -> int:
        return sum(len(v) for v in self.verdicts.values())


def _first(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return messages[0]


def duplicates(tally: Tally) -> tuple[int, int]:
    """(frame ids with several verdicts, of which conflicting: different stable content)."""
    from stream.worker.messages import stable_part

    several = conflicting = 0
    for messages in tally.verdicts.values():
        if len(messages) > 1:
            several += 1
            first = stable_part(messages[0])
            conflicting += any(stable_part(m) != first for m in messages[1:])
    return several, conflicting


def latency_ms(tally: Tally) -> dict[str, float | None]:
    """p50/p99 of the worker's time per frame and of capture-to-verdict, over first verdicts."""
    import datetime as dt

    totals, e2e = [], []
    for messages in tally.verdicts.values():
        m = _first(messages)
        total = (m.get("timings_ms") or {}).get("total")
        if isinstance(total, (int, float)):
            totals.append(float(total))
        if m.get("captured_at") and m.get("processed_at"):
            try:
                delta = dt.datetime.fromisoformat(m["processed_at"]) - dt.datetime.fromisoformat(m["captured_at"])
                e2e.append(delta.total_seconds() * 1000)
            except ValueError:
                pass

    def pct(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value, 1)

    return {"worker_p50": pct(totals, 50), "worker_p99": pct(totals, 99),
            "end_to_end_p50": pct(e2e, 50), "end_to_end_p99": pct(e2e, 99)}


def stage_medians_ms(tally: Tally) -> dict[str, float]:
    """Median of each `timings_ms` entry (queue, decode, ocr, inference...) over first verdicts."""
    values: dict[str, list[float]] = defaultdict(list)
    for messages in tally.verdicts.values():
        for stage, ms in (_first(messages).get("timings_ms") or {}).items():
            if isinstance(ms, (int, float)):
                values[stage].append(float(ms))
    return {stage: round(float(np.median(v)), 1) for stage, v in values.items()}


def summary(tally: Tally) -> dict[str, Any]:
    outcomes = Counter(_first(m).get("verdict") for m in tally.verdicts.values())
    codes = Counter(code for codes in tally.dead_letters.values() for code in codes)
    several, conflicting = duplicates(tally)
    return {
        "frames_with_verdict": len(tally.verdicts),
        "verdict_messages": tally.messages,
        "pass": outcomes.get("pass", 0),
        "defect": outcomes.get("defect", 0),
        "dead_letters": sum(codes.values()),
        "dead_letters_by_code": dict(sorted(codes.items())),
        "duplicates": several,
        "conflicting_duplicates": conflicting,
        "undecodable_messages": tally.undecodable,
        "latency_ms": latency_ms(tally),
        "stage_medians_ms": stage_medians_ms(tally),
    }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def score(tally: Tally, entries: Sequence[ManifestEntry], prefix: str = "") -> dict[str, Any]:
    """Verdicts against the manifest labels of `entries` (the frames that were replayed)."""
    by_id = {e.id: e for e in entries}
    judged: dict[str, list[str]] = defaultdict(list)  # manifest id -> first verdict of each replayed frame id
    unknown = 0
    for frame_id, messages in tally.verdicts.items():
        base = manifest_id(frame_id, prefix)
        if base is None or base not in by_id:
            unknown += 1
            continue
        judged[base].append(_first(messages).get("verdict"))
    dead = {manifest_id(fid, prefix) for fid in tally.dead_letters}
    tp = fp = tn = fn = 0
    kinds: dict[str, Counter] = defaultdict(Counter)
    for base, verdicts in judged.items():
        entry = by_id[base]
        for verdict in verdicts:
            flagged = verdict == "defect"
            if entry.label == 1:
                tp += flagged
                fn += not flagged
            else:
                fp += flagged
                tn += not flagged
            kinds[entry.defect]["frames"] += 1
            kinds[entry.defect]["defect"] += flagged
    missing = [e.id for e in entries if e.id not in judged and e.id not in dead]
    per_kind = {
        kind: {"frames": c["frames"], "flagged": c["defect"], "flag_rate": _ratio(c["defect"], c["frames"])}
        for kind, c in sorted(kinds.items())
    }
    total = tp + fp + tn + fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = round(2 * precision * recall / (precision + recall), 4) if precision and recall else None
    return {
        "expected_frames": len(entries),
        "scored": total,
        "accuracy": _ratio(tp + tn, total),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "per_defect_kind": per_kind,
        "missing_verdicts": len(missing),
        "missing_ids": missing[:20],
        "dead_lettered": sum(1 for e in entries if e.id in dead and e.id not in judged),
        "unknown_frame_ids": unknown,
    }


def read_topics(settings: Settings, topics: Sequence[str], *, follow: bool, poll_ms: int = 500) -> Iterator[list]:
    """Batches of records of `topics` from the beginning; without `follow`, up to the end
    offsets found at start. An empty batch is yielded on every idle poll (for live output)."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from stream.kafka_clients import any_reachable, consumer_config

    if not any_reachable(settings.kafka.client_kwargs()["bootstrap_servers"]):
        raise StreamError(f"no Kafka broker answers at {settings.kafka.bootstrap_servers} (is the stack up?)")
    consumer = KafkaConsumer(**consumer_config(settings, None))
    try:
        tps = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise StreamError(f"topic {topic} does not exist; create it with `oanet topics create`")
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while True:
            records = [r for batch in consumer.poll(timeout_ms=poll_ms).values() for r in batch]
            yield records
            if not follow and all(consumer.position(tp) >= end[tp] for tp in tps):
                return
    finally:
        consumer.close(autocommit=False)


def collect(settings: Settings, *, follow: bool = False, expect: int | None = None, timeout_s: float | None = None,
            on_progress=None, progress_every_s: float = 5.0) -> Tally:
    """Read verdicts and dead letters into a Tally (see `read_topics`)."""
    topics = settings.topics
    tally = Tally()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    next_progress = time.monotonic() + progress_every_s
    try:
        for records in read_topics(settings, [topics.verdicts, topics.dead_letter], follow=follow or expect is not None):
            for r in records:
                if r.topic == topics.verdicts:
                    tally.add_verdict(r.value)
                else:
                    tally.add_dead_letter(r.headers, f"{r.topic}-{r.partition}-{r.offset}")
            now = time.monotonic()
            if on_progress is not None and now >= next_progress:
                on_progress(tally)
                next_progress = now + progress_every_s
            if expect is not None and len(tally.verdicts) + len(tally.dead_letters) >= expect:
                break
            if deadline is not None and now >= deadline:
                break
    except KeyboardInterrupt:
        if not follow:
            raise  # a one-shot read that was cut short has no meaningful summary
    return tally


def live_line(tally: Tally, started: float) -> str:
    s = summary(tally)
    rate = s["frames_with_verdict"] / max(1e-9, time.monotonic() - started)
    lat = s["latency_ms"]
    return (f"verdicts {s['frames_with_verdict']} (pass {s['pass']}, defect {s['defect']}), dead letters "
            f"{s['dead_letters']}, duplicates {s['duplicates']}, {rate:.1f}/s, worker p50 {lat['worker_p50']} ms")


def print_report(report: dict[str, Any], out=sys.stdout) -> None:
    s = report["summary"]
    lat = s["latency_ms"]
    print(f"frames with a verdict: {s['frames_with_verdict']} ({s['verdict_messages']} messages; pass {s['pass']}, "
          f"defect {s['defect']})", file=out)
    print(f"duplicates: {s['duplicates']} frame ids ({s['conflicting_duplicates']} with differing verdicts)", file=out)
    codes = ", ".join(f"{k} {v}" for k, v in s["dead_letters_by_code"].items()) or "none"
    print(f"dead letters: {s['dead_letters']} ({codes})", file=out)
    print(f"latency ms: worker p50 {lat['worker_p50']} p99 {lat['worker_p99']}; capture-to-verdict "
          f"p50 {lat['end_to_end_p50']} p99 {lat['end_to_end_p99']}", file=out)
    stages = ", ".join(f"{k} {v}" for k, v in s["stage_medians_ms"].items())
    if stages:
        print(f"median ms per stage: {stages}", file=out)
    score_ = report.get("score")
    if score_:
        print(f"against {report['data']} ({score_['expected_frames']} frames): accuracy {score_['accuracy']}, "
              f"precision {score_['precision']}, recall {score_['recall']}, f1 {score_['f1']}; "
              f"confusion [[tn fp] [fn tp]] {score_['confusion_matrix']}", file=out)
        print(f"missing verdicts: {score_['missing_verdicts']}; dead-lettered: {score_['dead_lettered']}; "
              f"unknown frame ids: {score_['unknown_frame_ids']}", file=out)
        for kind, k in score_["per_defect_kind"].items():
            print(f"  {kind:28s} {k['frames']:5d} frames, flagged {k['flagged']:5d} ({k['flag_rate']})", file=out)
