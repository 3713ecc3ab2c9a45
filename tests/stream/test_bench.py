"""`oanet bench e2e`: every figure is printed with its target, and bad options are one line.
Speed itself is not asserted: the command prints its figures (docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from oanet.cli import main
from bench.e2e.endtoend import EndToEnd
from bench.e2e.stages import OCR_PROCESSES, WORKER, cpu_seconds_by_process


@pytest.mark.slow
def test_bench_e2e_prints_stages_ratio_memory_and_latency(line_t_dataset, model_repo, capsys):
    assert main(["bench", "e2e", "--data", str(line_t_dataset.root), "--repo", str(model_repo), "--seconds", "1",
                 "--duration", "4", "--warmup", "2", "--alone", "2", "--paced", "2", "--ocr-processes", "1",
                 "--window", "4"]) == 0
    out = capsys.readouterr().out
    assert "OCR student: none in this version (PaddleOCR reads every line)" in out
    assert "PaddleOCR only" not in out and "with the OCR student" not in out
    for stage in ("consume", "decode", "ocr pool", "inference", "produce"):
        assert re.search(rf"^  {stage} +\d+\.\d frames/s", out, re.MULTILINE), (stage, out)
    assert re.search(r"^  slowest: [a-z ]+ \d+\.\d frames/s before the end-to-end run, \d+\.\d after; mean \d+\.\d$",
                     out, re.MULTILINE), out
    assert re.search(r"^end to end \(1 worker, 1 OCR process\(es\), window 4, frames waiting \d+-\d+, .*: "
                     r"\d+\.\d frames/s = \d+\.\d\d x the slowest stage alone \(target >= 0\.8: (met|missed)\)$",
                     out, re.MULTILINE), out
    assert re.search(r"^  CPU per frame: end to end \d+ ms .* end to end / slowest = \d+\.\d\d$", out, re.MULTILINE), out
    assert re.search(r"^  CPU per frame by process: worker \d+ ms, OCR processes \d+ ms, broker \d+ ms, triton \d+ ms$",
                     out, re.MULTILINE), out
    assert re.search(r"^memory .* largest deviation \d+\.\d% \(target \+-5%: (met|missed)\); second half [+-]\d+\.\d%$",
                     out, re.MULTILINE), out
    assert re.search(r"^latency produce-to-verdict: one frame alone \(2 frames\) median \d+ ms .* p99 \d+ ms = "
                     r"\d+\.\d\d x the median alone \(target <= 3: (met|missed)\)$", out, re.MULTILINE), out
    assert "exited with code" not in out


@pytest.mark.slow
def test_bench_e2e_compares_the_worker_with_and_without_its_ocr_student(line_t_dataset, line_t_profile, model_repo,
                                                                        tmp_path, capsys):
    from tests.serving_fixtures import make_student

    # The model_repo's run again, with an (untrained) student of its line: every line falls back,
    # which is enough to pin the comparison's report, not its speed.
    repo = tmp_path / "repo"
    student = make_student(line_t_profile, tmp_path / "student")
    assert main(["export", "--run", str(model_repo.parent / "run"), "--repo", str(repo),
                 "--recognizer", str(student)]) == 0
    assert main(["bench", "e2e", "--data", str(line_t_dataset.root), "--repo", str(repo), "--seconds", "1",
                 "--duration", "4", "--warmup", "2", "--alone", "2", "--paced", "2", "--ocr-processes", "1",
                 "--window", "4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^OCR student: .*oanet_fusion/1/recognizer \(exported with the version", out, re.MULTILINE), out
    assert re.search(r"^  ocr pool, PaddleOCR only +\d+\.\d frames/s", out, re.MULTILINE), out
    assert re.search(r"^frames/s per worker with the OCR student \d+\.\d \(\d+ ms CPU per frame\), without it "
                     r"\d+\.\d .*: \d+\.\d\dx$", out, re.MULTILINE), out
    assert re.search(r"^  without the student, CPU per frame by process: worker \d+ ms, OCR processes \d+ ms, ",
                     out, re.MULTILINE), out
    assert "exited with code" not in out


def test_memory_figures_are_relative_to_the_first_tenth(tmp_path):
    e2e = EndToEnd(rss=[(float(t), (100 + (5 if t == 19 else 0)) * 2**20) for t in range(20)], backlog=[3] * 20)
    baseline, low, high, last, deviation = e2e.memory()
    assert (baseline, low, high, last) == (100, 100, 105, 105) and deviation == pytest.approx(5.0)
    assert e2e.second_half_growth() == pytest.approx(5.0)
    e2e.write_samples(tmp_path / "rss.csv")
    lines = (tmp_path / "rss.csv").read_text().splitlines()
    assert lines[0] == "seconds,rss_bytes,backlog" and lines[-1] == f"19.0,{105 * 2**20},3" and len(lines) == 21


def test_cpu_by_process_splits_the_worker_from_the_processes_it_started():
    # A real child that burns about 0.3 s of CPU and then waits: its time is the OCR processes'
    # share, not the worker's, and a service is counted with its own family.
    burn = ("import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "print(1, flush=True)\nsys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"1"
        seconds = cpu_seconds_by_process(os.getpid(), {"service": child.pid})
    finally:
        child.kill()
        child.wait()
    assert set(seconds) == {WORKER, OCR_PROCESSES, "service"}
    assert seconds[OCR_PROCESSES] >= 0.25 and seconds["service"] >= 0.25
    # Tighter than the child's 0.3 s: a worker figure that took in its children would fail.
    assert seconds[WORKER] == pytest.approx(sum(os.times()[:2]), abs=0.1)
    e2e = EndToEnd(verdicts=10, cpu_by_process={WORKER: 0.1, OCR_PROCESSES: 0.5})
    assert e2e.cpu_ms_per_frame == pytest.approx(60.0)
    assert e2e.cpu_ms_per_frame_by_process() == pytest.approx({WORKER: 10.0, OCR_PROCESSES: 50.0})


@pytest.mark.parametrize(("args", "message"), [(["--duration", "0"], "--duration must be positive"),
                                                (["--window", "0"], "--window must be at least 1")])
def test_bad_options_give_one_line_errors(line_t_dataset, model_repo, capsys, args, message):
    assert main(["bench", "e2e", "--data", str(line_t_dataset.root), "--repo", str(model_repo), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
