"""A served model whose input contract changed under a running worker: Triton restarted, while
the worker was idle, with a re-export of the same version whose object ROI is 48 px instead of
32. The worker's next requests carry 32 px ROIs and Triton answers INVALID_ARG; that is the
model's change, not the frames' fault: the worker must stop (as for a new version) without
dead-lettering a frame and without committing past one it did not verdict."""

from __future__ import annotations

import uuid

import pytest

from deploy.embedded.stack import TRITON
from oanet.contracts import HEADER_FRAME_ID
from stream.worker.errors import WorkerError
from tests.stream.worker.harness import committed_offsets, produce, read_outputs, running_worker, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reshaped_repo(line_t_dataset, model_repo, tmp_path_factory):
    """Version 1 again, trained and exported with a 48 px object ROI (the test model's is 32 px)."""
    from oanet.cli import main as oanet_main
    from tests.training.test_end_to_end import TINY

    base = tmp_path_factory.mktemp("reshaped")
    run, repo = base / "run", base / "repo"
    tiny = list(TINY)
    tiny[tiny.index("--image-size") + 1] = "48"
    assert oanet_main(["train", "--data", str(line_t_dataset.root), "--out", str(run), *tiny]) == 0
    assert oanet_main(["export", "--run", str(run), "--repo", str(repo)]) == 0
    return repo


@pytest.fixture(scope="module")
def swappable_stack(worker_stack_factory):
    """A stack of its own whose Triton the test restarts with another repository."""
    with worker_stack_factory() as stack:
        yield stack


def test_a_changed_input_contract_stops_the_worker_without_dead_letters_or_commits_past_it(
        worker_settings, line_t_dataset, swappable_stack, reshaped_repo):
    settings = worker_settings(stack=swappable_stack, ocr_processes=0, window=8)
    good = [line_t_dataset.read_bytes(e) for e in line_t_dataset.entries[:4]]

    def frames(prefix: str, count: int) -> list[tuple]:
        return [(good[i % len(good)], [(HEADER_FRAME_ID, f"{prefix}-{i}".encode())])
                for i in range(count)]

    group = f"contract-{uuid.uuid4().hex[:6]}"
    with pytest.raises(WorkerError, match=r"came back with oanet version 1 \(.*48 px.*started for version 1"):
        with running_worker(settings, group=group) as worker:
            produce(settings, frames("before", 6))
            read_outputs(settings, until=lambda o: len(o.verdicts) >= 6)
            wait_until(lambda: worker.in_flight == 0 and sum(committed_offsets(settings, group).values()) == 6, 60,
                       "the first six frames committed")
            retries = worker.metrics.registry.get_sample_value("oanet_worker_inference_retries_total")
            # Idle: no request fails while Triton is away, so the worker still holds the old facts.
            swappable_stack.stop_service(TRITON)
            swappable_stack.start_service(TRITON, reshaped_repo)
            produce(settings, frames("after", 10))
            wait_until(lambda: worker.stopping, 120, "the worker to refuse the changed model")
    # the INVALID_ARG path decided it, not an outage the worker waited out
    assert worker.metrics.registry.get_sample_value("oanet_worker_inference_retries_total") == retries
    assert worker.metrics.registry.get_sample_value("oanet_worker_dead_letters_total",
                                                    {"code": "inference_rejected"}) in (None, 0.0)
    out = read_outputs(settings)
    assert out.dead_letters == [], "a frame was charged for the model's change"
    assert sorted(v["frame_id"] for v in out.verdicts) == sorted(f"before-{i}" for i in range(6))
    verdicted: dict[int, set[int]] = {}
    for v in out.verdicts:
        verdicted.setdefault(v["source"]["partition"], set()).add(v["source"]["offset"])
    for partition, offset in committed_offsets(settings, group).items():
        assert set(range(offset)) <= verdicted.get(partition, set()), "committed past a frame without a verdict"
    assert sum(committed_offsets(settings, group).values()) == 6
