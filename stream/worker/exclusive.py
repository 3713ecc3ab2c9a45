"""Calls that may run together, and calls that must run alone (asyncio, one loop).

A frame suspected of breaking a shared resource (the model server's batch, an OCR process) is
retried with nothing else of this worker in flight there: whatever happens then is its own
doing, and the frames that met the failure beside it are not charged for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Exclusive:
    def __init__(self) -> None:
        self._shared = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Beside other shared calls; waits while an exclusive call runs."""
        await self._open.wait()
        self._shared += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._shared -= 1
            if self._shared == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Alone: new shared calls wait, running ones finish first; exclusive calls queue."""
        async with self._lock:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()
