"""The `oanet` console script's own flags."""

from __future__ import annotations

import pytest

from oanet.cli import build_parser


@pytest.mark.parametrize("argv", [
    ["-v", "topics", "create"],
    ["topics", "-v", "create"],
    ["topics", "create", "-v"],
    ["topics", "create", "--verbose"],
    ["bench", "ocr", "--data", "d", "-v"],
])
def test_verbose_is_accepted_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_without_verbose_it_stays_off():
    assert build_parser().parse_args(["topics", "create"]).verbose is False
    assert build_parser().parse_args(["config"]).verbose is False


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path):
    import subprocess
    import sys

    # `oanet config | head -1`: the pipe closes after the first line
    shell = f"'{sys.executable}' -m oanet config | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert done.stdout.startswith("OANET_")
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


HEAVY = ("numpy", "cv2", "torch", "lightgbm", "paddle", "paddleocr", "tritonclient", "kafka", "onnxruntime")


@pytest.mark.parametrize("command", [[], ["worker"], ["bench", "e2e"], ["train"]])
def test_help_answers_without_importing_a_heavy_library(command, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "oanet", *command, "--help"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and "usage: oanet" in done.stdout
    # -X importtime writes one "import time: self | cumulative | module" line per module imported
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "oanet.cli" in imported  # the listing is real
    assert not {name for name in imported if name.split(".")[0] in HEAVY}
