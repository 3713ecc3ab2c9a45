"""Fixtures of the stream-worker tests: a small line, a tiny exported model, workers on the
real broker (in this process on a thread, or as `oanet worker` processes), and readers of
what they wrote.

The model is trained for real (a few epochs of nothing, 32 px) and exported with
`oanet export`: the worker runs it through `InProcessInference`, exactly as exported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from oanet.cli import main as oanet_main
from oanet.dataset import Dataset
from oanet.settings import Settings
from stream.topics import create_topics
from tests.stream.worker.harness import WorkerProcess
from tests.training.test_end_to_end import TINY

@pytest.fixture(scope="session")
def model_repo(line_t_dataset: Dataset, tmp_path_factory) -> Path:
    """A tiny model trained on the small line and exported as version 1 of a repository."""
    base = tmp_path_factory.mktemp("worker-model")
    run, repo = base / "run", base / "repo"
    assert oanet_main(["train", "--data", str(line_t_dataset.root), "--out", str(run), *TINY]) == 0
    assert oanet_main(["export", "--run", str(run), "--repo", str(repo)]) == 0
    return repo


@pytest.fixture
def worker_settings(unique_topics: Settings, model_repo: Path) -> Callable[..., Settings]:
    """worker_settings(**worker_overrides, topics=..., create=True) -> settings on fresh topics.

    Local inference on the test model, no metrics endpoint, quick commits; topics created.
    OCR without the detection fallback and on one thread per engine: the OCR stage has its own
    tests, and two cores are shared by the worker's threads and processes here.
    """

    def factory(create: bool = True, topics: dict[str, Any] | None = None, **worker: Any) -> Settings:
        values = {"inference": "local", "metrics_port": 0, "commit_interval_s": 0.2, "poll_timeout_ms": 50,
                  "status_interval_s": 2.0, "drain_timeout_s": 60.0, "startup_timeout_s": 180.0, **worker}
        s = unique_topics.model_copy(update={
            "worker": unique_topics.worker.model_copy(update=values),
            "stack": unique_topics.stack.model_copy(update={"model_repository": model_repo}),
            "ocr": unique_topics.ocr.model_copy(update={"fallback": False, "threads": 1}),
            "topics": unique_topics.topics.model_copy(update=topics or {}),
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
        process = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", group=group, extra=extra)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()

