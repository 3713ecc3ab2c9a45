"""The chaos audit on hand-made histories: each property it checks fails when broken."""

from __future__ import annotations

import pytest

from bench.chaos_audit import CommitSample, Output, Produced, audit, percentile

# Two partitions of three frames, sent at 0..5 s; the poison frame is 1/1.
PRODUCED = [Produced(p, o, "poison" if (p, o) == (1, 1) else "good",
                     "inference_failed" if (p, o) == (1, 1) else "verdict", 1000.0 * (3 * p + o))
            for p in (0, 1) for o in range(3)]


def outputs(**changes) -> list[Output]:
    """One output per frame, 2 s after it was sent; `changes`: 'p/o' -> replacement list."""
    found = []
    for frame in PRODUCED:
        name = f"p{frame.partition}o{frame.offset}"
        outcome = frame.expected
        default = [Output(frame.partition, frame.offset, outcome, f"content-{name}", frame.at_ms + 2000,
                          500.0 if outcome == "verdict" else None)]
        found += changes.get(name, default)
    return found


def judge(outs, commits=(), final=None, disruptions=1, window=2):
    return audit(PRODUCED, outs, commits, window=window, commit_interval_s=1.0, disruptions=disruptions,
                 deadline_s=10.0, final_commits=final)


def test_a_clean_history_passes_with_its_figures():
    commits = [CommitSample(4500, {0: 3}), CommitSample(8000, {0: 3, 1: 3})]
    report = judge(outputs(), commits, final={0: 3, 1: 3})
    assert report.failures() == []
    assert (report.produced, report.frames_with_output, report.duplicates) == (6, 6, 0)
    assert report.outcomes == {"verdict": 5, "inference_failed": 1} and report.kinds["poison"] == 1
    assert report.ages_ms == [2000.0] * 6 and report.in_flight_ms == [500.0] * 5
    assert report.rate == pytest.approx(6 / 7)
    # 6 frames with an output over 7 s (first sent at 0, last output at 7 s): rate 6/7 per s
    assert report.duplicate_bound == pytest.approx(1 * (2 + 1.0 * 6 / 7))


def test_a_frame_without_output_is_lost():
    report = judge(outputs(p1o2=[]))
    assert report.lost == [(1, 2)] and "1 frame(s) lost" in report.failures()[0]


def test_a_commit_seen_before_the_output_of_a_frame_it_covers_is_premature():
    # p0o2's output is at 4 s: a commit to 3 seen at 3.9 s passed it
    report = judge(outputs(), [CommitSample(3900, {0: 3}), CommitSample(9000, {1: 2})])
    assert len(report.premature) == 1 and "offset 2 had no output yet" in report.premature[0]
    assert "commit(s) passed a frame without output" in report.failures()[0]
    assert judge(outputs(), [CommitSample(9000, {1: 4})]).premature[0].endswith("beyond the 3 frames produced")


def test_duplicates_must_be_alike_and_within_the_bound():
    again = Output(0, 1, "verdict", "content-p0o1", 9000, 400.0)
    alike = judge(outputs(p0o1=[*outputs()[1:2], again]))
    assert alike.duplicates == 1 and alike.failures() == []
    differing = judge(outputs(p0o1=[*outputs()[1:2], Output(0, 1, "verdict", "other", 9000, 400.0)]))
    assert differing.differing == [(0, 1)] and "different contents" in differing.failures()[0]
    many = judge(outputs(p0o1=[*outputs()[1:2], *[again] * 4]), disruptions=1, window=1)
    assert many.duplicates == 4 > many.duplicate_bound and "more than the bound" in many.failures()[0]


def test_a_frame_that_ends_otherwise_than_designed_is_reported():
    charged = judge(outputs(p0o0=[Output(0, 0, "internal_error", "x", 2000)]))
    assert charged.unexpected == ["good at partition 0 offset 0: expected verdict, got internal_error"]
    both = judge(outputs(p1o1=[Output(1, 1, "inference_failed", "a", 6000), Output(1, 1, "verdict", "b", 7000)]))
    assert "got inference_failed, verdict" in both.unexpected[0] and both.differing == [(1, 1)]


def test_a_frame_output_after_its_deadline_is_late():
    report = judge(outputs(p0o0=[Output(0, 0, "verdict", "c", 10_001, 1.0)]))
    assert report.late == 1 and "later than the deadline of 10 s" in report.failures()[0]


def test_final_commits_short_of_the_ends_fail():
    assert "not the ends of the partitions" in judge(outputs(), final={0: 3, 1: 2}).failures()[0]


def test_percentile_is_nearest_rank():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0], 99) == 2.0
    assert percentile([], 50) != percentile([], 50)  # nan
