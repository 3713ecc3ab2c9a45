"""Exclusive: a suspect call runs with nothing else in flight, and nothing starts beside it."""

from __future__ import annotations

import asyncio

from stream.worker.exclusive import Exclusive


def test_an_exclusive_call_waits_for_shared_ones_and_holds_new_ones_back():
    events: list[str] = []

    async def shared(gate: Exclusive, name: str, hold: asyncio.Event) -> None:
        async with gate.shared():
            events.append(f"{name} in")
            await hold.wait()
            events.append(f"{name} out")

    async def exclusive(gate: Exclusive, name: str) -> None:
        async with gate.exclusive():
            events.append(f"{name} in")
            await asyncio.sleep(0)
            events.append(f"{name} out")

    async def main() -> None:
        gate, hold_a, hold_b = Exclusive(), asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(shared(gate, "a", hold_a))
        await asyncio.sleep(0)
        solo = asyncio.create_task(exclusive(gate, "solo"))
        await asyncio.sleep(0)
        b = asyncio.create_task(shared(gate, "b", hold_b))  # arrives while solo waits: must wait too
        for _ in range(5):
            await asyncio.sleep(0)
        assert events == ["a in"]
        hold_a.set()
        hold_b.set()
        await asyncio.gather(a, solo, b)

    asyncio.run(main())
    assert events == ["a in", "a out", "solo in", "solo out", "b in", "b out"]


def test_exclusive_calls_run_one_at_a_time():
    running, peak = 0, 0

    async def solo(gate: Exclusive) -> None:
        nonlocal running, peak
        async with gate.exclusive():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            running -= 1

    async def main() -> None:
        gate = Exclusive()
        await asyncio.gather(*(solo(gate) for _ in range(4)))

    asyncio.run(main())
    assert peak == 1
