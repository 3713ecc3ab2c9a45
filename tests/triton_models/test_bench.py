"""`oanet bench triton`: the table and the on/off ratio in one run, and one-line errors.
Speed itself is not asserted: the command prints its figures (docs/benchmarks.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from oanet.cli import main
from bench.triton import repository as bench
from triton_models.oanet_fusion import core, serving


@pytest.mark.slow
def test_bench_prints_a_row_per_mode_and_concurrency_and_the_ratios(served_repo: Path, capsys):
    assert main(["bench", "triton", "--repo", str(served_repo), "--concurrency", "1,3", "--batching", "both",
                 "--seconds", "0.5", "--warmup", "0.2"]) == 0
    out = capsys.readouterr().out
    for mode in ("batching on", "batching off", "in-process"):
        for concurrency in (1, 3):
            assert re.search(rf"^{mode} +{concurrency} +\d+\.\d +\d+\.\d\d +\d+\.\d\d +\d+\.\d\d +\d+ +\d+\.\d$",
                             out, re.MULTILINE), (mode, concurrency, out)
    assert re.search(r"^batching off +3 .* 1\.0$", out, re.MULTILINE)  # without dynamic batching: one frame a run
    assert re.search(r"^dynamic batching on/off at concurrency +3: throughput x\d+\.\d\d \(p95 ", out, re.MULTILINE)
    assert re.search(r"^Triton \(batching on\) / in-process at +3 frames: \d+\.\d\d of", out, re.MULTILINE)


def test_unbatched_copy_removes_dynamic_batching_only(served_repo: Path, tmp_path: Path):
    copy = bench.unbatched_copy(served_repo, 1, tmp_path / "off")
    for model in serving.MODELS:
        config = text_format.Parse((copy / model / "config.pbtxt").read_text(), mc.ModelConfig())
        original = text_format.Parse((served_repo / model / "config.pbtxt").read_text(), mc.ModelConfig())
        assert not config.HasField("dynamic_batching")
        original.ClearField("dynamic_batching")
        assert config == original
    assert serving.repository_problems(copy, core.FUSION_MODEL, 1) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0,4"], "--concurrency needs integers of at least 1"),
        (["--concurrency", "four"], "--concurrency must be comma-separated integers"),
        (["--seconds", "0"], "--seconds must be positive"),
    ],
)
def test_bad_options_give_one_line_errors(served_repo: Path, capsys, args, message):
    assert main(["bench", "triton", "--repo", str(served_repo), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_unservable_repositories_give_one_line_errors(repo_copy: Path, tmp_path: Path, capsys):
    assert main(["bench", "triton", "--repo", str(tmp_path / "nowhere")]) == 2
    assert "model repository not found" in capsys.readouterr().err
    (repo_copy / "oanet_fusion/1/fusion.json").write_text("{}")
    assert main(["bench", "triton", "--repo", str(repo_copy)]) == 2
    assert "sha256 mismatch: oanet_fusion/1/fusion.json" in capsys.readouterr().err


def test_a_libtorch_export_is_refused_by_the_embedded_bench(served_run: Path, tmp_path: Path, capsys):
    from training.export import ServingOptions, export_run

    export_run(served_run, tmp_path / "repo", options=ServingOptions(cnn_backend="libtorch"))
    assert main(["bench", "triton", "--repo", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err
    assert "exported for backend 'pytorch'" in err and "--cnn-backend python" in err
