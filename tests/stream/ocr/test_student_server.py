"""The OCR student served by a real tritonserver (`oanet_ocr_student`, worker.student_inference=triton):
the same logits and reads as the network run in the process, a bad request refused on its own,
another student refused before a worker starts, and an unanswered call read by PaddleOCR.

The student is an untrained network of the run's profile (tests/serving_fixtures.py): what is
pinned is that the served network is the local one, not what it reads."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deploy.embedded.stack import EmbeddedStack
from oanet.cli import main
from oanet.errors import ConfigError
from oanet.profile import LineProfile, load_profile
from oanet.settings import load_settings
from stream.ocr.engine import OcrEngine
from stream.ocr.errors import StudentError
from stream.ocr.records import ENGINE_PADDLE
from stream.ocr.student import OnnxStudentNetwork, Student, student_digest
from stream.ocr.student_server import StudentNotServed, StudentServer, TritonStudentNetwork, served_student
from stream.worker import ocr_stage
from stream.worker.errors import WorkerError
from stream.worker.repository import ocr_settings_for, read_exported, student_server_for
from tests.serving_fixtures import make_student
from triton_models.oanet_fusion import core

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_profile(served_run: Path) -> LineProfile:
    return load_profile(served_run / "model" / "profile.yaml")


@pytest.fixture(scope="module")
def student(run_profile: LineProfile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Threshold 0: every well-formed read of the untrained network would be taken.
    return make_student(run_profile, tmp_path_factory.mktemp("student") / "s", threshold=0.0)


@pytest.fixture(scope="module")
def student_stack(served_run: Path, student: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """The embedded stack serving version 1 exported with the student."""
    from tests.conftest import fresh_stack_settings, running_stack

    repo = tmp_path_factory.mktemp("student-repo") / "repo"
    assert main(["export", "--run", str(served_run), "--repo", str(repo), "--recognizer", str(student)]) == 0
    with running_stack(fresh_stack_settings(tmp_path_factory, model_repository=repo)) as stack:
        yield stack


@pytest.fixture(scope="module")
def grpc(student_stack: EmbeddedStack) -> dict:
    s = student_stack.settings
    return {"url": f"{s.host}:{s.triton_grpc_port}", "ssl": False}


def _lines(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 32, 64), dtype=np.float32)


def test_the_served_student_computes_the_local_networks_logits(grpc: dict, student: Path) -> None:
    server = served_student(grpc, student_digest(student))
    assert (server.version, server.max_batch, server.digest) == (1, 64, student_digest(student))
    lines = _lines(70)  # more lines than one request may carry: sent in two
    served = TritonStudentNetwork(server).logits(lines)
    local = OnnxStudentNetwork(student / core.STUDENT_FILE, threads=1).logits(lines)
    assert served.shape == local.shape == (70, 16, local.shape[2])
    np.testing.assert_allclose(served, local, rtol=1e-4, atol=1e-5)


def test_the_same_reads_whichever_runs_the_network(grpc: dict, student: Path, run_profile: LineProfile,
                                                   make_frame) -> None:
    from stream.ocr import crops as cropping

    frame, _ = make_frame(5, profile=run_profile)
    lines = [cropping.trim_to_ink(cropping.crop(frame, f.roi)) for f in run_profile.fields if f.roi is not None]
    lines = [line for line in lines if line is not None and line.size]
    assert lines
    local = Student(student, run_profile, threads=1).recognize(lines)
    served = Student(student, run_profile, network=TritonStudentNetwork(served_student(grpc, student_digest(student))))
    for a, b in zip(local, served.recognize(lines), strict=True):
        assert a.text == b.text
        np.testing.assert_allclose(a.char_confidence, b.char_confidence, atol=1e-4)


def test_a_bad_request_is_refused_alone(grpc: dict, student: Path) -> None:
    from tritonclient.grpc import InferenceServerClient, InferenceServerException, InferInput

    client = InferenceServerClient(grpc["url"])

    def infer(lines: np.ndarray):
        tensor = InferInput(core.STUDENT_INPUT, list(lines.shape), "FP32")
        tensor.set_data_from_numpy(lines)
        return client.infer(core.STUDENT_MODEL, [tensor])

    bad = _lines(2)
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(InferenceServerException, match="must be finite") as refused:
        infer(bad)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match=r"must lie in \[0, 1\]"):
        infer(_lines(1) * 255)
    assert infer(_lines(3)).as_numpy(core.STUDENT_OUTPUT).shape[0] == 3  # the model serves on
    client.close()


def test_a_worker_does_not_start_with_another_served_student(grpc: dict, student: Path, run_profile: LineProfile,
                                                              tmp_path: Path) -> None:
    other = make_student(run_profile, tmp_path / "other", threshold=0.5)
    with pytest.raises(StudentError, match=f"serves the student {student_digest(student)}, not the one this worker "
                                           f"reads with \\({student_digest(other)}\\)"):
        served_student(grpc, student_digest(other))
    # No server there: not a "serves none", which a worker without files would take as PaddleOCR only.
    with pytest.raises(StudentError, match=f"did not answer about {core.STUDENT_MODEL}") as unreached:
        served_student({"url": grpc["url"].rsplit(":", 1)[0] + ":1", "ssl": False}, None, 2.0)
    assert not isinstance(unreached.value, StudentNotServed)


def test_the_worker_sends_its_student_lines_to_triton(student_stack: EmbeddedStack, student: Path) -> None:
    repo = student_stack.settings.model_repository
    settings = load_settings(stack=student_stack.settings.model_dump(), worker={"student_inference": "triton"})
    exported = read_exported(repo)
    ocr = ocr_settings_for(settings, exported.model)
    server = student_server_for(settings, ocr, exported.model, exported.profile)
    assert server is not None and server.digest == student_digest(student) and server.version == 1
    # What each OCR process then reads with.
    ocr_stage.init_process(ocr_stage.StageConfig(exported.profile, ocr, exported.model.image_size, server),
                           in_process=True)
    assert ocr_stage.warm_up()[1].endswith(f"student={student_digest(student)}")
    assert isinstance(ocr_stage._engine.student.network, TritonStudentNetwork)  # type: ignore[union-attr]
    # Run locally (the default), or without a student, there is nothing to ask Triton for.
    here = load_settings(stack=student_stack.settings.model_dump())
    assert student_server_for(here, ocr, exported.model, exported.profile) is None
    off = load_settings(stack=student_stack.settings.model_dump(), worker={"student_inference": "triton",
                                                                           "student": "off"})
    assert student_server_for(off, ocr_settings_for(off, exported.model), exported.model, exported.profile) is None
    with pytest.raises(ConfigError, match="student_inference 'triton' needs inference 'triton'"):
        load_settings(worker={"student_inference": "triton", "inference": "local"})


def test_a_worker_with_a_student_does_not_start_beside_a_triton_that_serves_none(
        student_stack: EmbeddedStack, oanet_triton, caplog: pytest.LogCaptureFixture) -> None:
    exported = read_exported(student_stack.settings.model_repository)
    # The student's repository here, a Triton that serves a version without a student.
    settings = load_settings(stack=student_stack.settings.model_dump(), triton={"url": oanet_triton.url},
                             worker={"student_inference": "triton"})
    ocr = ocr_settings_for(settings, exported.model)
    assert ocr.recognizer is not None
    with pytest.raises(WorkerError, match=f"serves no OCR student {core.STUDENT_MODEL}"):
        student_server_for(settings, ocr, exported.model, exported.profile)
    # Without files here there is no student to insist on: PaddleOCR, and the log says why.
    remote = ocr.model_copy(update={"recognizer": None})
    with caplog.at_level(logging.INFO, logger="stream.worker"):
        assert student_server_for(settings, remote, exported.model, exported.profile) is None
    assert "Triton serves no OCR student: PaddleOCR reads every line" in caplog.text


def test_a_worker_without_the_repository_reads_with_the_served_student_and_its_calibration(
        student_stack: EmbeddedStack, student: Path, run_profile: LineProfile, make_frame, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    exported = read_exported(student_stack.settings.model_repository)
    # A remote Triton's repository: nothing of it here.
    settings = load_settings(stack={**student_stack.settings.model_dump(), "model_repository": str(tmp_path)},
                             worker={"student_inference": "triton"})
    ocr = ocr_settings_for(settings, exported.model)
    assert ocr.recognizer is None
    server = student_server_for(settings, ocr, exported.model, exported.profile)
    assert server is not None and server.digest == student_digest(student)
    engine = OcrEngine(run_profile, ocr, student_server=server)
    assert engine.student is not None and engine.student.meta == Student(student, run_profile).meta
    assert engine.version.endswith(f";student={student_digest(student)}")
    frame, _ = make_frame(4, profile=run_profile)
    assert engine.read(frame).readings == OcrEngine(run_profile, ocr.model_copy(update={"recognizer": student})
                                                    ).read(frame).readings
    # Another version served by the fusion stage: its student is not this version's.
    newer = dataclasses.replace(exported.model, version=2)
    with caplog.at_level(logging.WARNING, logger="stream.worker"):
        assert student_server_for(settings, ocr, newer, exported.profile) is None
    assert "belongs to version 1, the model server serves version 2" in caplog.text


def test_an_unanswered_call_is_read_by_paddleocr(grpc: dict, student: Path, run_profile: LineProfile, ocr_settings,
                                                 make_frame,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # Version 7 is not served: each call fails as in an outage, and the lines go to PaddleOCR.
    gone = StudentServer(grpc=grpc, version=7, digest=student_digest(student), max_batch=64, timeout_s=5.0)
    engine = OcrEngine(run_profile, ocr_settings.model_copy(update={"recognizer": student}), student_server=gone)
    frame, _ = make_frame(2, profile=run_profile)
    with caplog.at_level(logging.WARNING, logger="stream.ocr.engine"):
        record = engine.read(frame)
        engine.read(frame)
    assert {r.engine for r in record.readings if r.engine} == {ENGINE_PADDLE}
    teacher = OcrEngine(run_profile, ocr_settings).read(frame)
    assert [(r.name, r.value, r.missing) for r in record.readings] == \
        [(r.name, r.value, r.missing) for r in teacher.readings]
    warnings = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
    assert len(warnings) == 1 and f"{core.STUDENT_MODEL} version 7" in warnings[0]  # once a minute, not per frame


def test_bench_ocr_compares_the_student_here_and_on_triton(grpc: dict, student: Path, served_dataset: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "ocr", "--data", str(served_dataset), "--limit", "3", "--recognizer", str(student),
                 "--student-server", grpc["url"]]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^student is \d+\.\dx cheaper .* its network in this process \d+\.\d{3} ms per line", out,
                     re.MULTILINE), out
    assert re.search(rf"^served is \d+\.\dx cheaper .* its network served by Triton at {grpc['url']} \d+\.\d{{3}} ms "
                     "per line", out, re.MULTILINE), out
    # Without the student it serves, or with another one, nothing is measured.
    assert main(["bench", "ocr", "--data", str(served_dataset), "--student-server", grpc["url"]]) == 2
    assert "--student-server needs --recognizer DIR" in capsys.readouterr().err


def test_a_worker_verdicts_frames_with_the_served_student(student_stack: EmbeddedStack, served_dataset: Path,
                                                          grpc: dict) -> None:
    from tritonclient.grpc import InferenceServerClient

    from oanet.dataset import load_dataset
    from stream.topics import create_topics
    from tests.conftest import with_unique_topics
    from tests.stream.worker.harness import read_outputs, replay, running_worker

    settings = with_unique_topics(load_settings(
        stack=student_stack.settings.model_dump(), ocr={"fallback": False, "threads": 1},
        worker={"student_inference": "triton", "ocr_processes": 1, "metrics_port": 0, "commit_interval_s": 0.2,
                "poll_timeout_ms": 50, "startup_timeout_s": 180.0}))
    create_topics(settings.kafka, settings.topics)
    client = InferenceServerClient(grpc["url"])

    def student_calls() -> int:
        stats = client.get_inference_statistics(core.STUDENT_MODEL, as_json=True)["model_stats"]
        return sum(int(s.get("inference_stats", {}).get("success", {}).get("count", 0)) for s in stats)

    before = student_calls()
    with running_worker(settings) as worker:
        assert worker._ocr.config.student_server.version == 1  # type: ignore[union-attr]
        ids = replay(settings, load_dataset(served_dataset), 6, prefix="served-")
        out = read_outputs(settings, until=lambda o: len(o.verdicts) + len(o.dead_letters) >= 6)
    assert out.dead_letters == [] and sorted(v["frame_id"] for v in out.verdicts) == sorted(ids)
    # One call per frame from the OCR process (the verdicts went through the ensemble, not this model).
    assert student_calls() - before == 6
    client.close()
