"""The CPU stage of a frame: decode (with the limits already checked), OCR, object ROI.

Runs in a pool of processes (PaddleOCR is not thread-safe and holds the GIL for much of its
work), one `OcrEngine` per process, created by the pool's initializer. A frame crosses the
process boundary as its encoded bytes and comes back as a ParameterRecord plus the S x S
object ROI: a few kB, whatever the frame size.

`ocr_processes = 0` runs the stage on one thread of the worker process instead (small
deployments, debugging); the engine is then still used from that one thread only.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from oanet.contracts import STAGE_DECODE, STAGE_OCR, DeadLetterCode
from oanet.profile import LineProfile
from stream.ocr.errors import FrameMismatchError, OcrError
from stream.ocr.records import ParameterRecord
from stream.ocr.settings import OcrSettings
from stream.ocr.student_server import StudentServer
from stream.worker.errors import FrameRejected
from stream.worker.imageinfo import ImageInfo
from oanet.preprocess import crop_object_roi


@dataclass(frozen=True)
class StageConfig:
    profile: LineProfile
    ocr: OcrSettings
    image_size: int
    # The student's network on Triton (worker.student_inference=triton); None: in the process.
    student_server: StudentServer | None = None


@dataclass(frozen=True)
class Prepared:
    record: ParameterRecord
    roi: np.ndarray  # uint8 [S, S, 3] BGR
    decode_ms: float
    ocr_ms: float


_engine = None  # this process's (or thread's) OcrEngine
_config: StageConfig | None = None
_init_error: Exception | None = None  # why the engine could not start (raised by every call)


def _exit_with_parent() -> None:
    """A pool process outlives a SIGKILLed parent (it holds its own queue handles): leave with it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(0)

    threading.Thread(target=watch, name="oanet-parent-watch", daemon=True).start()


def init_process(config: StageConfig, in_process: bool = False) -> None:
    global _engine, _config, _init_error
    if not in_process:
        # Ctrl-C (and `kill -- -PGID`) reach the whole process group; the parent decides how
        # to stop, and ends this process when it is done with it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _exit_with_parent()
    _config = config
    # An exception here would only say "a child process terminated abruptly": keep it and
    # raise it from warm_up(), where the worker reports it as one line.
    try:
        from stream.ocr.engine import OcrEngine

        _engine = OcrEngine(config.profile, config.ocr, student_server=config.student_server)
        _engine.warm_up()
    except Exception as exc:  # noqa: BLE001 - reported by warm_up()
        _init_error = exc


def warm_up() -> tuple[int, str]:
    """Run in each pool process at start: (pid, OCR engine version); start-up errors surface here."""
    if _init_error is not None:
        raise _init_error
    assert _engine is not None
    return os.getpid(), _engine.version


def decode(data: bytes, info: ImageInfo) -> np.ndarray:
    """BGR uint8 frame; FrameRejected(undecodable) when the decoder fails or disagrees with the header."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameRejected(DeadLetterCode.UNDECODABLE, STAGE_DECODE,
                            f"{info.format.upper()} data does not decode ({len(data)} bytes)")
    # IMREAD_COLOR applies a JPEG's EXIF orientation, as training's reader does: width and
    # height may swap.
    if image.shape[:2] not in ((info.height, info.width), (info.width, info.height)):
        raise FrameRejected(DeadLetterCode.UNDECODABLE, STAGE_DECODE,
                            f"decoded {image.shape[1]}x{image.shape[0]} but the header declares "
                            f"{info.width}x{info.height}")
    return image


def _decode_stage(data: bytes, info: ImageInfo) -> tuple[np.ndarray, np.ndarray]:
    """(frame fitted to the profile for OCR, object ROI for the CNN)."""
    from stream.ocr.crops import fit_to_profile

    assert _config is not None, "init_process() has not run"
    profile = _config.profile
    image = decode(data, info)
    try:
        fitted = fit_to_profile(image, profile)
    except FrameMismatchError as exc:
        raise FrameRejected(DeadLetterCode.PROFILE_MISMATCH, STAGE_DECODE, str(exc)) from None
    roi = crop_object_roi(image, profile.object_roi, (profile.frame.width, profile.frame.height), _config.image_size)
    return fitted, roi


def read_frame(data: bytes, info: ImageInfo) -> Prepared:
    """Decode, read the panel with OCR and cut the object ROI (in a pool process)."""
    if _init_error is not None:
        raise _init_error
    assert _engine is not None, "init_process() has not run"
    started = time.perf_counter()
    fitted, roi = _decode_stage(data, info)
    decoded = time.perf_counter()
    result = _engine.read_batch([fitted])[0]
    if isinstance(result, OcrError):
        raise FrameRejected(getattr(result, "code", DeadLetterCode.INTERNAL_ERROR), STAGE_OCR, str(result))
    done = time.perf_counter()
    return Prepared(result, roi, (decoded - started) * 1000, (done - decoded) * 1000)


def decode_only(data: bytes, info: ImageInfo) -> float:
    """The decode part of `read_frame` alone, in ms (`oanet bench e2e` measures the stage by itself)."""
    started = time.perf_counter()
    _decode_stage(data, info)
    return (time.perf_counter() - started) * 1000


def make_executor(config: StageConfig, processes: int) -> Executor:
    if config.ocr.threads == 0:
        # The stage scales with processes (--ocr-processes). onnxruntime's default, a thread per
        # core in each process, oversubscribes cores that the other processes, Triton and the
        # broker share: measured on the 2-core machine at load 5, 700 ms per 1024x768 frame
        # against 350 ms with one thread.
        config = dataclasses.replace(config, ocr=config.ocr.model_copy(update={"threads": 1}))
    if processes == 0:
        return ThreadPoolExecutor(1, thread_name_prefix="oanet-ocr", initializer=init_process,
                                  initargs=(config, True))
    # spawn, not fork: the parent runs Kafka client threads, which a fork would copy mid-state.
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_process, initargs=(config,))


def executor_pids(executor: Executor) -> list[int]:
    """PIDs of a process pool's workers (for logs and for stopping them at exit)."""
    processes = getattr(executor, "_processes", None) or {}
    return [p.pid for p in processes.values() if p.pid is not None]


def shutdown_executor(executor: Executor, grace_s: float = 5.0) -> None:
    """Stop a pool now: cancel queued frames and end its processes (ours) if they linger past
    `grace_s` (0: at once, for a pool replaced because a process hung or died)."""
    import psutil

    pids = executor_pids(executor)
    executor.shutdown(wait=False, cancel_futures=True)
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
