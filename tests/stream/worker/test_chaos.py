"""Chaos, short: a camera sends good frames, 5% bad ones of 16 kinds and a poison frame, while
workers are SIGKILLed (one during a rebalance) and Triton is restarted; the audit
(bench/chaos_audit.py) must find nothing lost, no premature commit, duplicates alike and
bounded, every frame ended as designed and none past its deadline. `oanet bench chaos` runs
the same driver for longer and prints the figures (docs/benchmarks.md)."""

from __future__ import annotations

import uuid

import pytest

from bench.chaos import summary
from bench.chaos_audit import audit
from bench.chaos_driver import ChaosRun, Plan, chaos_settings, kinds_for
from bench.chaos_frames import POISON, bad_kinds, poison_kind, poison_repository
from oanet.contracts import DeadLetterCode
from stream.topics import create_topics
from tests.conftest import fresh_stack_settings, running_stack

pytestmark = pytest.mark.slow

WINDOW, COMMIT_INTERVAL_S, DEADLINE_S = 8, 0.2, 120.0


@pytest.fixture(scope="module")
def chaos_stack(model_repo, tmp_path_factory):
    """A stack of its own serving a poisoned copy of the test model (Triton is restarted)."""
    repo = poison_repository(model_repo, tmp_path_factory.mktemp("chaos") / "repo")
    with running_stack(fresh_stack_settings(tmp_path_factory, model_repository=repo)) as stack:
        yield stack


def test_chaos_loses_nothing_commits_nothing_early_and_bounds_duplicates(worker_settings, worker_process,
                                                                          line_t_dataset, chaos_stack):
    settings = chaos_settings(worker_settings(stack=chaos_stack, create=False), window=WINDOW,
                              commit_interval_s=COMMIT_INTERVAL_S, deadline_s=DEADLINE_S)
    create_topics(settings.kafka, settings.topics)
    group = f"chaos-{uuid.uuid4().hex[:6]}"
    good = [line_t_dataset.read_bytes(e) for e in line_t_dataset.entries[:20]]
    bad = bad_kinds(line_t_dataset.profile, good[0], b"line", settings.topics.max_message_bytes)
    plan = Plan(frames=20 * len(bad), rate=10.0, kills=3)  # every bad kind once
    run = ChaosRun(settings, chaos_stack, group, plan, lambda: worker_process(settings, group=group),
                   kinds_for(good), bad, poison_kind(line_t_dataset.profile, good[0], b"line"), print)
    result = run.run()
    report = audit(result.produced, result.outputs, result.commits, window=WINDOW,
                   commit_interval_s=COMMIT_INTERVAL_S, disruptions=result.disruptions, deadline_s=DEADLINE_S,
                   final_commits=result.final_commits)
    timeline = "\n".join(result.timeline)
    print("\n".join(summary(report, result, plan, WINDOW, COMMIT_INTERVAL_S)))
    assert report.failures() == [], timeline
    assert result.worker_errors == [], timeline
    # the faults happened as planned, mid-run
    assert result.kills == 3 and result.kill_in_rebalance and result.triton_down_s > 0, timeline
    assert report.produced == plan.frames and not report.lost
    assert len(set(report.kinds) - {"good", POISON}) == len(bad) >= 12
    assert report.kinds[POISON] == 1 and report.outcomes[DeadLetterCode.INFERENCE_FAILED] == 1
    assert len(result.commits) > 10 and any(sample.offsets for sample in result.commits)
