"""The checkpoint: committable offsets under out-of-order completion, gaps, revocation."""

from __future__ import annotations

import random

import pytest
from kafka.structs import TopicPartition

from stream.worker.checkpoint import Checkpoint, CheckpointError, Ticket

P0 = TopicPartition("frames", 0)
P1 = TopicPartition("frames", 1)


def test_commit_waits_for_the_earliest_offset():
    cp = Checkpoint()
    tickets = [cp.track(P0, o) for o in range(5)]
    for i in (1, 2, 4):
        cp.complete(tickets[i])
    assert cp.to_commit() == {}  # offset 0 is still in flight
    cp.complete(tickets[0])
    assert cp.to_commit() == {P0: 3}  # 0, 1, 2 done; 3 is not
    cp.committed({P0: 3})
    assert cp.to_commit() == {}
    cp.complete(tickets[3])
    assert cp.to_commit() == {P0: 5}
    assert cp.in_flight() == 0


def test_partitions_are_independent():
    cp = Checkpoint()
    a = [cp.track(P0, o) for o in (10, 11)]
    b = [cp.track(P1, o) for o in (7, 8)]
    cp.complete(b[0])
    cp.complete(a[1])
    assert cp.to_commit() == {P1: 8}
    assert cp.to_commit([P0]) == {}
    assert cp.in_flight([P0]) == 2 and cp.in_flight([P1]) == 1 and cp.in_flight() == 3


def test_gaps_in_offsets_follow_what_was_consumed():
    # compacted topics and transaction markers leave holes: 3 and 5 were never consumed
    cp = Checkpoint()
    t = {o: cp.track(P0, o) for o in (2, 4, 6)}
    cp.complete(t[4])
    cp.complete(t[2])
    assert cp.to_commit() == {P0: 5}
    cp.complete(t[6])
    assert cp.to_commit() == {P0: 7}


def test_revocation_hands_back_the_final_position_and_ignores_late_completions():
    cp = Checkpoint()
    t = [cp.track(P0, o) for o in range(4)]
    cp.complete(t[0])
    cp.complete(t[1])
    cp.committed({P0: 1})
    assert cp.revoke([P0, P1]) == {P0: 2}  # P1 was never tracked: nothing for it
    assert cp.complete(t[2]) is False and cp.complete(t[3]) is False
    assert cp.to_commit() == {} and cp.in_flight() == 0 and cp.partitions == []
    # the partition comes back (reassigned): progress starts afresh, even at lower offsets
    again = cp.track(P0, 2)
    assert cp.complete(again) is True
    assert cp.to_commit() == {P0: 3}


def test_shutdown_commits_only_the_acknowledged_prefix():
    cp = Checkpoint()
    t = [cp.track(P0, o) for o in range(6)]
    for i in (0, 1, 3, 4):
        cp.complete(t[i])
    assert cp.to_commit() == {P0: 2}  # 2 never finished: 3 and 4 will be verdicted again
    assert cp.in_flight() == 4


def test_contract_violations_are_errors():
    cp = Checkpoint()
    first = cp.track(P0, 5)
    with pytest.raises(CheckpointError):
        cp.track(P0, 5)
    with pytest.raises(CheckpointError):
        cp.track(P0, 3)
    cp.track(P0, 7)
    with pytest.raises(CheckpointError):
        cp.complete(Ticket(first.track, 6))  # 6 was never consumed
    cp.complete(first)
    with pytest.raises(CheckpointError):
        cp.complete(first)  # already done and committable


@pytest.mark.parametrize("seed", range(200))
def test_random_completion_orders_never_commit_past_an_unfinished_offset(seed):
    """Property: whatever the interleaving of consumption, completion and commits, a committed
    position only covers offsets that completed, never goes backwards, and reaches the end."""
    rng = random.Random(seed)
    cp = Checkpoint()
    partitions = [TopicPartition("frames", p) for p in range(rng.randint(1, 3))]
    next_offset = {tp: rng.randint(0, 50) for tp in partitions}
    start = dict(next_offset)
    in_flight, done = [], {tp: set() for tp in partitions}
    committed = {}
    for _ in range(rng.randint(1, 200)):
        action = rng.random()
        if action < 0.45 or not in_flight:
            tp = rng.choice(partitions)
            next_offset[tp] += rng.choice((1, 1, 1, 2, 5))  # occasional gaps
            in_flight.append(cp.track(tp, next_offset[tp]))
        elif action < 0.9:
            ticket = in_flight.pop(rng.randrange(len(in_flight)))
            assert cp.complete(ticket)
            done[ticket.tp].add(ticket.offset)
        else:
            offsets = cp.to_commit()
            for tp, position in offsets.items():
                assert position > committed.get(tp, -1)
                unfinished = [t.offset for t in in_flight if t.tp == tp]
                assert all(o >= position for o in unfinished), "commit covers an unfinished frame"
                assert position - 1 in done[tp]
            cp.committed(offsets)
            committed.update(offsets)
    for ticket in rng.sample(in_flight, len(in_flight)):
        cp.complete(ticket)
        done[ticket.tp].add(ticket.offset)
    final = {**committed, **cp.to_commit()}
    for tp in partitions:
        if done[tp]:
            assert final[tp] == max(done[tp]) + 1
            assert min(done[tp]) > start[tp]
    assert cp.in_flight() == 0
