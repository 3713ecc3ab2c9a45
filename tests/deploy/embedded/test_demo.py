"""`oanet demo` as `make demo` runs it, on the serving tests' small dataset and model (the synthetic
dataset and the short training are `oanet synth` and `oanet train`, tested on their own): the
embedded stack on free ports, two workers, the held-out frames, the summary, and nothing left
running afterwards, also when interrupted."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import OANET

pytestmark = pytest.mark.slow

# What a demo starts: the broker, Triton and its Python-backend stubs, workers and their OCR processes.
STARTED_NAMES = ("tansu", "tritonserver", "triton_python_backend_stub")


def _started_since(before: set[int]) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if p.pid in before:
            continue
        cmdline = " ".join(p.info["cmdline"] or [])
        if p.info["name"] in STARTED_NAMES or " -m oanet worker" in cmdline or "multiprocessing.spawn" in cmdline:
            found.append(f"{p.pid} {cmdline[:120]}")
    return found


def _working_folder(stdout: str) -> Path:
    return Path(re.search(r"working folder: (\S+) \(temporary", stdout).group(1))


def test_demo_verdicts_the_held_out_frames_and_leaves_nothing_running(run_oanet, served_dataset, served_run,
                                                                       tmp_path):
    """As `make demo` runs it: the run exported with an OCR student (an untrained one here, so
    every line falls back to PaddleOCR; tests/stream/ocr cover what a trained one reads)."""
    from oanet.dataset import load_dataset
    from oanet.profile import load_profile
    from tests.serving_fixtures import make_student

    student = make_student(load_profile(served_run / "model" / "profile.yaml"), tmp_path / "student")
    held_out = len(load_dataset(served_dataset).split("test"))
    before = {p.pid for p in psutil.process_iter()}
    result = run_oanet("demo", "--data", str(served_dataset), "--run", str(served_run), "--recognizer", str(student),
                       "--workers", "2", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert f"(with the OCR student {student})" in out
    assert re.search(r"worker 0 \(pid \d+\): partitions \[\d", out) and re.search(r"worker 1 \(pid \d+\)", out)
    assert f"frames played       {held_out}" in out
    verdicts = int(re.search(r"^  verdicts +(\d+) \(pass", out, re.MULTILINE).group(1))  # the summary's
    dead = int(re.search(r"^  dead letters +(\d+)", out, re.MULTILINE).group(1))
    assert verdicts + dead == held_out and verdicts > 0
    assert "0 differing" in out and re.search(r"accuracy \d+\.\d%, recall", out)
    assert re.search(r"latency +capture-to-verdict p50 \d", out)
    for stopped in ("stopped worker 0", "stopped worker 1", "stopped triton", "stopped broker"):
        assert stopped in out
    assert not _working_folder(out).exists()
    assert _started_since(before) == []


def test_an_interrupted_demo_stops_what_it_started(served_dataset, served_repo, tmp_path):
    before = {p.pid for p in psutil.process_iter()}
    process = subprocess.Popen([*OANET, "demo", "--data", str(served_dataset), "--repo", str(served_repo),
                                "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    lines = []
    deadline = time.monotonic() + 300
    for line in process.stdout:  # Ctrl-C while the workers are up and frames are on their way
        lines.append(line)
        if line.startswith("==> replaying") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    out = "".join(lines) + stdout
    assert process.returncode == 130, out + stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "stopped worker 0" in out and "stopped triton" in out and "stopped broker" in out
    assert not _working_folder(out).exists()
    assert _started_since(before) == []


def test_demo_options_are_checked_in_one_line(run_oanet, tmp_path):
    (tmp_path / "kept" / "data").mkdir(parents=True)
    for argv, expected in [
        (["--frames", "5"], "--frames must be at least 20"),
        (["--run", "r", "--repo", "x"], "give --run or --repo, not both"),
        (["--repo", "x", "--recognizer", str(tmp_path)], "--recognizer is exported with the model"),
        (["--recognizer", str(tmp_path)], "is not an `oanet ocr distill` folder (no recognizer.json)"),
        (["--work-dir", str(tmp_path / "kept")], "already holds data of an earlier demo"),
    ]:
        result = run_oanet("demo", *argv, timeout=120)
        assert result.returncode != 0 and expected in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
