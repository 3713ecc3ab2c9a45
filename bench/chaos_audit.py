"""The chaos run's audit: a pure function over what was produced, what came out, what was committed.

No broker, no clock: the driver (bench/chaos_driver.py) records the three, the audit judges
them, and its unit test (tests/bench/test_chaos_audit.py) feeds it hand-made histories.

What it checks, by (partition, offset) of the frames topic:

* **nothing lost**: every produced offset has at least one verdict or dead letter;
* **no premature commit**: whenever the group's committed offset of a partition was observed
  at c (at time t), every offset below c had an output written no later than t (an output's
  timestamp is taken when the worker sends it, before the broker acknowledges it, before the
  commit that may cover it);
* **duplicates alike and bounded**: a frame output twice has the same content each time, and
  the extra outputs number at most disruptions x (window + commit interval x rate), a
  disruption being a worker killed or a rebalance (frames in flight, or acknowledged since the
  last commit, are redone by the partition's next owner);
* **as designed**: each frame ends as its kind says (a verdict, or a dead letter with one code),
  so no frame is charged for a neighbour's fault or an outage;
* **deadline**: no frame's first output came later than `deadline_s` after it was produced.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VERDICT = "verdict"


@dataclass(frozen=True)
class Produced:
    partition: int
    offset: int
    kind: str  # "good", "poison" or a bad kind's name
    expected: str  # "verdict" or the dead-letter code the frame must get
    at_ms: float  # when it was sent


@dataclass(frozen=True)
class Output:
    partition: int  # of the frames topic (the output's source)
    offset: int
    outcome: str  # "verdict" or the dead letter's code
    digest: str  # its content without what differs between workers (worker, timings, processed_at)
    at_ms: float  # the output record's timestamp
    in_flight_ms: float | None = None  # consumed-to-verdict time the verdict reports (None: a dead letter)


@dataclass(frozen=True)
class CommitSample:
    at_ms: float  # when the listing of the group's offsets returned
    offsets: Mapping[int, int]  # partition -> committed offset (the next one to consume)


@dataclass
class Audit:
    produced: int
    frames_with_output: int
    outputs: int
    lost: list[tuple[int, int]]
    premature: list[str]  # "partition p committed at c at t: offset o had no output yet"
    duplicates: int  # outputs beyond the first of each frame
    duplicate_bound: float
    differing: list[tuple[int, int]]  # frames whose duplicates differ
    unexpected: list[str]  # "kind at p/o: expected X, got Y"
    ages_ms: list[float]  # produce-to-first-output, per frame
    in_flight_ms: list[float]
    deadline_s: float
    rate: float = 0.0  # frames with an output per second, from the first sent to the last first output
    outcomes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    final_commits: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def late(self) -> int:
        return sum(1 for age in self.ages_ms if age > self.deadline_s * 1000)

    def failures(self) -> list[str]:
        """One line per violated property (empty: the run passed)."""
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} frame(s) lost (no verdict, no dead letter), e.g. "
                         + ", ".join(f"partition {p} offset {o}" for p, o in self.lost[:5]))
        if self.premature:
            found.append(f"{len(self.premature)} commit(s) passed a frame without output, e.g. {self.premature[0]}")
        if self.differing:
            found.append(f"{len(self.differing)} frame(s) output twice with different contents, e.g. "
                         + ", ".join(f"partition {p} offset {o}" for p, o in self.differing[:5]))
        if self.duplicates > self.duplicate_bound:
            found.append(f"{self.duplicates} duplicate output(s), more than the bound {self.duplicate_bound:.0f}")
        if self.unexpected:
            found.append(f"{len(self.unexpected)} frame(s) ended otherwise than designed, e.g. {self.unexpected[0]}")
        if self.late:
            found.append(f"{self.late} frame(s) output later than the deadline of {self.deadline_s:g} s")
        if self.final_commits and self.final_commits != self.end_offsets:
            found.append(f"final committed offsets {self.final_commits} are not the ends of the partitions "
                         f"{self.end_offsets}")
        return found


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def audit(produced: Iterable[Produced], outputs: Iterable[Output], commits: Iterable[CommitSample], *,
          window: int, commit_interval_s: float, disruptions: int, deadline_s: float,
          final_commits: Mapping[int, int] | None = None) -> Audit:
    """Judge a chaos run (module docstring). `disruptions`: workers killed plus rebalances."""
    frames = {(p.partition, p.offset): p for p in produced}
    by_frame: dict[tuple[int, int], list[Output]] = {}
    for out in outputs:
        by_frame.setdefault((out.partition, out.offset), []).append(out)
    all_outputs = sum(len(v) for v in by_frame.values())
    lost = sorted(set(frames) - set(by_frame))
    first = {key: min(o.at_ms for o in outs) for key, outs in by_frame.items()}

    differing, unexpected, ages, in_flight = [], [], [], []
    outcomes: Counter = Counter()
    for key, outs in sorted(by_frame.items()):
        if len({(o.outcome, o.digest) for o in outs}) > 1:
            differing.append(key)
        frame = frames.get(key)
        outcomes[outs[0].outcome] += 1
        in_flight += [o.in_flight_ms for o in outs if o.in_flight_ms is not None]
        if frame is None:
            continue
        ages.append(first[key] - frame.at_ms)
        got = {o.outcome for o in outs}
        if got != {frame.expected}:
            unexpected.append(f"{frame.kind} at partition {key[0]} offset {key[1]}: expected {frame.expected}, "
                              f"got {', '.join(sorted(got))}")

    premature = _premature_commits(frames, first, commits)
    span_s = (max(first.values(), default=0) - min((f.at_ms for f in frames.values()), default=0)) / 1000
    rate = len(by_frame) / span_s if span_s > 0 else 0.0
    ends: dict[int, int] = {}
    for partition, offset in frames:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return Audit(
        produced=len(frames), frames_with_output=len(set(frames) & set(by_frame)), outputs=all_outputs, lost=lost,
        premature=premature, duplicates=all_outputs - len(by_frame),
        duplicate_bound=disruptions * (window + commit_interval_s * rate), differing=differing,
        unexpected=unexpected, ages_ms=ages, in_flight_ms=in_flight, deadline_s=deadline_s, rate=rate, outcomes=outcomes,
        kinds=Counter(f.kind for f in frames.values()), final_commits=dict(final_commits or {}), end_offsets=ends)


def _premature_commits(frames: Mapping[tuple[int, int], Produced], first: Mapping[tuple[int, int], float],
                       commits: Iterable[CommitSample]) -> list[str]:
    # Per partition, the latest first-output time over offsets 0..k-1 (inf once one has none):
    # a commit at c observed at t is sound when that prefix maximum for c is at most t.
    partitions = sorted({p for p, _ in frames} | {p for p, _ in first})
    prefix: dict[int, list[float]] = {}
    for partition in partitions:
        end = max([o + 1 for p, o in first if p == partition] + [o + 1 for p, o in frames if p == partition])
        running, values = 0.0, [0.0]
        for offset in range(end):
            running = max(running, first.get((partition, offset), math.inf))
            values.append(running)
        prefix[partition] = values
    found = []
    for sample in commits:
        for partition, committed in sample.offsets.items():
            values = prefix.get(partition, [0.0])
            if committed >= len(values):
                found.append(f"partition {partition} committed at {committed} beyond the {len(values) - 1} "
                             "frames produced")
            elif values[committed] > sample.at_ms:
                offset = next(o for o in range(committed) if first.get((partition, o), math.inf) > sample.at_ms)
                found.append(f"partition {partition} committed at {committed} (seen at {sample.at_ms:.0f} ms): "
                             f"offset {offset} had no output yet")
    return found
