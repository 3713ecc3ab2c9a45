"""Which offsets may be committed: per-partition out-of-order completion (pure, single-threaded).

Frames of one partition are verdicted concurrently and finish in any order. An offset may be
committed only when the verdict or dead letter of every earlier offset of that partition has
been acknowledged by the broker, so the committable position of a partition is one past the
longest acknowledged prefix of the offsets consumed from it.

Offsets are tracked in consumption order, not by arithmetic: a compacted topic or
transaction markers leave gaps, and the prefix follows what was actually consumed.

A partition revoked by a rebalance is closed: what it had acknowledged is handed back for a
final commit, and completions arriving later for its frames are ignored (their frames will
be consumed again by the partition's new owner; the verdicts they produced are duplicates
with the same content).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from kafka.structs import TopicPartition


class CheckpointError(Exception):
    """The checkpoint was used against its contract (a bug in the caller)."""


class PartitionTrack:
    """Consumed offsets of one partition assignment, in order, and which of them are done."""

    def __init__(self, tp: TopicPartition):
        self.tp = tp
        self.closed = False
        self._pending: deque[int] = deque()
        self._in_flight: set[int] = set()
        self._done: set[int] = set()
        self._last_tracked: int | None = None
        self.position: int | None = None  # next offset to commit (None: nothing acknowledged yet)

    def track(self, offset: int) -> None:
        if self._last_tracked is not None and offset <= self._last_tracked:
            raise CheckpointError(f"{self.tp}: offset {offset} tracked after {self._last_tracked}")
        self._pending.append(offset)
        self._in_flight.add(offset)
        self._last_tracked = offset

    def complete(self, offset: int) -> None:
        if offset not in self._in_flight:
            raise CheckpointError(f"{self.tp}: offset {offset} completed but not in flight")
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            head = self._pending.popleft()
            self._done.discard(head)
            self._in_flight.discard(head)
            self.position = head + 1

    @property
    def in_flight(self) -> int:
        return len(self._pending)


@dataclass(frozen=True)
class Ticket:
    """A consumed frame's claim on its partition's progress; `Checkpoint.complete` redeems it."""

    track: PartitionTrack
    offset: int

    @property
    def tp(self) -> TopicPartition:
        return self.track.tp


class Checkpoint:
    """Committable offsets of every assigned partition; what to commit and when."""

    def __init__(self) -> None:
        self._tracks: dict[TopicPartition, PartitionTrack] = {}
        self._committed: dict[TopicPartition, int] = {}

    def track(self, tp: TopicPartition, offset: int) -> Ticket:
        """Record a consumed offset; offsets of a partition must arrive in increasing order."""
        track = self._tracks.get(tp)
        if track is None:
            track = self._tracks[tp] = PartitionTrack(tp)
        track.track(offset)
        return Ticket(track, offset)

    def complete(self, ticket: Ticket) -> bool:
        """The frame's output was acknowledged. False when its partition was revoked since."""
        if ticket.track.closed:
            return False
        ticket.track.complete(ticket.offset)
        return True

    def to_commit(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Next offsets that advanced since the last `committed` call (of `tps`, or all)."""
        out = {}
        for tp in self._tracks if tps is None else tps:
            track = self._tracks.get(tp)
            if track is None or track.position is None:
                continue
            if self._committed.get(tp) != track.position:
                out[tp] = track.position
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """The broker accepted the commit of `offsets`."""
        for tp, offset in offsets.items():
            if self._committed.get(tp, -1) < offset:
                self._committed[tp] = offset

    def revoke(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Close the partitions; returns their last uncommitted positions (commit them now)."""
        tps = [tp for tp in tps if tp in self._tracks]
        final = self.to_commit(tps)
        for tp in tps:
            self._tracks.pop(tp).closed = True
            self._committed.pop(tp, None)
        return final

    def in_flight(self, tps: Iterable[TopicPartition] | None = None) -> int:
        tracks = self._tracks.values() if tps is None else [self._tracks[tp] for tp in tps if tp in self._tracks]
        return sum(t.in_flight for t in tracks)

    def position(self, tp: TopicPartition) -> int | None:
        """Next offset to commit for `tp` (None: nothing acknowledged in this assignment)."""
        track = self._tracks.get(tp)
        return None if track is None else track.position

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._tracks)
