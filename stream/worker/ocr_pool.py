"""The OCR stage's pool of processes: a deadline per frame, restarts, and a suspect retried alone.

A frame that crashes an OCR process (segfault, OOM kill) breaks the whole pool; a frame that
hangs the decoder or the OCR engine would hold a process forever. Either way the pool is
replaced, and every frame that was in it when it failed becomes a suspect: it is retried alone
(no other frame of this worker in the pool), so a second failure is its own. Only a frame that
crashes or hangs the pool alone `OCR_ALONE_ATTEMPTS` times is dead-lettered; the innocent ones
beside it pass on their retry and are charged nothing.

The deadline counts from the moment the frame reaches a process: frames are handed to the pool
only when a process is free, never queued inside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from oanet.contracts import STAGE_OCR, DeadLetterCode
from stream.ocr.errors import OcrError
from stream.worker import ocr_stage
from stream.worker.errors import FrameRejected, WorkerError
from stream.worker.exclusive import Exclusive
from stream.worker.imageinfo import ImageInfo

log = logging.getLogger("stream.worker")

# Failures of a frame alone in the pool before it is dead-lettered as the cause.
OCR_ALONE_ATTEMPTS = 2


class OcrPoolFailed(WorkerError):
    """The OCR pool cannot be (re)started: a failure of the worker, not of a frame."""


class OcrPool:
    """`read_frame` runs the OCR stage (`stage`, default `ocr_stage.read_frame`) of one frame in the pool.

    `stage` is a picklable module-level function with `ocr_stage.read_frame`'s signature; tests put
    a faulty one here to make a process crash or hang on a marked frame.
    """

    def __init__(self, config: ocr_stage.StageConfig, processes: int, deadline_s: float, startup_timeout_s: float,
                 on_restart: Callable[[str], None] | None = None,
                 stage: Callable[[bytes, ImageInfo], ocr_stage.Prepared] = ocr_stage.read_frame):
        self._config = config
        self._processes = processes
        self._deadline_s = deadline_s
        self._startup_timeout_s = startup_timeout_s
        self._on_restart = on_restart or (lambda why: None)
        self._stage = stage
        self._executor: concurrent.futures.Executor | None = None
        self._generation = 0
        self._slots = asyncio.Semaphore(max(1, processes))
        self._solo = Exclusive()
        self._restarting = asyncio.Lock()

    @property
    def config(self) -> ocr_stage.StageConfig:
        """What every process reads with (its OCR settings name the student, if any)."""
        return self._config

    # ---- lifecycle (blocking: the main thread at start, a helper thread on restart) -----------
    def start(self) -> None:
        """Start the processes and wait for each engine to load; OcrPoolFailed (one line) if not."""
        executor = ocr_stage.make_executor(self._config, self._processes)
        warmups = [executor.submit(ocr_stage.warm_up) for _ in range(max(1, self._processes))]
        try:
            for future in warmups:
                future.result(timeout=self._startup_timeout_s)
        except concurrent.futures.TimeoutError:
            ocr_stage.shutdown_executor(executor)
            raise OcrPoolFailed(f"the OCR stage did not start within {self._startup_timeout_s:.0f} s") from None
        except OcrError as exc:
            ocr_stage.shutdown_executor(executor)
            raise OcrPoolFailed(f"the OCR stage cannot start: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a dead process or an unexpected start-up failure
            ocr_stage.shutdown_executor(executor)
            raise OcrPoolFailed(f"the OCR stage cannot start: {type(exc).__name__}: {exc}") from None
        self._executor = executor
        self._generation += 1

    def close(self) -> None:
        if self._executor is not None:
            ocr_stage.shutdown_executor(self._executor)

    def _replace(self) -> None:
        old = self._executor
        if old is not None:
            # At once: a hung process would not end on its own, and the frames of the others
            # are retried anyway (a hung thread, with ocr_processes 0, is left behind).
            ocr_stage.shutdown_executor(old, grace_s=0)
        self.start()

    async def _restart(self, generation: int, why: str) -> None:
        async with self._restarting:
            if generation != self._generation:
                return  # another frame of the same pool restarted it already
            log.error("restarting the OCR pool", extra={"reason": why})
            self._on_restart(why)
            await asyncio.get_running_loop().run_in_executor(None, self._replace)

    # ---- per frame (the worker's asyncio loop) ------------------------------------------------
    async def read_frame(self, data: bytes, info: ImageInfo, fields: dict[str, Any]) -> ocr_stage.Prepared:
        suspect, alone = False, 0
        while True:
            async with self._solo.exclusive() if suspect else self._solo.shared(), self._slots:
                assert self._executor is not None, "start() first"
                executor, generation = self._executor, self._generation
                try:
                    future = asyncio.wrap_future(executor.submit(self._stage, data, info))
                    return await asyncio.wait_for(future, self._deadline_s)
                except BrokenProcessPool:
                    what = "an OCR process died"
                except TimeoutError:
                    what = f"the OCR stage did not finish within {self._deadline_s:g} s (worker.ocr_timeout_s)"
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    continue  # cancelled in the queue of a pool being replaced: not this frame's doing
                except RuntimeError:
                    # "cannot schedule new futures after shutdown": the pool is being replaced
                    # (the old one shut down, the new one starting); wait for it and go again.
                    async with self._restarting:
                        pass
                    if executor is self._executor:
                        raise
                    continue
                await self._restart(generation, what)
            if suspect:
                alone += 1
            log.warning("OCR failed on a frame; retrying it alone", extra={**fields, "reason": what,
                                                                            "alone_failures": alone})
            if alone >= OCR_ALONE_ATTEMPTS:
                raise FrameRejected(DeadLetterCode.INTERNAL_ERROR, STAGE_OCR,
                                    f"{what}, on this frame alone, {alone} times")
            suspect = True
