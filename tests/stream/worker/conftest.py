"""Fixtures of the stream-worker tests: a small line, a tiny exported model served by a real
tritonserver beside a real broker, workers (in this process on a thread, or as `oanet worker`
processes) and readers of what they wrote.

The model (`model_repo`, tests/stream/conftest.py) is trained for real and exported with
`oanet export`; the embedded stack serves that repository, and workers call it through the
product's Triton client (`--inference triton`, the default). `InProcessInference` has its own
tests (test_local_model.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from deploy.embedded.stack import EmbeddedStack
from oanet.settings import Settings, load_settings
from stream.topics import create_topics
from stream.worker.processes import WorkerProcess
from tests.conftest import fresh_stack_settings, running_stack, with_unique_topics


@pytest.fixture(scope="session")
def worker_stack_factory(model_repo: Path, tmp_path_factory) -> Callable[[], Any]:
    """worker_stack_factory() -> a context manager: a broker + tritonserver serving `model_repo`
    on free ports (a stack of its own, for a test that stops its Triton)."""
    return lambda: running_stack(fresh_stack_settings(tmp_path_factory, model_repository=model_repo))


@pytest.fixture(scope="session")
def worker_stack(worker_stack_factory) -> Iterator[EmbeddedStack]:
    """The stack the worker tests share."""
    with worker_stack_factory() as stack:
        yield stack


def stack_settings(stack: EmbeddedStack) -> Settings:
    """Settings pointing at `stack`: its broker, its Triton (short client backoff: tests never
    wait on purpose) and its model repository (where the worker reads the line profile)."""
    return load_settings(stack=stack.settings.model_dump(),
                         triton={"request_timeout_s": 60, "retry_attempts": 2, "retry_backoff_s": 0.01,
                                 "retry_backoff_max_s": 0.05})


@pytest.fixture
def worker_settings(worker_stack: EmbeddedStack) -> Callable[..., Settings]:
    """worker_settings(**worker_overrides, topics=..., create=True, stack=None) -> settings on fresh topics.

    Triton inference (the shared stack's, or `stack`'s), no metrics endpoint, quick commits;
    topics created. OCR without the detection fallback and on one thread per engine: the OCR
    stage has its own tests, and two cores are shared by the worker's threads and processes,
    the broker and Triton here.
    """

    def factory(create: bool = True, topics: dict[str, Any] | None = None, stack: EmbeddedStack | None = None,
                **worker: Any) -> Settings:
        values = {"metrics_port": 0, "commit_interval_s": 0.2, "poll_timeout_ms": 50, "status_interval_s": 2.0,
                  "drain_timeout_s": 60.0, "startup_timeout_s": 180.0, "retry_initial_s": 0.05, "retry_max_s": 0.5,
                  **worker}
        base = with_unique_topics(stack_settings(stack or worker_stack))
        s = base.model_copy(update={
            "worker": base.worker.model_copy(update=values),
            "ocr": base.ocr.model_copy(update={"fallback": False, "threads": 1}),
            "topics": base.topics.model_copy(update=topics or {}),
        })
        if create:
            create_topics(s.kafka, s.topics)
        return s

    return factory


@pytest.fixture
def worker_process(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """worker_process(settings, group=..., extra=[...]) -> a started `oanet worker`; stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, *, group: str, extra: Sequence[str] = ()) -> WorkerProcess:
        process = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log",
                                extra=["--group", group, *extra], inherit_env=False)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
